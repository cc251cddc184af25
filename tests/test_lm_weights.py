"""Weight-space operations on parameter pytrees: average, EMA, interpolation."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agents.lm import weights


def _tree(value):
    return {"a": jnp.full((2, 3), value), "b": {"c": jnp.arange(4.0) * value}}


def test_average_is_the_weighted_mean_of_every_leaf():
    trees = [_tree(1.0), _tree(3.0), _tree(8.0)]
    mean = weights.average(trees)
    np.testing.assert_allclose(np.asarray(mean["a"]), 4.0)
    np.testing.assert_allclose(np.asarray(mean["b"]["c"]), np.arange(4.0) * 4.0, rtol=1e-6)
    weighted = weights.average(trees[:2], weights=[3.0, 1.0])
    np.testing.assert_allclose(np.asarray(weighted["a"]), 1.5)
    with pytest.raises(ValueError, match="weights must have shape"):
        weights.average(trees, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="another structure"):
        weights.average([_tree(1.0), {"a": jnp.zeros((2, 3))}])


def test_ema_is_optax_incremental_update():
    new, old = _tree(2.0), _tree(-1.0)
    ours = weights.ema(new, old, 0.25)
    theirs = optax.incremental_update(new, old, 0.25)
    np.testing.assert_allclose(np.asarray(ours["b"]["c"]), np.asarray(theirs["b"]["c"]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ours["a"]), 2.0 * 0.25 - 0.75)


def test_interpolation_hits_both_ends_exactly():
    start, end = _tree(0.1), _tree(0.7)
    for fraction, expected in ((0.0, start), (1.0, end)):
        got = weights.interpolate(start, end, fraction)
        np.testing.assert_array_equal(np.asarray(got["b"]["c"]), np.asarray(expected["b"]["c"]))
    np.testing.assert_allclose(np.asarray(weights.interpolate(start, end, 0.5)["a"]), 0.4, rtol=1e-6)


# --------------------------------------------------------------------------- WARP: SLERP, LITI, EMA anchor


def _mergekit_slerp(t, v0, v1, dot_threshold=0.9995, eps=1e-8):
    """An independent NumPy transcription of mergekit's ``slerp`` (arcee-ai/mergekit,
    merge_methods/slerp.py): float arrays, normalised copies for the angle, lerp when nearly
    parallel, the originals weighted by sin((1 - t) theta) / sin theta and sin(t theta) / sin theta."""
    v0_copy, v1_copy = np.array(v0, dtype=np.float64), np.array(v1, dtype=np.float64)

    def normalise(v):
        norm = np.linalg.norm(v)
        return v / norm if norm > eps else v

    dot = np.sum(normalise(v0_copy) * normalise(v1_copy))
    if np.abs(dot) > dot_threshold:
        return (1 - t) * v0_copy + t * v1_copy
    theta_0 = np.arccos(dot)
    theta_t = theta_0 * t
    s0 = np.sin(theta_0 - theta_t) / np.sin(theta_0)
    s1 = np.sin(theta_t) / np.sin(theta_0)
    return s0 * v0_copy + s1 * v1_copy


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp_equals_mergekit_per_tensor(t):
    rng = np.random.default_rng(int(t * 10))
    a = {"w": rng.normal(size=(4, 5)), "b": rng.normal(size=(5,)), "near": rng.normal(size=(6,))}
    b = {"w": rng.normal(size=(4, 5)), "b": -a["b"] + 0.1 * rng.normal(size=(5,)), "near": 2.0 * a["near"] + 1e-4}
    tree_a = {k: jnp.asarray(v, jnp.float32) for k, v in a.items()}
    tree_b = {k: jnp.asarray(v, jnp.float32) for k, v in b.items()}
    merged = weights.slerp(t, tree_a, tree_b)
    for name in a:  # "near" is parallel: the lerp fallback
        expected = _mergekit_slerp(t, np.asarray(tree_a[name]), np.asarray(tree_b[name]))
        np.testing.assert_allclose(np.asarray(merged[name]), expected, atol=1e-6, rtol=1e-6)
    if t == 0.0:
        np.testing.assert_allclose(np.asarray(merged["w"]), a["w"], atol=1e-6)
    if t == 1.0:
        np.testing.assert_allclose(np.asarray(merged["w"]), b["w"], atol=1e-6)


def test_slerp_preserves_equal_norms_and_is_lerp_for_parallel_vectors():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=16), rng.normal(size=16)
    u, v = 3.0 * u / np.linalg.norm(u), 3.0 * v / np.linalg.norm(v)
    for t in np.linspace(0, 1, 7):
        got = np.asarray(weights.slerp_tensor(t, jnp.asarray(u), jnp.asarray(v)))
        np.testing.assert_allclose(np.linalg.norm(got), 3.0, rtol=1e-5)
        lerp = (1 - t) * u + t * v
        if 0 < t < 1:
            assert np.linalg.norm(lerp) < 3.0 - 1e-3  # lerp shrinks, slerp does not
    parallel = 2.5 * u
    for t in (0.0, 0.25, 0.9):
        got = np.asarray(weights.slerp_tensor(t, jnp.asarray(u), jnp.asarray(parallel)))
        np.testing.assert_allclose(got, (1 - t) * u + t * parallel, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        weights.slerp_tensor(0.5, jnp.zeros(3), jnp.zeros(4))


def test_slerp_merge_adds_the_merged_task_vector_to_the_init():
    init, one, two = _tree(1.0), _tree(2.0), _tree(-0.5)
    merged = weights.slerp_merge(init, [one, two])
    deltas = weights.task_vector(one, init), weights.task_vector(two, init)
    expected = weights.add_task_vector(init, weights.slerp(0.5, *deltas))
    np.testing.assert_allclose(np.asarray(merged["b"]["c"]), np.asarray(expected["b"]["c"]), rtol=1e-6)
    # three parallel task vectors: the uniform average
    three = weights.slerp_merge(init, [_tree(2.0), _tree(3.0), _tree(4.0)])
    np.testing.assert_allclose(np.asarray(three["a"]), 3.0, rtol=1e-5)
    with pytest.raises(ValueError, match="at least two"):
        weights.slerp_merge(init, [one])


def test_liti_walks_from_the_init_to_the_merged_model():
    init, merged = _tree(1.0), _tree(3.0)
    for eta, value in ((0.0, 1.0), (0.3, 1.6), (1.0, 3.0)):
        np.testing.assert_allclose(np.asarray(weights.liti(init, merged, eta)["a"]), value, rtol=1e-6)


def test_ema_anchor_mu_one_is_the_online_policy_and_mu_zero_the_fixed_reference():
    from agents.lm import warp

    params, sft = _tree(2.0), _tree(-1.0)
    extra = {"reference": sft, "reward": None}
    online = warp.ema_anchor_update(extra, params, {"mu": 1.0})
    fixed = warp.ema_anchor_update(extra, params, {"mu": 0.0})
    np.testing.assert_array_equal(np.asarray(online["reference"]["a"]), np.asarray(params["a"]))
    np.testing.assert_array_equal(np.asarray(fixed["reference"]["a"]), np.asarray(sft["a"]))
    mid = warp.ema_anchor_update(extra, params, {"mu": 0.01})
    np.testing.assert_allclose(np.asarray(mid["reference"]["a"]), 0.01 * 2.0 + 0.99 * -1.0, rtol=1e-6)
