"""Fenchel-Young f-losses: cross-entropy and sparsemax as special cases, sign, zero set, gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mdvi.divergences import get_divergence
from mdvi.f_divergences import KullbackLeibler
from mdvi.fenchel_young import fenchel_young_loss

FINITE_ON_LABELS = ["kl", "chi2", "js", "hellinger", "alpha:1.5", "alpha:2", "alpha:0.5", "jsd:0.1", "jsd:0.9"]
INFINITE_ON_LABELS = ["reverse_kl", "jeffreys"]
SPARSE = {"chi2", "alpha:1.5", "alpha:2"}  # f(0) = +inf: a one-hot target has infinite divergence


def _logits(key, shape, scale=3.0, dtype=jnp.float32):
    return (jax.random.normal(key, shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_with_uniform_or_unit_reference_is_cross_entropy(dtype):
    with jax.enable_x64(dtype == np.float64):
        logits = _logits(jax.random.PRNGKey(0), (4, 6, 50), scale=5.0, dtype=dtype)
        labels = jax.random.randint(jax.random.PRNGKey(1), (4, 6), 0, 50)
        expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        uniform = jnp.full(logits.shape, -np.log(50.0), dtype)
        for log_ref in (None, uniform):
            loss = fenchel_young_loss(logits, labels, "kl", log_ref=log_ref)
            assert loss.dtype == dtype
            np.testing.assert_allclose(loss, expected, rtol=1e-6, atol=1e-6)
        soft_targets = jax.nn.softmax(_logits(jax.random.PRNGKey(2), logits.shape, dtype=dtype))
        np.testing.assert_allclose(
            fenchel_young_loss(logits, soft_targets, "kl", log_ref=uniform),
            optax.softmax_cross_entropy(logits, soft_targets) + jnp.sum(soft_targets * jnp.log(soft_targets), -1),
            rtol=1e-6,
            atol=1e-6,
        )


def test_alpha_two_is_the_sparsemax_loss():
    logits = _logits(jax.random.PRNGKey(3), (64, 10))
    labels = jax.random.randint(jax.random.PRNGKey(4), (64,), 0, 10)
    np.testing.assert_allclose(
        fenchel_young_loss(logits, labels, "alpha:2"),
        optax.losses.multiclass_sparsemax_loss(logits, labels),
        rtol=1e-6,
        atol=1e-6,
    )
    # optax.losses.sparsemax_loss is the binary case: sparse_sigmoid(z) is the sparsemax of (z, 0).
    scores = _logits(jax.random.PRNGKey(5), (200,))
    binary = jax.random.randint(jax.random.PRNGKey(6), (200,), 0, 2)
    two_class = jnp.stack([scores, jnp.zeros_like(scores)], -1)
    np.testing.assert_allclose(
        fenchel_young_loss(two_class, 1 - binary, "alpha:2"), optax.losses.sparsemax_loss(scores, binary), rtol=1e-6, atol=1e-6
    )


def test_alpha_one_and_a_half_is_the_entmax_loss(x64):
    # Independent form: Omega(p) = (sum p^1.5 - 1) / 0.75 (Tsallis), L = Omega*(z) + Omega(y) - <z, y>.
    logits = _logits(jax.random.PRNGKey(7), (20, 9), dtype=jnp.float64)
    labels = jax.random.randint(jax.random.PRNGKey(8), (20,), 0, 9)
    p = jnp.exp(get_divergence("alpha:1.5").greedy_log_policy(logits, 1.0, jnp.zeros_like(logits)))
    y = jax.nn.one_hot(labels, 9, dtype=jnp.float64)

    def tsallis(q):
        return (jnp.sum(q**1.5, -1) - 1.0) / 0.75

    expected = jnp.sum(p * logits, -1) - tsallis(p) + tsallis(y) - jnp.sum(logits * y, -1)
    np.testing.assert_allclose(fenchel_young_loss(logits, labels, "alpha:1.5"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", FINITE_ON_LABELS + INFINITE_ON_LABELS)
def test_loss_is_nonnegative_and_zero_exactly_at_the_softargmax(name):
    logits = _logits(jax.random.PRNGKey(9), (32, 12))
    log_ref = jnp.log(jax.random.uniform(jax.random.PRNGKey(10), logits.shape, minval=0.1))
    labels = jax.random.randint(jax.random.PRNGKey(11), (32,), 0, 12)
    targets = jax.random.dirichlet(jax.random.PRNGKey(12), jnp.ones(12), (32,))
    for temperature in (1.0, 0.3):
        on_labels = np.asarray(fenchel_young_loss(logits, labels, name, log_ref=log_ref, temperature=temperature))
        p = jnp.exp(get_divergence(name).greedy_log_policy(logits, temperature, log_ref))
        if name in INFINITE_ON_LABELS:
            assert np.all(np.isposinf(on_labels))
        else:
            # zero exactly where the (sparse) f-softargmax is already the one-hot label, positive elsewhere
            saturated = np.all(np.asarray(p) == np.asarray(jax.nn.one_hot(labels, 12)), -1)
            assert np.all(on_labels[saturated] == 0) and np.all(on_labels[~saturated] > 0)
        if name in SPARSE:  # confident logits: the sparse output is the one-hot argmax, and the loss is exactly 0
            sharp = 20 * logits
            top = jnp.argmax(sharp, -1)
            assert np.any(np.asarray(fenchel_young_loss(sharp, top, name, log_ref=log_ref, temperature=temperature)) == 0)
        on_targets = np.asarray(fenchel_young_loss(logits, targets, name, log_ref=log_ref, temperature=temperature))
        assert np.all(on_targets > 0) and np.all(np.isfinite(on_targets))
        at_solution = fenchel_young_loss(logits, p, name, log_ref=log_ref, temperature=temperature)
        np.testing.assert_array_equal(at_solution, 0.0)


@pytest.mark.parametrize("name", FINITE_ON_LABELS)
def test_gradient_is_softargmax_minus_target(name):
    logits = _logits(jax.random.PRNGKey(13), (3, 5, 11))
    labels = jax.random.randint(jax.random.PRNGKey(14), (3, 5), 0, 11)
    mask = jnp.ones((3, 5)).at[1, 2:].set(0.0)
    grad = jax.grad(lambda z: jnp.sum(fenchel_young_loss(z, labels, name, mask=mask)))(logits)
    p = jnp.exp(get_divergence(name).greedy_log_policy(logits, 1.0, jnp.zeros_like(logits)))
    expected = (p - jax.nn.one_hot(labels, 11)) * mask[..., None]
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["kl", "alpha:1.5", "chi2", "reverse_kl", "jsd:0.3", "jeffreys"])
def test_all_derivatives_match_finite_differences(x64, name):
    logits = _logits(jax.random.PRNGKey(15), (4, 7), dtype=jnp.float64)
    log_ref = jnp.log(jax.random.uniform(jax.random.PRNGKey(16), logits.shape, minval=0.1, dtype=jnp.float64))
    targets = jax.random.dirichlet(jax.random.PRNGKey(17), jnp.full(7, 5.0, jnp.float64), (4,))  # away from 0
    temperature = jnp.asarray([0.5, 1.0, 2.0, 0.7])
    weights = jnp.arange(1.0, 5.0)

    def objective(z, y, t, lr):
        return jnp.sum(weights * fenchel_young_loss(z, y, name, log_ref=lr, temperature=t))

    args = (logits, targets, temperature, log_ref)
    grads = jax.grad(objective, argnums=(0, 1, 2, 3))(*args)
    key = jax.random.PRNGKey(18)
    for index, (arg, grad) in enumerate(zip(args, grads)):
        key, sub = jax.random.split(key)
        direction = jax.random.normal(sub, arg.shape, arg.dtype)
        if index == 1:  # stay on the simplex
            direction = direction - direction.mean(-1, keepdims=True)
        h = 1e-6
        plus, minus = list(args), list(args)
        plus[index], minus[index] = arg + h * direction, arg - h * direction
        measured = float((objective(*plus) - objective(*minus)) / (2 * h))
        assert float(jnp.sum(grad * direction)) == pytest.approx(measured, rel=1e-5, abs=1e-7), index


def test_mask_zeroes_padding_and_rejects_bad_shapes():
    logits = _logits(jax.random.PRNGKey(19), (2, 4, 5))
    labels = jnp.zeros((2, 4), jnp.int32)
    mask = jnp.asarray([[1, 1, 0, 0], [1, 0, 0, 0]])
    bad = logits.at[0, 3].set(jnp.nan)  # garbage on a padded position does not leak
    loss = fenchel_young_loss(bad, labels, "alpha:1.5", mask=mask)
    assert np.all(np.asarray(loss)[np.asarray(mask) == 0] == 0) and np.all(np.isfinite(loss))
    assert np.all(np.asarray(loss)[np.asarray(mask) == 1] > 0)
    with pytest.raises(AssertionError):
        fenchel_young_loss(logits, labels[:, :3], "kl")
    with pytest.raises(ValueError, match="logits must be floating"):
        fenchel_young_loss(jnp.ones((2, 3), jnp.int32), jnp.zeros((2,), jnp.int32))
    with pytest.raises(ValueError, match="unknown divergence"):
        fenchel_young_loss(logits, labels, "nope")


def test_target_outside_the_reference_support_is_infinite():
    logits = jnp.zeros((1, 3))
    log_ref = jnp.asarray([[0.0, 0.0, -jnp.inf]])
    assert np.isposinf(fenchel_young_loss(logits, jnp.asarray([2]), "alpha:1.5", log_ref=log_ref)[0])
    assert np.isfinite(fenchel_young_loss(logits, jnp.asarray([1]), "alpha:1.5", log_ref=log_ref)[0])


def test_kl_through_bisection_gives_the_same_loss():
    logits = _logits(jax.random.PRNGKey(20), (16, 9))
    labels = jax.random.randint(jax.random.PRNGKey(21), (16,), 0, 9)
    np.testing.assert_allclose(
        fenchel_young_loss(logits, labels, KullbackLeibler(solver="bisection")),
        fenchel_young_loss(logits, labels, "kl"),
        rtol=1e-5,
    )
