"""``mdvi-lab minatar`` and ``mdvi-lab minatar-report``: DQN-family agents on MinAtar.

A run trains ``seeds`` vmapped seeds of one algorithm on one game, in chunks of
``eval_every`` environment steps. Between chunks (on concrete arrays): greedy evaluation over
``eval_episodes`` vmapped episodes per seed, metrics, the progress bar, and an orbax
checkpoint. ``--resume`` continues a killed run from its last checkpoint and ends with exactly
the metrics of an uninterrupted run (CPU; every random draw is a function of the saved state).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from tqdm.auto import tqdm

from agents.dqn import DQNAgent, DQNConfig
from experiments.checkpoint import Checkpointer
from experiments.plotting import plot_lines
from experiments.results import RunDir, format_table, write_json, write_tidy_csv

CHUNK_METRICS = ("loss", "q_taken", "variance_loss", "weight_mean", "weight_min", "weight_max", "scale", "epsilon")
ALGORITHM_ORDER = ("dqn", "dqn+dvw", "dqn+dvw-shared", "mdqn", "mdqn+dvw", "mdqn+dvw-shared")


@dataclasses.dataclass(frozen=True)
class MinAtarConfig:
    """Train DQN / M-DQN (optionally with DVW) on a MinAtar game, many seeds at once."""

    game: Literal["asterix", "breakout", "freeway", "seaquest", "space_invaders"] = "breakout"
    algo: Literal["dqn", "mdqn"] = "mdqn"
    """Base algorithm."""
    dvw: bool = False
    """Add Deep Variance Weighting."""
    dvw_network: Literal["separate", "shared"] = "separate"
    """DVW's variance estimator: a separate network (official) or a head on the Q torso (cheaper)."""
    seeds: int = 4
    """Independent seeds, vmapped in one program."""
    steps: float = 1e6
    """Environment steps per seed (accepts 2e6)."""
    protocol: Literal["paper", "gymnax"] = "paper"
    """paper: original MinAtar (sticky 0.1, 6 actions, 10k cap); gymnax: gymnax-native."""
    eval_every: int = 100_000
    """Environment steps between evaluations (a multiple of target_period)."""
    eval_episodes: int = 32
    """Greedy evaluation episodes per seed."""
    learning_starts: int = 10_000
    buffer_size: int = 100_000
    target_period: int = 1_000
    exploration_fraction: float = 0.1
    learning_rate: float = 2.5e-4
    seed: int = 0
    """Master seed."""
    prng: Literal["philox2x32", "threefry2x32"] = "philox2x32"
    """PRNG implementation. JAX lowers threefry with rolled loops on CPU (to keep compiles
    short), which makes every random draw a small while loop; Philox (Salmon et al. 2011,
    Random123) lowers without loops and trains about twice as fast here."""
    out: Path | None = None
    """Run folder (default results/minatar/<game>-<algorithm>-<protocol>)."""
    resume: bool = False
    """Continue from the run folder's last checkpoint."""
    checkpoint_every: int = 1
    """Chunks between checkpoints (0: never)."""
    overwrite: bool = False
    """Replace the run already in the run folder (otherwise such a folder is refused)."""
    progress: bool = True

    @property
    def algorithm(self) -> str:
        return self.agent_config().algorithm

    def run_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path("results/minatar") / f"{self.game}-{self.algorithm.replace('+', '-')}-{self.protocol}"

    def agent_config(self) -> DQNConfig:
        steps = self.steps
        if not (math.isfinite(steps) and steps >= 1 and float(steps).is_integer()):
            raise ValueError(f"steps must be a whole number >= 1, got {steps}")
        return DQNConfig(
            game=self.game, protocol=self.protocol, total_steps=int(steps), munchausen=self.algo == "mdqn",
            dvw=self.dvw, dvw_network=self.dvw_network, eval_episodes=self.eval_episodes,
            learning_starts=self.learning_starts,
            buffer_size=self.buffer_size, target_period=self.target_period,
            exploration_fraction=self.exploration_fraction, learning_rate=self.learning_rate,
        )


