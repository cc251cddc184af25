"""The environment interface shared by MinAtar and the probe MDPs, in the style of gymnax's base class.

An environment is a set of pure functions over explicit state; its parameters are a pytree
passed to every call (``default_params`` when omitted), so they may be traced or vmapped.
A concrete environment implements only one transition and one reset:

* ``reset_env(key, params) -> (obs, state)``;
* ``step_env(key, state, action, params) -> (obs, state, reward, terminated, truncated)``;

and :class:`Environment` owns everything around them: the split of a step's key between the
transition and a possible reset, the automatic reset when an episode ends (terminated or
truncated), the frame the transition reached (``final_obs``, kept for bootstrapping through a
truncation) and the running episode return and length. :class:`Wrapper` changes an
environment from outside (e.g. :class:`envs.minatar.StickyActions`) without touching its reset.

Rule for learners: bootstrap on ``terminated`` only, never on ``truncated``.
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

State = TypeVar("State")
Params = TypeVar("Params")


class EpisodeState(NamedTuple):
    """An environment's own state plus the statistics of the episode under way."""

    env_state: Any
    episode_return: jax.Array  # float32, reset to 0 when an episode ends
    episode_length: jax.Array  # int32, reset to 0 when an episode ends


class StepResult(NamedTuple):
    """What :meth:`Environment.step` returns."""

    obs: jax.Array  # next observation (after an automatic reset when the episode ended)
    state: Any  # next state (an :class:`EpisodeState`, or a wrapper's state around one)
    reward: jax.Array
    terminated: jax.Array  # a real end of the episode: do not bootstrap
    truncated: jax.Array  # an episode cap: bootstrap from final_obs
    final_obs: jax.Array  # the observation the transition reached (before any reset)
    episode_return: jax.Array  # return of the episode so far, including this step (valid when done)
    episode_length: jax.Array


class Environment(Generic[State, Params]):
    """Base class: subclasses define ``num_actions``, ``obs_shape``, ``default_params``,
    ``reset_env`` and ``step_env``; :meth:`reset` and :meth:`step` are the public interface."""

    num_actions: int
    obs_shape: tuple[int, ...]

    @property
    def default_params(self) -> Params:
        raise NotImplementedError(f"{type(self).__name__} must define default_params (an abstract interface method)")

    def reset_env(self, key: jax.Array, params: Params) -> tuple[jax.Array, State]:
        raise NotImplementedError(f"{type(self).__name__} must implement reset_env (an abstract interface method)")

    def step_env(
        self, key: jax.Array, state: State, action: jax.Array, params: Params
    ) -> tuple[jax.Array, State, jax.Array, jax.Array, jax.Array]:
        raise NotImplementedError(f"{type(self).__name__} must implement step_env (an abstract interface method)")

    def max_episode_steps(self, params: Params) -> int:
        """An upper bound on an episode's length (evaluation loops stop there)."""
        raise NotImplementedError(f"{type(self).__name__} must implement max_episode_steps (an abstract interface method)")

    def reset(self, key: jax.Array, params: Params | None = None) -> tuple[jax.Array, EpisodeState]:
        params = self.default_params if params is None else params
        obs, state = self.reset_env(key, params)
        return obs, EpisodeState(state, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))

    def step(
        self, key: jax.Array, state: EpisodeState, action: jax.Array, params: Params | None = None
    ) -> StepResult:
        """One transition; when it ends the episode, the returned ``obs`` and state are a fresh reset.

        The key is split as gymnax 1.0 does (transition key, reset key), so an environment
        built on a gymnax game draws the same random numbers as ``gymnax``'s own ``step``.
        """
        params = self.default_params if params is None else params
        step_key, reset_key = jax.random.split(key)
        obs, env_state, reward, terminated, truncated = self.step_env(step_key, state.env_state, action, params)
        done = terminated | truncated
        reset_obs, reset_state = self.reset_env(reset_key, params)
        next_env_state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), reset_state, env_state)
        reward = jnp.asarray(reward, jnp.float32)
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        next_state = EpisodeState(
            env_state=next_env_state,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
        )
        return StepResult(
            obs=jax.lax.select(done, reset_obs, obs),
            state=next_state,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=obs,
            episode_return=episode_return,
            episode_length=episode_length,
        )


class Wrapper(Environment):
    """An environment seen through another: anything not overridden is the inner one's."""

    def __init__(self, env: Environment):
        self.env = env

    def __getattr__(self, name):
        if name == "env":  # not yet set (e.g. during unpickling)
            raise AttributeError(name)
        return getattr(self.env, name)

    @property
    def num_actions(self) -> int:
        return self.env.num_actions

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return self.env.obs_shape

    @property
    def default_params(self):
        return self.env.default_params

    def max_episode_steps(self, params) -> int:
        return self.env.max_episode_steps(params)

    def reset(self, key, params=None):
        return self.env.reset(key, params)

    def step(self, key, state, action, params=None) -> StepResult:
        return self.env.step(key, state, action, params)
