"""Time-budgeted MinAtar run of all four DQN-family algorithms (for a GPU machine).

For each of DQN, DQN+DVW, M-DQN, M-DQN+DVW: ``--seeds`` vmapped seeds train on one game with the
official hyperparameters (epsilon schedule of a 10M-step run) for an equal share of
``--minutes`` (compile time included), evaluating greedily after every chunk. Prints aggregate
environment steps per second (compile excluded) and the final greedy returns; writes
``benchmarks/results/gpu_minatar.json`` (and a copy under ``$OUT`` when set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import dqn  # noqa: E402
from agents.dqn import DQNConfig  # noqa: E402
from benchmarks.common import record, write  # noqa: E402
from experiments.minatar import MinAtarConfig, Runner  # noqa: E402

ALGORITHMS = tuple(name for name in dqn.ALGORITHMS if not name.endswith("-shared"))  # the four of the paper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--game", default="breakout")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=7.5)
    parser.add_argument("--chunk-steps", type=int, default=25_000)
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--algorithms", nargs="*", default=list(ALGORITHMS),
                        help="subset of dqn, dqn+dvw, mdqn, mdqn+dvw")
    parser.add_argument("--name", default="gpu_minatar", help="results file name")
    args = parser.parse_args(argv)
    chosen = [a for a in ALGORITHMS if a in args.algorithms]
    import jax

    device = str(jax.devices()[0])
    print(f"device: {device}; backend {jax.default_backend()}", flush=True)
    budget = args.minutes * 60 / len(chosen)
    records, table = [], []
    for algo in chosen:
        started = time.perf_counter()
        config = MinAtarConfig(game=args.game, algo=algo, seeds=args.seeds, steps=10_000_000,
                               eval_every=args.chunk_steps, agent=DQNConfig(eval_episodes=args.eval_episodes),
                               checkpoint_every=0, progress=False)
        runner = Runner(config)
        state = runner.initial_state()
        jax.block_until_ready(state.step)
        train_seconds, steps, index, returns = 0.0, 0, 0, []
        while index < len(runner.plan) and (index == 0 or time.perf_counter() - started < budget):
            state, rows = runner.run_chunk(state, index)
            sps = [r["value"] for r in rows if r["metric"] == "sps_aggregate"][0]
            chunk_steps = runner.plan[index] * runner.agent_config.target_period * args.seeds
            train_seconds += chunk_steps / sps
            steps = int(np.asarray(state.step)[0])
            returns = [r["value"] for r in rows if r["metric"] == "eval_return"]
            print(f"  {config.algorithm:9s} step {steps:>8d}/seed  eval return {np.mean(returns):6.2f}  "
                  f"SPS {sps:9.0f}", flush=True)
            index += 1
        trained_steps = (steps - runner.agent_config.learning_starts) * args.seeds
        aggregate = trained_steps / train_seconds if train_seconds else float("nan")
        row = {"algorithm": config.algorithm, "steps_per_seed": steps, "seeds": args.seeds,
               "aggregate_sps": aggregate, "final_eval_return": float(np.mean(returns)) if returns else float("nan"),
               "final_eval_return_sd": float(np.std(returns)) if returns else float("nan")}
        table.append(row)
        records.append(record(f"{config.algorithm} aggregate SPS ({args.seeds} seeds, {device})", aggregate, "steps/s"))
        records.append(
            record(f"{config.algorithm} final greedy return after {steps} steps/seed", row["final_eval_return"], "return")
        )
    print("\nalgorithm   steps/seed  seeds  aggregate SPS  final greedy return (mean, sd over seeds)")
    for row in table:
        print(f"{row['algorithm']:10s} {row['steps_per_seed']:>10d} {row['seeds']:>6d} {row['aggregate_sps']:>14.0f}  "
              f"{row['final_eval_return']:.2f} ({row['final_eval_return_sd']:.2f})")
    path = write(args.name, records)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"{args.name}.json").write_text(path.read_text())
        Path(os.environ["OUT"], f"{args.name}_table.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
