"""Probe environments: tiny episodic MDPs whose optimal values are known exactly.

In the spirit of rejax's probe environments: if an agent cannot learn these values, the bug is
in the agent, not in the difficulty of the task. They implement :class:`envs.base.Environment`
like MinAtar, so the same agent code runs on both.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from envs.base import Environment


class ProbeParams(NamedTuple):
    rewards: jax.Array  # [2 states, 2 actions]


class TwoStepProbe(Environment):
    """Two states, two actions, deterministic, episodes of two steps.

    ``s0 --a--> s1 --a--> end``. Rewards ``r0 = (0, 0.5)`` at ``s0`` and ``r1 = (1, 0)`` at
    ``s1``; observations are one-hot vectors of the state. Under discount ``gamma``:
    ``Q*(s1) = (1, 0)`` and ``Q*(s0) = (gamma, 0.5 + gamma)``: learning them needs action
    dependence, bootstrapping through a non-terminal step and stopping at the terminal one.
    The state is the position (0 or 1).
    """

    num_actions = 2
    obs_shape = (2,)
    rewards = np.array([[0.0, 0.5], [1.0, 0.0]], dtype=np.float32)

    @property
    def default_params(self) -> ProbeParams:
        return ProbeParams(jnp.asarray(self.rewards))

    def max_episode_steps(self, params) -> int:
        return 2

    def _obs(self, position):
        return jax.nn.one_hot(position, 2, dtype=jnp.float32)

    def reset_env(self, key, params):
        del key
        position = jnp.zeros((), jnp.int32)
        return self._obs(position), position

    def step_env(self, key, position, action, params):
        del key
        reward = params.rewards[position, jnp.asarray(action, jnp.int32)]
        terminated = position == 1
        reached = jnp.minimum(position + 1, 1)  # the end of the episode shows s1's frame
        return self._obs(reached), reached, reward, terminated, jnp.zeros((), bool)

    def transitions(self):
        """Tabular view for exact solutions: ``(rewards[S, A], next_state[S, A], terminal[S, A])``."""
        next_state = np.array([[1, 1], [0, 0]])
        terminal = np.array([[False, False], [True, True]])
        return self.rewards.astype(np.float64), next_state, terminal
