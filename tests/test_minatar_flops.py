"""The benchmark's FLOP count of an update: XLA's cost analysis against a hand count of the products."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from agents.dqn import DQNAgent, config_for
from benchmarks.minatar import matmul_flops, update_flops
from envs.minatar import make


@pytest.fixture(scope="module")
def env():
    return make("breakout")


def test_one_forward_pass_is_its_conv_and_dense_products(env):
    """XLA's count of a forward pass at batch 32 is the hand count plus only elementwise work
    (bias adds, ReLUs: under 2%)."""
    config = config_for("mdqn")
    agent = DQNAgent(config, env)
    obs = jax.ShapeDtypeStruct((32, *env.obs_shape), jnp.float32)
    params = jax.eval_shape(agent.network.init, jax.random.key(0), obs)
    cost = jax.jit(agent.network.apply).lower(params, obs).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    hand = 32 * matmul_flops(config, env.obs_shape, env.num_actions)["per_sample_forward"]
    assert hand == 32 * 2 * (64 * 36 * 16 + 1024 * 128 + 128 * 6)
    assert hand <= cost["flops"] <= 1.02 * hand


@pytest.mark.parametrize("algorithm", ["dqn", "mdqn", "mdqn+dvw", "mdqn+dvw-shared"])
def test_update_flops_match_the_hand_count(algorithm, env):
    """The compiled update's FLOPs are its matrix products plus at most 8% of other work
    (losses, Adam on ~140k parameters per trained network, elementwise layers)."""
    config = config_for(algorithm)
    hand = matmul_flops(config, env.obs_shape, env.num_actions)
    total = hand["trained"] + hand["frozen"]
    xla = update_flops(DQNAgent(config, env), jax.random.key(0, impl="philox2x32"))
    assert total <= xla <= 1.08 * total, (xla, total)


def test_dvw_with_the_paper_network_more_than_doubles_the_update(env):
    key = jax.random.key(0, impl="philox2x32")
    flops = {a: update_flops(DQNAgent(config_for(a), env), key) for a in ("mdqn", "mdqn+dvw", "mdqn+dvw-shared")}
    assert 2.0 < flops["mdqn+dvw"] / flops["mdqn"] < 2.4
    assert 1.3 < flops["mdqn+dvw-shared"] / flops["mdqn"] < 1.5