def _validate(config: MinAtarConfig, agent_config: DQNConfig) -> None:
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    if config.eval_every < agent_config.target_period or config.eval_every % agent_config.target_period:
        raise ValueError(
            f"eval_every ({config.eval_every}) must be a positive multiple of target_period ({agent_config.target_period})"
        )
    if agent_config.num_periods < 1:
        raise ValueError(
            f"steps ({agent_config.total_steps}) must exceed learning_starts ({agent_config.learning_starts}) "
            f"by at least one target period ({agent_config.target_period})"
        )
    if config.checkpoint_every < 0:
        raise ValueError("checkpoint_every must be >= 0")


def chunk_plan(agent_config: DQNConfig, eval_every: int) -> list[int]:
    """Target periods per chunk: equal chunks of ``eval_every`` steps, the last one shorter."""
    per_chunk = eval_every // agent_config.target_period
    total = agent_config.num_periods
    plan = [per_chunk] * (total // per_chunk)
    if total % per_chunk:
        plan.append(total % per_chunk)
    return plan


class Runner:
    """The chunked training loop of one run (all seeds vmapped)."""

    def __init__(self, config: MinAtarConfig):
        self.config = config
        self.agent_config = config.agent_config()
        _validate(config, self.agent_config)
        self.agent = DQNAgent(self.agent_config)
        self.plan = chunk_plan(self.agent_config, config.eval_every)
        agent = self.agent
        self._init = jax.jit(jax.vmap(lambda k: agent.warmup(agent.init(k))))
        self._chunk = jax.jit(jax.vmap(agent.train_chunk, in_axes=(0, None)), static_argnums=1)
        self._evaluate = jax.jit(jax.vmap(agent.evaluate, in_axes=(0, 0)))
        self._compiled = {}

    def keys(self):
        seed_keys = jax.random.split(jax.random.key(self.config.seed, impl=self.config.prng), self.config.seeds)
        pairs = jax.vmap(jax.random.split)(seed_keys)
        return pairs[:, 0], pairs[:, 1]  # training keys, evaluation keys

    def initial_state(self):
        train_keys, _ = self.keys()
        return self._init(train_keys)

    def run_chunk(self, state, index: int):
        """Train chunk ``index``, evaluate, and return ``(state, rows)`` of tidy metrics."""
        _, eval_keys = self.keys()
        periods = self.plan[index]
        if periods not in self._compiled:  # compile outside the timed region
            self._compiled[periods] = self._chunk.lower(state, periods).compile()
        started = time.perf_counter()
        state, stats = self._compiled[periods](state)
        jax.block_until_ready(state.step)
        seconds = time.perf_counter() - started
        chunk_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, index)
        returns, lengths, finished = self._evaluate(state.params, chunk_keys)
        step = int(np.asarray(state.step)[0])
        rows = []
        algorithm = self.config.algorithm
        returns, lengths = np.asarray(returns), np.asarray(lengths)
        for seed in range(self.config.seeds):
            def add(metric, value, seed=seed):
                rows.append({"variant": algorithm, "seed": seed, "step": step, "metric": metric, "value": float(value)})

            add("eval_return", returns[seed].mean())
            add("eval_length", lengths[seed].mean())
            add("eval_finished", np.asarray(finished)[seed].mean())
            episodes = int(np.asarray(stats.episodes)[seed])
            if episodes:
                add("train_return", float(np.asarray(stats.episode_return_sum)[seed]) / episodes)
            for name in CHUNK_METRICS:
                add(name, np.asarray(getattr(stats, name))[seed])
        steps_done = self.plan[index] * self.agent_config.target_period * self.config.seeds
        rows.append({"variant": algorithm, "seed": -1, "step": step, "metric": "sps_aggregate", "value": steps_done / seconds})
        return state, rows


