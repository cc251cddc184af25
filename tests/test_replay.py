"""The device-resident ring buffer: wrap-around, filled-part sampling, uniformity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents.replay import replay_add, replay_init, replay_sample


def _fill(n, capacity=5):
    state = replay_init(capacity, (2,))
    for i in range(n):
        obs = jnp.full((2,), i % 256)
        state = replay_add(state, obs, jnp.array(i), jnp.array(float(i)), obs + 1, jnp.array(i % 3 == 0))
    return state


def test_ring_buffer_wraps_and_keeps_the_newest():
    state = _fill(7)
    assert int(state.size) == 5 and int(state.position) == 2
    np.testing.assert_array_equal(np.asarray(state.action), [5, 6, 2, 3, 4])
    np.testing.assert_array_equal(np.asarray(state.next_obs[:, 0]), [6, 7, 3, 4, 5])
    assert state.obs.dtype == jnp.uint8


def test_samples_come_only_from_filled_slots_and_are_uniform():
    state = _fill(3, capacity=10)
    batch = replay_sample(state, jax.random.key(0), 6000)
    actions = np.asarray(batch.action)
    assert set(np.unique(actions)) == {0, 1, 2}
    counts = np.bincount(actions, minlength=3)
    expected = 6000 / 3
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 13.8  # 0.999 quantile of chi-square with 2 degrees of freedom
    # fields stay aligned
    np.testing.assert_array_equal(np.asarray(batch.reward), actions.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(batch.obs[:, 0]), actions)
    np.testing.assert_array_equal(np.asarray(batch.terminated), actions % 3 == 0)
    assert batch.obs.dtype == jnp.uint8  # storage dtype; the agent converts


def test_add_works_inside_jit_and_scan():
    state = replay_init(4, (3,))

    def body(state, i):
        obs = jnp.full((3,), i)
        return replay_add(state, obs, i, i.astype(jnp.float32), obs, i == 2), None

    state, _ = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(6)))(state)
    np.testing.assert_array_equal(np.asarray(state.action), [4, 5, 2, 3])


def test_bad_capacity():
    with pytest.raises(ValueError, match="capacity"):
        replay_init(0, (2,))
