"""MinAtar (Young & Tian 2019) through gymnax 1.0, under an explicit protocol.

Two protocols:

* ``paper`` (default): what the original ``minatar`` package and the DVW paper (Kitamura et
  al. 2023) use. Sticky actions with probability 0.1 (the previous *executed* action repeats,
  carried across episode boundaries as in ``minatar.Environment``), the full 6-action set
  (no-op, left, up, right, down, fire) in every game, episodes capped at 10,000 agent steps
  (a truncation: bootstrap through it), and each game's own ending. Freeway's ending is a
  game over on the 2,501st step in the original; gymnax 1.0 reports it as a truncation through
  its default episode limit (after 2,500 steps), so under this protocol the limit is set to
  2,501 and relabelled as a termination.
* ``gymnax``: gymnax's native settings: reduced action sets, no sticky actions, gymnax's
  episode limits (1,000 steps; 2,500 for Freeway) reported as truncations.

Rule for learners: bootstrap on ``terminated`` only, never on ``truncated``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
GYMNAX_IDS = {
    "asterix": "Asterix-MinAtar",
    "breakout": "Breakout-MinAtar",
    "freeway": "Freeway-MinAtar",
    "seaquest": "Seaquest-MinAtar",
    "space_invaders": "SpaceInvaders-MinAtar",
}
# MinAtar's action indices, shared by every game of the original package.
FULL_ACTION_MEANINGS = ("noop", "left", "up", "right", "down", "fire")
# The original Freeway counts a timer down from 2500 and ends the game once it drops below 0,
# i.e. on the 2,501st agent step; gymnax 1.0 ends it after 2,500 steps, as a truncation.
FREEWAY_GAME_LENGTH = 2501


@dataclasses.dataclass(frozen=True)
class MinAtarProtocol:
    """How a MinAtar game is presented to the agent; written into every result."""

    name: str
    sticky_action_prob: float
    full_action_set: bool
    max_episode_steps: int | None  # None: gymnax's own per-game limit
    freeway_end_is_terminal: bool

    def __post_init__(self):
        if not 0.0 <= self.sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob must lie in [0, 1], got {self.sticky_action_prob}")
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS = {
    "paper": MinAtarProtocol("paper", 0.1, True, 10_000, True),
    "gymnax": MinAtarProtocol("gymnax", 0.0, False, None, False),
}


def get_protocol(protocol: str | MinAtarProtocol) -> MinAtarProtocol:
    if isinstance(protocol, MinAtarProtocol):
        return protocol
    try:
        return PROTOCOLS[protocol]
    except KeyError:
        raise ValueError(f"unknown MinAtar protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}") from None


class MinAtarState(NamedTuple):
    env_state: Any
    last_action: jax.Array  # previously executed action, for sticky actions
    episode_return: jax.Array
    episode_length: jax.Array


class StepResult(NamedTuple):
    obs: jax.Array  # next observation (after an automatic reset when the episode ended)
    state: MinAtarState
    reward: jax.Array
    terminated: jax.Array  # a real game over: do not bootstrap
    truncated: jax.Array  # an episode cap: bootstrap from final_obs
    final_obs: jax.Array  # the observation the transition reached (before any reset)
    episode_return: jax.Array  # return of the episode that just ended (valid when done)
    episode_length: jax.Array


class MinAtar:
    """A MinAtar game with a protocol; pure ``reset(key)`` / ``step(key, state, action)``.

    Observations are float32 ``[10, 10, channels]`` in {0, 1}. The environment resets itself
    when an episode ends (terminated or truncated); ``final_obs`` keeps the last frame.
    """

    def __init__(self, game: str, protocol: str | MinAtarProtocol = "paper"):
        import gymnax

        if game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; choose one of {', '.join(GAMES)}")
        self.game = game
        self.protocol = get_protocol(protocol)
        env, params = gymnax.make(GYMNAX_IDS[game], use_minimal_action_set=not self.protocol.full_action_set)
        limit = self.protocol.max_episode_steps
        if game == "freeway" and self.protocol.freeway_end_is_terminal:
            # gymnax implements Freeway's game end as its episode limit: keep it at the game's
            # length and relabel it (see module docstring).
            limit = FREEWAY_GAME_LENGTH if limit is None else min(limit, FREEWAY_GAME_LENGTH)
        if limit is not None:
            params = params.replace(max_steps_in_episode=limit)
        self._env = env
        self.params = params
        self.num_actions = int(env.num_actions)
        self.obs_shape = tuple(env.obs_shape)
        self._freeway_relabel = game == "freeway" and self.protocol.freeway_end_is_terminal

    @property
    def action_meanings(self) -> tuple[str, ...]:
        return tuple(FULL_ACTION_MEANINGS[int(a)] for a in self._env.action_set)

    def describe(self) -> dict:
        return {
            "game": self.game,
            "gymnax_id": GYMNAX_IDS[self.game],
            "num_actions": self.num_actions,
            "actions": list(self.action_meanings),
            "max_steps_in_episode": int(self.params.max_steps_in_episode),
            **self.protocol.describe(),
        }

    def reset(self, key: jax.Array) -> tuple[jax.Array, MinAtarState]:
        obs, env_state = self._env.reset(key, self.params)
        zero = jnp.zeros((), jnp.float32)
        state = MinAtarState(env_state, jnp.zeros((), jnp.int32), zero, jnp.zeros((), jnp.int32))
        return obs, state

    def step(self, key: jax.Array, state: MinAtarState, action: jax.Array) -> StepResult:
        sticky_key, env_key = jax.random.split(key)
        action = jnp.asarray(action, jnp.int32)
        if self.protocol.sticky_action_prob > 0.0:
            repeat = jax.random.bernoulli(sticky_key, self.protocol.sticky_action_prob)
            action = jnp.where(repeat, state.last_action, action)
        obs, env_state, reward, terminated, truncated, info = self._env.step(
            env_key, state.env_state, action, self.params
        )
        if self._freeway_relabel:
            terminated = terminated | truncated
            truncated = jnp.zeros_like(truncated)
        reward = reward.astype(jnp.float32)
        done = terminated | truncated
        episode_return = state.episode_return + reward
        episode_length = state.episode_length + 1
        next_state = MinAtarState(
            env_state=env_state,
            last_action=action,
            episode_return=jnp.where(done, 0.0, episode_return),
            episode_length=jnp.where(done, 0, episode_length),
        )
        return StepResult(
            obs=obs,
            state=next_state,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            final_obs=info["final_observation"],
            episode_return=episode_return,
            episode_length=episode_length,
        )


def make(game: str, protocol: str | MinAtarProtocol = "paper") -> MinAtar:
    return MinAtar(game, protocol)