def run(config: MinAtarConfig) -> dict:
    runner = Runner(config)
    run_dir = config.run_dir()
    agent_config = runner.agent_config
    if config.resume and not config.checkpoint_every:
        raise ValueError("--resume needs checkpoints: set --checkpoint-every to 1 or more")
    payload = {"cli": config, "agent": agent_config, "protocol": runner.agent.env.describe(), "chunks": runner.plan}
    RunDir(run_dir, payload, overwrite=config.overwrite, resume=config.resume,
           mutable=("cli.resume", "cli.progress", "cli.overwrite", "cli.checkpoint_every"))
    checkpointer = Checkpointer(run_dir / "checkpoints") if config.checkpoint_every else None
    start_chunk, rows = 0, []
    state = runner.initial_state()
    if config.resume and checkpointer.latest_step() is not None:
        state, extra = checkpointer.restore(state)
        start_chunk, rows = extra["next_chunk"], extra["rows"]
        print(f"resuming {run_dir} at chunk {start_chunk}/{len(runner.plan)}")

    total_steps = sum(runner.plan) * agent_config.target_period + agent_config.learning_starts
    done_steps = sum(runner.plan[:start_chunk]) * agent_config.target_period + agent_config.learning_starts
    bar = tqdm(total=total_steps, initial=done_steps, unit="step", desc=f"{config.game} {config.algorithm}",
               disable=not config.progress, unit_scale=True)
    for index in range(start_chunk, len(runner.plan)):
        state, chunk_rows = runner.run_chunk(state, index)
        rows += chunk_rows
        bar.update(runner.plan[index] * agent_config.target_period)
        latest = {r["metric"]: r["value"] for r in chunk_rows if r["seed"] in (0, -1)}
        bar.set_postfix(eval_return=f"{np.mean([r['value'] for r in chunk_rows if r['metric'] == 'eval_return']):.2f}",
                        sps=f"{latest['sps_aggregate']:.0f}")
        write_tidy_csv(run_dir / "metrics.csv", rows)
        if checkpointer is not None and ((index + 1) % config.checkpoint_every == 0 or index + 1 == len(runner.plan)):
            checkpointer.save(index + 1, state, {"next_chunk": index + 1, "rows": rows})
    bar.close()
    if checkpointer is not None:
        checkpointer.close()
    return _finish(config, runner, run_dir, rows)


def _finish(config: MinAtarConfig, runner: Runner, run_dir: Path, rows: list[dict]) -> dict:
    import pandas as pd

    write_tidy_csv(run_dir / "metrics.csv", rows)
    frame = pd.DataFrame(rows)
    evals = frame[frame.metric == "eval_return"]
    final_step = int(evals.step.max())
    final = evals[evals.step == final_step].value.to_numpy()
    sps = frame[frame.metric == "sps_aggregate"].value.to_numpy()
    plot_lines(evals, run_dir / "learning_curve.png", hue="variant",
               title=f"{config.game} ({config.protocol} protocol), {config.seeds} seeds, 95% CI",
               xlabel="environment steps", ylabel="greedy evaluation return")
    summary = {
        "game": config.game,
        "algorithm": config.algorithm,
        "protocol": runner.agent.env.describe(),
        "seeds": config.seeds,
        "final_step": final_step,
        "final_eval_return_mean": float(final.mean()),
        "final_eval_return_per_seed": final.tolist(),
        "final_eval_return_ci95": _ci95(final),
        "sps_aggregate_median": float(np.median(sps)) if len(sps) else None,
    }
    write_json(run_dir / "summary.json", summary)
    print(format_table([{k: summary[k] for k in ("game", "algorithm", "seeds", "final_step", "final_eval_return_mean")}]))
    print(f"results in {run_dir}")
    return summary


def _ci95(values: np.ndarray) -> list[float]:
    if len(values) < 2:
        return [float(values.mean())] * 2
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


# ---------------------------------------------------------------------------------------------
# minatar-report
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MinAtarReportConfig:
    """Plot DQN / DQN+DVW / M-DQN / M-DQN+DVW side by side for any set of finished runs."""

    runs: tuple[Path, ...] = ()
    """Run folders (each with metrics.csv and config.json); default: every run under --root."""
    root: Path = Path("results/minatar")
    """Where to look for runs when --runs is not given."""
    out: Path = Path("results/minatar-report")
    """Output folder."""


