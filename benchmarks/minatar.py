"""Benchmark: DQN-family training speed on MinAtar Breakout (CPU), and the replay buffer.

Steps per second after learning starts (compile excluded) for DQN, DQN+DVW, M-DQN and
M-DQN+DVW, with 1 seed and with 8 vmapped seeds, official hyperparameters (batch 32, buffer
1e5, one update per 4 steps, paper protocol). Variants are timed round-robin, median of
``--repeats``. Targets (issue 4): M-DQN+DVW at 1 seed >= 5x the official implementation's
figure (684 SPS: the official DVW MinAtar code of Kitamura et al. 2023, ``cleanrl/dqn_minatar.py``,
measured after learning starts on a 2-core CPU of this kind, 1 torch thread, median of 3; pass
``--peer-sps`` to use a figure re-measured in the same session); 8 seeds >= 2x 1 seed in
aggregate; DVW costs <= 1.3x plain M-DQN. Also times the lab's ring buffer against flashbax.

    python benchmarks/minatar.py [--periods 4] [--repeats 3] [--peer-sps 684]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.dqn import DQNAgent, config_for  # noqa: E402
from agents.replay import replay_add, replay_init, replay_sample  # noqa: E402
from benchmarks.common import record, write  # noqa: E402
from envs.minatar import make  # noqa: E402

VARIANTS = ("dqn", "dqn+dvw", "mdqn", "mdqn+dvw", "mdqn+dvw-shared")
OFFICIAL_MDQN_DVW_SPS = 684.0  # official DVW code, VW-M-DQN on Breakout, OMP_NUM_THREADS=1, median of 3


def _trainer(algorithm: str, seeds: int, periods: int, game: str):
    config = config_for(algorithm, learning_starts=1_000)
    agent = DQNAgent(config, make(game))
    keys = jax.random.split(jax.random.key(0, impl="philox2x32"), seeds)  # as the CLI
    state = jax.jit(jax.vmap(lambda k: agent.warmup(agent.init(k))))(keys)
    chunk = jax.jit(jax.vmap(lambda s: agent.train_chunk(s, periods))).lower(state).compile()
    state, _ = chunk(state)  # one untimed run
    jax.block_until_ready(state.step)
    steps = seeds * periods * config.target_period
    holder = {"state": state}

    def timed() -> float:
        start = time.perf_counter()
        holder["state"], _ = chunk(holder["state"])
        jax.block_until_ready(holder["state"].step)
        return steps / (time.perf_counter() - start)

    return timed


def replay_benchmark(iterations: int = 2000, capacity: int = 100_000):
    """Seconds per (4 adds + 1 sample of 32) for the lab's buffer and for flashbax."""
    obs_shape = (10, 10, 4)
    obs = jnp.ones(obs_shape, jnp.uint8)

    def ours():
        def body(state, i):
            for _ in range(4):
                state = replay_add(state, obs, i % 6, jnp.float32(1.0), obs, i % 7 == 0)
            batch = replay_sample(state, jax.random.fold_in(jax.random.key(0), i), 32)
            return state, batch.reward.sum()

        return jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(iterations))), replay_init(capacity, obs_shape)

    def theirs():
        import flashbax as fbx

        buffer = fbx.make_item_buffer(max_length=capacity, min_length=1, sample_batch_size=32, add_batches=False)
        item = {"obs": obs, "action": jnp.int32(0), "reward": jnp.float32(0), "next_obs": obs, "terminated": False}

        def body(state, i):
            for _ in range(4):
                state = buffer.add(state, {**item, "action": i % 6, "reward": jnp.float32(1.0)})
            batch = buffer.sample(state, jax.random.fold_in(jax.random.key(0), i))
            return state, batch.experience["reward"].sum()

        return jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(iterations))), buffer.init(item)

    results = {}
    for name, build in (("lab ring buffer", ours), ("flashbax item buffer", theirs)):
        fn, state = build()
        state, _ = fn(state)
        jax.block_until_ready(state)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            out = fn(state)
            jax.block_until_ready(out)
            times.append(time.perf_counter() - start)
        results[name] = min(times) / iterations
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--periods", type=int, default=6, help="target periods (1000 steps) per timed chunk")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peer-sps", type=float, default=OFFICIAL_MDQN_DVW_SPS,
                        help="the official code's M-DQN+DVW figure measured on this kind of machine")
    parser.add_argument("--peer-sps-session", type=float, nargs="*", default=[],
                        help="the official code's M-DQN+DVW figure(s) re-measured in this session "
                             "(e.g. with 1 and with 2 torch threads)")
    args = parser.parse_args(argv)

    trainers = {(a, s): _trainer(a, s, args.periods, args.game) for s in (1, 8) for a in VARIANTS}
    samples = {key: [] for key in trainers}
    for _ in range(args.repeats):  # round-robin: load changes hit every variant alike
        for key, timed in trainers.items():
            samples[key].append(timed())
    sps = {key: statistics.median(v) for key, v in samples.items()}

    records = []
    for (algorithm, seeds), value in sps.items():
        records.append(record(f"{algorithm} SPS, {seeds} seed{'s' if seeds > 1 else ''} (aggregate)", value, "steps/s"))
    ratio = sps[("mdqn+dvw", 1)] / args.peer_sps
    records.append(record(f"M-DQN+DVW 1 seed vs official code, reference figure ({args.peer_sps:.0f} SPS)",
                          ratio, "x", ">= 5x", ratio >= 5))
    for peer in args.peer_sps_session:
        ratio = sps[("mdqn+dvw", 1)] / peer
        records.append(record(f"M-DQN+DVW 1 seed vs official code re-measured here ({peer:.0f} SPS)",
                              ratio, "x", ">= 5x", ratio >= 5))
    for algorithm in VARIANTS:
        scale = sps[(algorithm, 8)] / sps[(algorithm, 1)]
        records.append(record(f"{algorithm}: 8 seeds aggregate / 1 seed", scale, "x", ">= 2x", scale >= 2))
    for seeds in (1, 8):
        for variant in ("mdqn+dvw", "mdqn+dvw-shared"):
            cost = sps[("mdqn", seeds)] / sps[(variant, seeds)]
            target = "<= 1.3x" if seeds == 1 else None
            records.append(record(f"DVW cost: time {variant} / mdqn, {seeds} seed(s)", cost, "x", target,
                                  (cost <= 1.3) if seeds == 1 else None))
        cost = sps[("dqn", seeds)] / sps[("dqn+dvw", seeds)]
        records.append(record(f"DVW cost: time DQN+DVW / DQN, {seeds} seed(s)", cost, "x"))
    replay = replay_benchmark()
    for name, seconds in replay.items():
        records.append(record(f"replay: 4 adds + sample 32, {name}", seconds * 1e6, "us"))
    speedup = replay["flashbax item buffer"] / replay["lab ring buffer"]
    records.append(record("replay: flashbax time / lab ring buffer time", speedup, "x"))
    write("minatar", records)
    return records


if __name__ == "__main__":
    main()
