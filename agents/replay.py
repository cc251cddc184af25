"""A uniform replay buffer that lives on the device: a ring of fixed-size arrays.

Pure functions over a :class:`ReplayState`; one ``add`` writes one transition in place (XLA
updates the carried arrays without copying inside ``lax.scan``), ``sample`` draws indices
uniformly from the filled part. Observations are stored as ``uint8`` (MinAtar frames are
binary), four times smaller than float32.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class ReplayState(NamedTuple):
    obs: jax.Array  # [N, *obs_shape] uint8
    next_obs: jax.Array  # [N, *obs_shape] uint8: the frame the transition reached (pre-reset)
    action: jax.Array  # [N] int32
    reward: jax.Array  # [N] float32
    terminated: jax.Array  # [N] bool: a real game over (no bootstrap)
    position: jax.Array  # next slot to write
    size: jax.Array  # filled slots (<= N)

    @property
    def capacity(self) -> int:
        return self.action.shape[0]


class Batch(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    terminated: jax.Array


def replay_init(capacity: int, obs_shape: tuple[int, ...], obs_dtype=jnp.uint8) -> ReplayState:
    if capacity < 1:
        raise ValueError(f"replay capacity must be >= 1, got {capacity}")
    return ReplayState(
        obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        next_obs=jnp.zeros((capacity, *obs_shape), obs_dtype),
        action=jnp.zeros((capacity,), jnp.int32),
        reward=jnp.zeros((capacity,), jnp.float32),
        terminated=jnp.zeros((capacity,), bool),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def replay_add(
    state: ReplayState, obs: jax.Array, action: jax.Array, reward: jax.Array, next_obs: jax.Array, terminated: jax.Array
) -> ReplayState:
    """Write one transition at ``position`` (overwriting the oldest once full)."""
    chex.assert_equal_shape([obs, next_obs])
    i = state.position
    write = lambda buffer, value: jax.lax.dynamic_update_index_in_dim(buffer, value.astype(buffer.dtype), i, 0)  # noqa: E731
    return ReplayState(
        obs=write(state.obs, obs),
        next_obs=write(state.next_obs, next_obs),
        action=write(state.action, jnp.asarray(action)),
        reward=write(state.reward, jnp.asarray(reward)),
        terminated=write(state.terminated, jnp.asarray(terminated)),
        position=(i + 1) % state.capacity,
        size=jnp.minimum(state.size + 1, state.capacity),
    )


def replay_sample(state: ReplayState, key: jax.Array, batch_size: int) -> Batch:
    """``batch_size`` transitions drawn uniformly with replacement from the filled slots.

    Observations come back in the storage dtype (``uint8``); convert where they are used.
    """
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return Batch(
        obs=state.obs[idx],
        action=state.action[idx],
        reward=state.reward[idx],
        next_obs=state.next_obs[idx],
        terminated=state.terminated[idx],
    )
