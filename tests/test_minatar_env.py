"""MinAtar via gymnax under the paper and gymnax protocols, cross-checked with `minatar`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.minatar import FREEWAY_GAME_LENGTH, GAMES, MinAtarProtocol, make

# Channels that only the agent's own action moves (deterministically) in each game.
AGENT_CHANNELS = {
    "asterix": ("player",),
    "breakout": ("paddle",),
    "freeway": ("chicken",),
    "seaquest": ("sub_front", "sub_back", "friendly_bullet"),
    "space_invaders": ("cannon", "friendly_bullet"),
}
NO_STICKY = MinAtarProtocol("paper-no-sticky", 0.0, True, 10_000, True)


def _original(game, sticky=0.0, seed=0):
    import minatar

    env = minatar.Environment(game, sticky_action_prob=sticky)
    env.seed(seed)
    return env


def _rollout(env, key, steps, actions=None):
    obs, state = env.reset(jax.random.fold_in(key, 0))

    def body(carry, inputs):
        state, obs = carry
        k, a = inputs
        out = env.step(k, state, a)
        return (out.state, out.obs), out

    if actions is None:
        actions = jax.random.randint(jax.random.fold_in(key, 1), (steps,), 0, env.num_actions)
    keys = jax.random.split(jax.random.fold_in(key, 2), steps)
    _, outs = jax.lax.scan(body, (state, obs), (keys, actions))
    return outs


@pytest.mark.parametrize("protocol", ["paper", "gymnax"])
@pytest.mark.parametrize("game", GAMES)
def test_every_game_runs_a_few_hundred_steps(game, protocol):
    env = make(game, protocol)
    outs = jax.jit(lambda k: _rollout(env, k, 300))(jax.random.key(0))
    assert outs.obs.shape == (300, *env.obs_shape)
    obs = np.asarray(outs.obs)
    assert set(np.unique(obs)) <= {0.0, 1.0}
    assert np.all(np.isfinite(np.asarray(outs.reward)))
    assert not np.any(np.asarray(outs.terminated) & np.asarray(outs.truncated))
    assert env.num_actions == (6 if protocol == "paper" else len(make(game, "gymnax").action_meanings))


def test_unknown_game_and_protocol_are_named():
    with pytest.raises(ValueError, match="unknown MinAtar game 'pong'"):
        make("pong")
    with pytest.raises(ValueError, match="unknown MinAtar protocol 'atari'"):
        make("breakout", "atari")


@pytest.mark.parametrize("game", GAMES)
def test_full_action_set_has_the_original_meanings(game):
    """Each of the 6 actions moves the agent exactly as in the original package."""
    env = make(game, NO_STICKY)
    assert env.action_meanings == ("noop", "left", "up", "right", "down", "fire")
    steps = 4 if game == "freeway" else 1  # Freeway's chicken waits for a move timer
    channels_of = _original(game).env.channels
    channels = [channels_of[name] for name in AGENT_CHANNELS[game]]
    effects = set()
    roll = jax.jit(lambda k, a: _rollout(env, k, steps, a))
    for action in range(6):
        original = _original(game)
        original.reset()
        for _ in range(steps):
            original.act(action)
        expected = original.state()[..., channels]
        outs = roll(jax.random.key(action), jnp.full((steps,), action))
        got = np.asarray(outs.obs[-1])[..., channels].astype(bool)
        np.testing.assert_array_equal(got, expected, err_msg=f"{game}: action {action}")
        effects.add(expected.tobytes())
    # the actions are not all alike: no-op, left and right differ (Freeway: no-op and up)
    assert len(effects) >= (2 if game == "freeway" else 3)


def test_sticky_actions_repeat_the_previous_action_at_the_configured_rate():
    env = make("breakout", "paper")
    n = 30000
    requested = jax.random.randint(jax.random.key(9), (n,), 0, 6)
    outs = jax.jit(lambda k, a: _rollout(env, k, n, a))(jax.random.key(5), requested)
    executed = np.asarray(outs.state.last_action)
    requested = np.asarray(requested)
    previous = np.concatenate([[0], executed[:-1]])
    # every executed action is either the requested one or a repeat of the previous one
    assert np.all((executed == requested) | (executed == previous))
    # a repeat is visible only when the request differs from the previous executed action
    visible = requested != previous
    rate = (executed[visible] == previous[visible]).mean()
    assert abs(rate - 0.1) < 4 * np.sqrt(0.1 * 0.9 / visible.sum()), rate
    none = _rollout(make("breakout", NO_STICKY), jax.random.key(5), 2000, jnp.asarray(requested[:2000]))
    np.testing.assert_array_equal(np.asarray(none.state.last_action), requested[:2000])


def test_freeway_ends_as_a_game_over_under_the_paper_protocol():
    # the original ends on step 2501 as a game over; gymnax truncates after 2500
    for protocol, terminal, length in (("paper", True, FREEWAY_GAME_LENGTH), ("gymnax", False, 2500)):
        env = make("freeway", protocol)
        outs = jax.jit(lambda k, env=env: _rollout(env, k, 2510))(jax.random.key(0))
        ended = np.flatnonzero(np.asarray(outs.terminated | outs.truncated))
        assert ended[0] == length - 1
        assert bool(outs.terminated[ended[0]]) is terminal
        assert bool(outs.truncated[ended[0]]) is (not terminal)
        assert int(outs.episode_length[ended[0]]) == length


def test_episode_cap_is_a_truncation():
    capped = MinAtarProtocol("capped", 0.0, True, 40, True)
    env = make("asterix", capped)
    outs = jax.jit(lambda k, a: _rollout(env, k, 200, a))(jax.random.key(3), jnp.zeros(200, jnp.int32))
    truncated = np.flatnonzero(np.asarray(outs.truncated))
    assert truncated.size and np.all(np.asarray(outs.episode_length)[truncated] == 40)
    assert not np.any(np.asarray(outs.terminated)[truncated])
    # the final observation is kept for bootstrapping, and differs from the reset frame
    i = truncated[0]
    assert not np.array_equal(np.asarray(outs.final_obs[i]), np.asarray(outs.obs[i]))


def _gymnax_random_episodes(env, episodes, max_steps, seed):
    def one(key):
        obs, state = env.reset(jax.random.fold_in(key, 0))

        def body(carry, k):
            state, done, ret, length = carry
            ka, ks = jax.random.split(k)
            a = jax.random.randint(ka, (), 0, env.num_actions)
            out = env.step(ks, state, a)
            ended = out.terminated | out.truncated
            ret = jnp.where(done, ret, out.episode_return)
            length = jnp.where(done, length, out.episode_length)
            return (out.state, done | ended, ret, length), None

        init = (state, jnp.array(False), jnp.array(0.0), jnp.array(0))
        (_, done, ret, length), _ = jax.lax.scan(body, init, jax.random.split(jax.random.fold_in(key, 1), max_steps))
        return done, ret, length

    keys = jax.random.split(jax.random.key(seed), episodes)
    done, ret, length = jax.jit(jax.vmap(one))(keys)
    assert bool(jnp.all(done)), "some random episodes did not finish"
    return np.asarray(ret), np.asarray(length)


def _original_random_episodes(game, episodes, seed):
    env = _original(game, sticky=0.1, seed=seed)
    rng = np.random.default_rng(seed)
    returns, lengths = [], []
    for _ in range(episodes):
        env.reset()
        total, steps, terminal = 0.0, 0, False
        while not terminal and steps < 10_000:
            reward, terminal = env.act(int(rng.integers(6)))
            total += reward
            steps += 1
        returns.append(total)
        lengths.append(steps)
    return np.array(returns), np.array(lengths)


@pytest.mark.parametrize("game", GAMES)
def test_random_policy_matches_the_original_package(game):
    episodes = 100 if game == "freeway" else 300
    # comfortably above the longest random episode of each game (checked: all must finish)
    max_steps = {"freeway": 2510, "asterix": 800, "breakout": 300, "seaquest": 400, "space_invaders": 800}[game]
    g_ret, g_len = _gymnax_random_episodes(make(game, "paper"), episodes, max_steps, seed=1)
    o_ret, o_len = _original_random_episodes(game, episodes, seed=1)
    for name, a, b in (("return", g_ret, o_ret), ("length", g_len, o_len)):
        se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        diff = abs(a.mean() - b.mean())
        assert diff <= max(4 * se, 1e-9), f"{game} {name}: gymnax {a.mean():.3f} vs minatar {b.mean():.3f} (se {se:.3f})"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(max_episode_steps=2.5), "max_episode_steps"),
        (dict(max_episode_steps=True), "max_episode_steps"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(sticky_action_prob=float("nan")), "sticky_action_prob"),
        (dict(sticky_action_prob=1.5), "sticky_action_prob"),
        (dict(full_action_set="no"), "full_action_set"),
        (dict(freeway_end_is_terminal=1), "freeway_end_is_terminal"),
    ],
)
def test_protocol_fields_are_checked(kwargs, message):
    """Issue 10, case 8: a fractional cap, a NaN probability or a string flag is refused, not coerced."""
    fields = dict(name="p", sticky_action_prob=0.1, full_action_set=True, max_episode_steps=100,
                  freeway_end_is_terminal=True)
    with pytest.raises(ValueError, match=message):
        MinAtarProtocol(**{**fields, **kwargs})


def test_a_protocol_of_the_wrong_type_is_named():
    """Issue 10, case 11: ``make("breakout", ["paper"])`` names the argument instead of a TypeError."""
    with pytest.raises(ValueError, match="protocol must be one of"):
        make("breakout", ["paper"])
    with pytest.raises(ValueError, match="game must be one of"):
        make(["breakout"])


def test_the_environment_follows_the_common_interface():
    """MinAtar and the probe implement envs.base.Environment; the base class owns the reset."""
    from envs.base import Environment, EpisodeState
    from envs.probe import TwoStepProbe

    for env in (make("breakout", "gymnax"), TwoStepProbe()):
        assert isinstance(env, Environment)
        obs, state = env.reset(jax.random.key(0))
        assert obs.shape == env.obs_shape
    probe = TwoStepProbe()
    obs, state = probe.reset(jax.random.key(0))
    assert isinstance(state, EpisodeState)
    first = probe.step(jax.random.key(1), state, 1)  # s0, action 1: reward 0.5
    second = probe.step(jax.random.key(2), first.state, 0)  # s1, action 0: reward 1, episode ends
    assert not bool(first.terminated) and bool(second.terminated)
    assert float(second.episode_return) == 1.5 and int(second.episode_length) == 2
    np.testing.assert_array_equal(np.asarray(second.final_obs), [0.0, 1.0])  # the frame reached
    np.testing.assert_array_equal(np.asarray(second.obs), [1.0, 0.0])  # the automatic reset
    assert float(second.state.episode_return) == 0.0 and int(second.state.env_state) == 0
