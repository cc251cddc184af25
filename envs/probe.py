"""Probe environments: tiny episodic MDPs whose optimal values are known exactly.

In the spirit of rejax's probe environments: if an agent cannot learn these values, the bug is
in the agent, not in the difficulty of the task. The interface matches :mod:`envs.minatar`
(``reset(key)``, ``step(key, state, action) -> StepResult``, ``num_actions``, ``obs_shape``), so
the same agent code runs on both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.minatar import StepResult


class ProbeState(NamedTuple):
    position: jax.Array  # 0 = first state, 1 = second state
    episode_return: jax.Array
    episode_length: jax.Array
    last_action: jax.Array


class TwoStepProbe:
    """Two states, two actions, deterministic, episodes of two steps.

    ``s0 --a--> s1 --a--> end``. Rewards ``r0 = (0, 0.5)`` at ``s0`` and ``r1 = (1, 0)`` at
    ``s1``; observations are one-hot vectors of the state. Under discount ``gamma``:
    ``Q*(s1) = (1, 0)`` and ``Q*(s0) = (gamma, 0.5 + gamma)``: learning them needs action
    dependence, bootstrapping through a non-terminal step and stopping at the terminal one.
    """

    num_actions = 2
    obs_shape = (2,)
    rewards = np.array([[0.0, 0.5], [1.0, 0.0]], dtype=np.float32)

    def _obs(self, position):
        return jax.nn.one_hot(position, 2, dtype=jnp.float32)

    def reset(self, key):
        del key
        zero = jnp.zeros((), jnp.int32)
        return self._obs(zero), ProbeState(zero, jnp.zeros(()), zero, zero)

    def step(self, key, state: ProbeState, action) -> StepResult:
        del key
        action = jnp.asarray(action, jnp.int32)
        reward = jnp.asarray(self.rewards)[state.position, action]
        terminated = state.position == 1
        next_position = jnp.where(terminated, 0, state.position + 1)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        final_obs = self._obs(jnp.minimum(state.position + 1, 1))
        next_state = ProbeState(
            position=next_position,
            episode_return=jnp.where(terminated, 0.0, episode_return),
            episode_length=jnp.where(terminated, 0, episode_length),
            last_action=action,
        )
        return StepResult(
            obs=self._obs(next_position),
            state=next_state,
            reward=reward,
            terminated=terminated,
            truncated=jnp.zeros((), bool),
            final_obs=final_obs,
            episode_return=episode_return,
            episode_length=episode_length,
        )

    def transitions(self):
        """Tabular view for exact solutions: ``(rewards[S, A], next_state[S, A], terminal[S, A])``."""
        next_state = np.array([[1, 1], [0, 0]])
        terminal = np.array([[False, False], [True, True]])
        return self.rewards.astype(np.float64), next_state, terminal
