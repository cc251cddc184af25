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

The environment follows :mod:`envs.base`: :class:`MinAtar` implements one gymnax transition
and reset, the base class owns the automatic reset; :class:`StickyActions` wraps it with the
protocol's sticky actions (outside the reset, so the last action survives an episode's end).
Rule for learners: bootstrap on ``terminated`` only, never on ``truncated``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from envs.base import Environment, EpisodeState, StepResult, Wrapper

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
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        p = self.sticky_action_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"sticky_action_prob must be a number in [0, 1], got {p!r}")
        for name in ("full_action_set", "freeway_end_is_terminal"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        cap = self.max_episode_steps
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"max_episode_steps must be None or an integer >= 1, got {cap!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


PROTOCOLS = {
    "paper": MinAtarProtocol("paper", 0.1, True, 10_000, True),
    "gymnax": MinAtarProtocol("gymnax", 0.0, False, None, False),
}


def get_protocol(protocol: str | MinAtarProtocol) -> MinAtarProtocol:
    if isinstance(protocol, MinAtarProtocol):
        return protocol
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(
            f"unknown MinAtar protocol {protocol!r}: protocol must be one of {sorted(PROTOCOLS)} or a MinAtarProtocol"
        )
    return PROTOCOLS[protocol]


class MinAtar(Environment):
    """One MinAtar game through gymnax under a protocol's action set and episode limits.

    Observations are float32 ``[10, 10, channels]`` in {0, 1}. Parameters are gymnax's
    ``EnvParams`` of the game (its ``max_steps_in_episode`` set by the protocol). Sticky
    actions are not applied here: :func:`make` wraps the game in :class:`StickyActions`.
    """

    def __init__(self, game: str, protocol: str | MinAtarProtocol = "paper"):
        import gymnax

        if not isinstance(game, str) or game not in GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}: game must be one of {', '.join(GAMES)}")
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
        self._game = env
        self._params = params
        self.num_actions = int(env.num_actions)
        self.obs_shape = tuple(env.obs_shape)
        self._freeway_relabel = game == "freeway" and self.protocol.freeway_end_is_terminal

    @property
    def default_params(self):
        return self._params

    def max_episode_steps(self, params) -> int:
        return int(params.max_steps_in_episode)

    @property
    def action_meanings(self) -> tuple[str, ...]:
        return tuple(FULL_ACTION_MEANINGS[int(a)] for a in self._game.action_set)

    def describe(self) -> dict:
        return {
            "game": self.game,
            "gymnax_id": GYMNAX_IDS[self.game],
            "num_actions": self.num_actions,
            "actions": list(self.action_meanings),
            "max_steps_in_episode": self.max_episode_steps(self._params),
            **self.protocol.describe(),
        }

    def reset_env(self, key, params):
        return self._game.reset_env(key, params)

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, _ = self._game.step_env(key, state, action, params)
        truncated = self._game.is_truncated(state, params)
        if self._freeway_relabel:
            terminated = terminated | truncated
            truncated = jnp.zeros_like(truncated)
        return obs, state, reward, terminated, truncated


class StickyParams(NamedTuple):
    env: Any  # the wrapped environment's parameters
    repeat_probability: jax.Array | float


class StickyState(NamedTuple):
    inner: EpisodeState
    last_action: jax.Array  # the previously executed action, carried across episode ends


class StickyActions(Wrapper):
    """With probability ``repeat_probability`` the previously *executed* action is executed again.

    Machado et al. (2018, Sec. 5.2); MinAtar's ``sticky_action_prob``. The previous action is
    carried across episode boundaries, as in ``minatar.Environment``. The step key is split
    into the sticky draw and the wrapped step's key even at probability 0, so the wrapped
    environment draws the same numbers whatever the probability.
    """

    def __init__(self, env: Environment, repeat_probability: float):
        super().__init__(env)
        self.repeat_probability = repeat_probability

    @property
    def default_params(self) -> StickyParams:
        return StickyParams(self.env.default_params, self.repeat_probability)

    def max_episode_steps(self, params: StickyParams) -> int:
        return self.env.max_episode_steps(params.env)

    def reset(self, key, params: StickyParams | None = None):
        params = self.default_params if params is None else params
        obs, inner = self.env.reset(key, params.env)
        return obs, StickyState(inner, jnp.zeros((), jnp.int32))

    def step(self, key, state: StickyState, action, params: StickyParams | None = None) -> StepResult:
        params = self.default_params if params is None else params
        sticky_key, env_key = jax.random.split(key)
        action = jnp.asarray(action, jnp.int32)
        repeat = jax.random.bernoulli(sticky_key, params.repeat_probability)
        action = jnp.where(repeat, state.last_action, action)
        out = self.env.step(env_key, state.inner, action, params.env)
        return out._replace(state=StickyState(out.state, action))


def make(game: str, protocol: str | MinAtarProtocol = "paper") -> StickyActions:
    """A MinAtar game under a protocol (``paper`` or ``gymnax``, or a :class:`MinAtarProtocol`)."""
    env = MinAtar(game, protocol)
    return StickyActions(env, env.protocol.sticky_action_prob)
