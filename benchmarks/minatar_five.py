"""The five-game MinAtar reproduction: DQN, DQN+DVW, M-DQN and M-DQN+DVW on every game.

Kitamura et al. 2023 (arXiv 2305.13185), Sec. 7.3: the four agents on the five MinAtar games
under the original MinAtar protocol (``--protocol paper``: sticky actions 0.1, six actions),
official hyperparameters, here with ``--seeds`` vmapped seeds per run (sharded over the
devices when there are several). Each (game, agent) pair is one ``mdvi-lab minatar`` run in
``<out>/<game>-<agent>``; the closing ``mdvi-lab minatar-report`` draws the five panels beside
the paper's 10M-step returns.

Run length: ``--steps`` per seed, or, with ``--minutes``, as many steps as fit in the budget:
one calibration chunk per agent measures aggregate steps per second, and every run gets the
same length (the slowest agent's share of the budget, rounded down to whole evaluation
intervals, at most 10M). The epsilon schedule is sized to that length (``exploration_fraction``
of the run), as in the paper's protocol scaled down. The plan is saved in ``<out>/plan.json``.

Resumable: rerunning the same command skips finished runs, resumes killed ones from their
newest checkpoint and keeps the saved plan.

    python benchmarks/minatar_five.py --out results/minatar-five --seeds 5 --minutes 60
    python benchmarks/minatar_five.py --out results/minatar-cpu --seeds 2 --steps 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import dqn  # noqa: E402
from agents.dqn import DQNConfig  # noqa: E402
from envs.minatar import GAMES  # noqa: E402
from experiments.minatar import MinAtarConfig, MinAtarReportConfig, Runner, report, run  # noqa: E402
from experiments.results import write_json  # noqa: E402

AGENTS = tuple(name for name in dqn.ALGORITHMS if not name.endswith("-shared"))  # the paper's four
MAX_STEPS = 10_000_000


def _config(args, game: str, algo: str, steps: int, out: Path, **extra) -> MinAtarConfig:
    agent = DQNConfig(eval_episodes=args.eval_episodes, learning_starts=args.learning_starts,
                      buffer_size=args.buffer_size, target_period=args.target_period)
    return MinAtarConfig(game=game, algo=algo, seeds=args.seeds, steps=steps, eval_every=args.eval_every,
                         agent=agent, protocol="paper", seed=args.seed, out=out, shard=args.shard,
                         progress=args.progress, checkpoint_every=args.checkpoint_every, **extra)


def calibrate(args, minutes: float) -> int:
    """Steps per seed of every run so that all of them fit ``minutes``: one timed chunk per agent."""
    sps = {}
    probe_steps = args.learning_starts + 2 * args.eval_every
    for algo in args.agents:
        runner = Runner(_config(args, args.games[0], algo, probe_steps, Path("unused")))
        state = runner.initial_state()
        state, _ = runner.run_chunk(state, 0)  # compile and warm up
        _, rows = runner.run_chunk(state, 1)
        sps[algo] = next(r["value"] for r in rows if r["metric"] == "sps_aggregate")
        print(f"calibration: {algo} {sps[algo]:.0f} aggregate steps/s ({args.seeds} seeds)", flush=True)
    runs_per_agent = len(args.games)
    seconds = minutes * 60 * args.usable_fraction
    # every agent runs the same steps: sum over agents of steps * seeds / sps = budget
    steps = seconds / runs_per_agent / sum(args.seeds / sps[a] for a in args.agents)
    steps = int(min(steps, args.max_steps) // args.eval_every * args.eval_every)
    if steps < args.learning_starts + args.eval_every:
        raise ValueError(f"--minutes {minutes} leaves {steps} steps per run, fewer than learning starts "
                         f"({args.learning_starts}) plus one evaluation interval ({args.eval_every})")
    return steps


def plan_for(args) -> dict:
    """The saved plan, or a new one (``--steps`` or calibrated from ``--minutes``)."""
    path = args.out / "plan.json"
    if path.exists():
        plan = json.loads(path.read_text())
        print(f"continuing the plan in {path}: {plan['steps']} steps x {plan['seeds']} seeds per run", flush=True)
        return plan
    steps = args.steps if args.steps else calibrate(args, args.minutes)
    plan = {"steps": int(steps), "seeds": args.seeds, "games": list(args.games), "agents": list(args.agents),
            "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "protocol": "paper",
            "sized_by": "--steps" if args.steps else f"--minutes {args.minutes}"}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(path, plan)
    return plan


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/minatar-five"))
    parser.add_argument("--games", nargs="*", default=list(GAMES))
    parser.add_argument("--agents", nargs="*", default=list(AGENTS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="master seed")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--steps", type=int, help="environment steps per seed of every run")
    size.add_argument("--minutes", type=float, help="time budget of all runs together (sizes --steps)")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS, help="cap of the steps --minutes gives a run")
    parser.add_argument("--usable-fraction", type=float, default=0.85,
                        help="share of --minutes given to training (the rest: compiles, evaluations, checkpoints)")
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--eval-episodes", type=int, default=32)
    parser.add_argument("--learning-starts", type=int, default=10_000)
    parser.add_argument("--buffer-size", type=int, default=100_000)
    parser.add_argument("--target-period", type=int, default=1_000)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    parser.add_argument("--shard", choices=("no", "yes", "auto"), default="no",
                        help="shard the seeds over every device (mdvi-lab --shard); auto: when there are "
                             "several devices and their count divides --seeds")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    for name, chosen, known in (("games", args.games, GAMES), ("agents", args.agents, AGENTS)):
        unknown = sorted(set(chosen) - set(known))
        if unknown or not chosen:
            parser.error(f"--{name} must be some of {', '.join(known)}; got {', '.join(unknown) or 'none'}")

    if args.shard == "auto":
        import jax

        devices = jax.device_count()
        args.shard = "yes" if devices > 1 and args.seeds % devices == 0 else "no"
        print(f"{devices} device(s): seeds {'sharded' if args.shard == 'yes' else 'vmapped on one device'}", flush=True)
    args.shard = args.shard == "yes"
    plan = plan_for(args)
    if plan["seeds"] != args.seeds:
        raise ValueError(f"{args.out} was planned with {plan['seeds']} seeds, not {args.seeds}; use another --out")
    started = time.perf_counter()
    runs = []
    for game in args.games:
        for algo in args.agents:
            out = args.out / f"{game}-{dqn.get_algorithm(algo).slug}"
            runs.append(out)
            if (out / "summary.json").exists():
                print(f"{out}: finished, skipped", flush=True)
                continue
            resume = (out / "checkpoints").exists()
            print(f"{out}: {'resuming' if resume else 'starting'} ({plan['steps']} steps x {args.seeds} seeds)",
                  flush=True)
            run(_config(args, game, algo, plan["steps"], out, resume=resume))
    print(f"trained in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    summary = report(MinAtarReportConfig(runs=tuple(runs), out=args.out / "report", overwrite=True))
    return summary


if __name__ == "__main__":
    main()