def report(config: MinAtarReportConfig) -> dict:
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    runs = list(config.runs) or sorted(p.parent for p in Path(config.root).glob("*/metrics.csv"))
    if not runs:
        raise ValueError(f"no finished runs found (looked in {config.root}); pass --runs")
    frames = []
    for path in runs:
        path = Path(path)
        if not (path / "metrics.csv").exists() or not (path / "config.json").exists():
            raise ValueError(f"{path} is not a run folder (needs metrics.csv and config.json)")
        meta = json.loads((path / "config.json").read_text())
        frame = pd.read_csv(path / "metrics.csv")
        frame = frame[frame.metric == "eval_return"].copy()
        frame["game"] = meta["cli"]["game"]
        frame["protocol"] = meta["protocol"]["name"]
        frame["run"] = path.name
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    data["algorithm"] = data["variant"]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    write_tidy_csv(out / "eval_returns.csv", data.to_dict("records"))
    games = sorted(data.game.unique())
    order = [a for a in ALGORITHM_ORDER if a in set(data.algorithm)]
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, len(games), figsize=(5 * len(games), 3.8), squeeze=False)
    for ax, game in zip(axes[0], games):
        sns.lineplot(data=data[data.game == game], x="step", y="value", hue="algorithm", hue_order=order,
                     errorbar=("ci", 95), ax=ax, seed=0, n_boot=300)
        ax.set_title(game)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("greedy evaluation return")
    fig.tight_layout()
    fig.savefig(out / "minatar_report.png", dpi=110)
    plt.close(fig)
    table = []
    for (game, algorithm), group in data.groupby(["game", "algorithm"]):
        last = group[group.step == group.step.max()].value.to_numpy()
        table.append({"game": game, "algorithm": algorithm, "step": int(group.step.max()), "seeds": len(last),
                      "final_return": float(last.mean()), "ci95": _ci95(last)})
    write_json(out / "summary.json", table)
    print(format_table([{k: r[k] for k in ("game", "algorithm", "step", "seeds", "final_return")} for r in table]))
    print(f"report in {out}")
    return {"runs": [str(r) for r in runs], "table": table}


def demo_section(out: Path):
    """The MinAtar part of ``mdvi-lab demo``: the four DQN-family agents, briefly, on Breakout."""
    from experiments.demo import DemoSection

    runs = []
    for algo, dvw in (("dqn", False), ("dqn", True), ("mdqn", False), ("mdqn", True)):
        config = MinAtarConfig(
            game="breakout", algo=algo, dvw=dvw, seeds=2, steps=20_000, eval_every=5_000, eval_episodes=16,
            learning_starts=5_000, buffer_size=20_000, exploration_fraction=0.5, checkpoint_every=0,
            out=out / "minatar" / f"breakout-{algo}{'-dvw' if dvw else ''}", progress=False, overwrite=True,
        )
        run(config)
        runs.append(config.run_dir())
    summary = report(MinAtarReportConfig(runs=tuple(runs), out=out / "minatar" / "report"))
    table = format_table([{k: r[k] for k in ("algorithm", "step", "seeds", "final_return")} for r in summary["table"]])
    text = (
        "DQN, DQN+DVW, M-DQN and M-DQN+DVW (paper protocol: sticky actions 0.1, 6 actions) for 20k steps on "
        "Breakout, 2 vmapped seeds each: a smoke run of the whole pipeline (training, greedy evaluation over "
        "vmapped episodes, tidy CSV, side-by-side report). 20k steps is far too short for the curves to "
        "separate; the README shows the 2M-step learning check and the GPU runs.\n\n" + table
    )
    return DemoSection(
        title="MinAtar: DQN and M-DQN, with and without Deep Variance Weighting",
        text=text,
        figures=[out / "minatar" / "report" / "minatar_report.png"],
        files=[out / "minatar" / "report" / "eval_returns.csv"],
    )
