"""``mdvi-lab minatar`` and ``mdvi-lab minatar-report``: DQN-family agents on MinAtar.

A run trains ``seeds`` vmapped seeds of one algorithm on one game, in chunks of
``eval_every`` environment steps. Between chunks (on concrete arrays): greedy evaluation over
``eval_episodes`` vmapped episodes per seed, metrics, the progress bar, and an orbax
checkpoint. ``--resume`` continues a killed run from its newest complete checkpoint and ends
with exactly the metrics of an uninterrupted run (CPU; every random draw is a function of the
saved state). The saved ``config.json`` is the run's identity: a resume with any setting that
changes the computation is refused with the list of differences (only
:data:`MUTABLE_ON_RESUME` may change).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Literal

import jax
import numpy as np
from tqdm.auto import tqdm

from agents.dqn import ALGORITHMS, AlgorithmName, DQNAgent, DQNConfig, get_algorithm
from envs.minatar import GAMES, PROTOCOLS, make
from experiments import stats
from experiments.checkpoint import Checkpointer, pause_point
from experiments.distributed import (
    Cluster,
    SeedLayout,
    agree,
    broadcast_from_primary,
    cluster_from,
    initialize,
    is_primary,
)
from experiments.plotting import figure, plot_lines
from experiments.results import (
    RunDir,
    RunExistsError,
    atomic_path,
    check_output_folder,
    flat_config,
    format_table,
    write_json,
    write_tidy_csv,
)

CHUNK_METRICS = ("loss", "q_taken", "variance_loss", "weight_mean", "weight_min", "weight_max", "scale", "epsilon")
MUTABLE_ON_RESUME = (
    "cli.resume", "cli.progress", "cli.overwrite", "cli.checkpoint_every", "cli.out",
    "cli.shard", "cli.coordinator_address", "cli.num_processes", "cli.process_id",
)
"""Config fields a resume may change: none of them changes what is computed (where the seeds
run, on how many devices and hosts, does not)."""
SEED_FIELDS = ("cli.seed", "cli.seeds", "cli.prng")
"""Config fields that choose seeds; a report pools runs that differ only in these."""
MAX_STEPS = 2**31 - 1
OFFICIAL_10M_RETURNS = {
    "asterix": {"dqn": 20.0, "dqn+dvw": 30.0, "mdqn": 42.0, "mdqn+dvw": 42.0},
    "breakout": {"dqn": 37.0, "dqn+dvw": 50.0, "mdqn": 62.0, "mdqn+dvw": 80.0},
    "freeway": {"dqn": 58.0, "dqn+dvw": 58.0, "mdqn": 62.0, "mdqn+dvw": 62.0},
    "seaquest": {"dqn": 27.0, "dqn+dvw": 48.0, "mdqn": 89.0, "mdqn+dvw": 87.0},
    "space_invaders": {"dqn": 125.0, "dqn+dvw": 155.0, "mdqn": 185.0, "mdqn+dvw": 257.0},
}
"""Greedy evaluation returns after 10M environment steps (5 seeds) of Kitamura, Kozuno, Tang,
Vieillard, Valko, Yang, Chen, Munos, Pietquin, Geist, Szepesvari, Kumagai, Nishikawa, Grill,
Sakakibara (2023), "Regularization and Variance-Weighted Regression Achieves Minimax Optimality
in Linear MDPs: Theory and Practice", ICML 2023, arXiv 2305.13185, Sec. 7.3 (MinAtar): read off
the learning curves published with the paper's official code (rolling mean over 50 episodes),
so approximate (a few percent; Breakout M-DQN+DVW is noisy; Space Invaders M-DQN+DVW lies
between 250 and 265)."""
"""The agent counts environment steps in int32."""


@dataclasses.dataclass(frozen=True)
class MinAtarConfig:
    """Train DQN / M-DQN (optionally with DVW) on a MinAtar game, many seeds at once."""

    game: Literal[GAMES] = "breakout"  # type: ignore[valid-type]
    algo: AlgorithmName = "mdqn"
    """Algorithm: dqn or mdqn, optionally +dvw (official separate variance network) or +dvw-shared."""
    seeds: int = 4
    """Independent seeds, vmapped in one program."""
    steps: float = 1e6
    """Environment steps per seed (accepts 2e6)."""
    protocol: Literal[tuple(PROTOCOLS)] = "paper"  # type: ignore[valid-type]
    """paper: original MinAtar (sticky 0.1, 6 actions, 10k cap); gymnax: gymnax-native."""
    eval_every: int = 100_000
    """Environment steps between evaluations (a multiple of --agent.target-period)."""
    agent: DQNConfig = dataclasses.field(default_factory=DQNConfig)
    """The agent's hyperparameters (its algorithm and total steps come from --algo and --steps)."""
    seed: int = 0
    """Master seed."""
    prng: Literal["philox2x32", "threefry2x32"] = "philox2x32"
    """PRNG implementation. JAX lowers threefry with rolled loops on CPU (to keep compiles
    short), which makes every random draw a small while loop; Philox (Salmon et al. 2011,
    Random123) lowers without loops and trains about twice as fast here."""
    out: Path | None = None
    """Run folder (default results/minatar/<game>-<algorithm>-<protocol>)."""
    resume: bool = False
    """Continue from the run folder's newest complete checkpoint."""
    checkpoint_every: int = 1
    """Chunks between checkpoints (0: never)."""
    overwrite: bool = False
    """Replace the run already in the run folder (otherwise such a folder is refused)."""
    progress: bool = True
    shard: bool = False
    """Shard the seed axis over every device (of every process) with jax.sharding; --seeds must
    be a multiple of the device count. Same metrics as the unsharded run."""
    coordinator_address: str | None = None
    """Multi-host: host:port of process 0 for jax.distributed.initialize (default
    $JAX_COORDINATOR_ADDRESS); each process runs the same command with its own --process-id."""
    num_processes: int | None = None
    """Multi-host: number of processes (default $JAX_NUM_PROCESSES)."""
    process_id: int | None = None
    """Multi-host: this process's index, 0 writes results and checkpoints (default $JAX_PROCESS_ID)."""

    def __post_init__(self):
        get_algorithm(self.algo)
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"seeds must be an integer >= 1, got {self.seeds!r}")
        steps = self.steps
        if not (isinstance(steps, (int, float)) and math.isfinite(steps) and float(steps).is_integer()
                and 1 <= steps <= MAX_STEPS):
            raise ValueError(f"steps must be a whole number in [1, {MAX_STEPS}] (an int32 count), got {steps}")
        defaults = DQNConfig()
        for field, flag, value in (("algorithm", "--algo", self.algo), ("total_steps", "--steps", int(steps))):
            if getattr(self.agent, field) not in (getattr(defaults, field), value):
                raise ValueError(f"agent.{field} is set by {flag}; leave --agent.{field.replace('_', '-')} alone")
        if isinstance(self.checkpoint_every, bool) or not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        agent = self.agent_config()
        period = agent.target_period
        if not isinstance(self.eval_every, int) or self.eval_every < period or self.eval_every % period:
            raise ValueError(f"eval_every ({self.eval_every}) must be a positive multiple of target_period ({period})")
        if agent.num_periods < 1:
            raise ValueError(
                f"steps ({agent.total_steps}) must exceed learning_starts ({agent.learning_starts}) "
                f"by at least one target period ({period})"
            )
        if self.resume and not self.checkpoint_every:
            raise ValueError("--resume needs checkpoints: set --checkpoint-every to 1 or more")
        cluster = self.cluster()
        if cluster is not None and cluster.num_processes > 1 and not self.shard:
            raise ValueError("a multi-process run shards its seeds over every process's devices: pass --shard")

    def cluster(self) -> Cluster | None:
        """The multi-process cluster named by the flags or the environment (None: one process)."""
        return cluster_from(self.coordinator_address, self.num_processes, self.process_id)

    @property
    def algorithm(self) -> str:
        return self.algo

    def run_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return Path("results/minatar") / f"{self.game}-{get_algorithm(self.algo).slug}-{self.protocol}"

    def agent_config(self) -> DQNConfig:
        """The agent's config: ``agent`` with the algorithm and step count of this run."""
        return dataclasses.replace(self.agent, algorithm=self.algo, total_steps=int(self.steps))


def num_chunks(agent_config: DQNConfig, eval_every: int) -> int:
    per_chunk = eval_every // agent_config.target_period
    return -(-agent_config.num_periods // per_chunk)


def chunk_plan(agent_config: DQNConfig, eval_every: int) -> list[int]:
    """Target periods per chunk: equal chunks of ``eval_every`` steps, the last one shorter."""
    per_chunk = eval_every // agent_config.target_period
    total = agent_config.num_periods
    plan = [per_chunk] * (total // per_chunk)
    if total % per_chunk:
        plan.append(total % per_chunk)
    return plan


def available_memory() -> tuple[int, str]:
    """Bytes the run may use: the accelerator's memory limit, or the host's available memory."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        limit = (device.memory_stats() or {}).get("bytes_limit")
        if limit:
            return int(limit), f"{device.device_kind} memory"
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host memory"


# A tidy metrics row held in Python (and in each checkpoint's JSON record), in bytes: generous.
ROW_BYTES = 400


def check_memory(config: MinAtarConfig, agent: DQNAgent, layout: SeedLayout | None = None) -> int:
    """Refuse, before anything is allocated, a run whose state would not fit in memory.

    The training state of every seed (replay buffer, networks, optimiser) is measured from its
    abstract shapes and counted twice (XLA keeps the input and the output of a chunk); the
    metrics rows grow with the number of chunks. A sharded run counts the seeds that share one
    memory: one accelerator's, or one host's for CPU devices; with several processes, process
    0 also holds a gathered copy of the whole state for each checkpoint. Returns the estimate
    in bytes.
    """
    state = jax.eval_shape(agent.init, jax.random.key(0, impl=config.prng))
    per_seed = sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    chunks = num_chunks(agent.config, config.eval_every)
    rows = chunks * (config.seeds * (len(CHUNK_METRICS) + 4) + 1)
    seeds_here = config.seeds
    if layout is not None and layout.shard:
        on_cpu = layout.devices[0].platform == "cpu"
        seeds_here = layout.seeds_per_device * (jax.local_device_count() if on_cpu else 1)
    needed = 2 * seeds_here * per_seed + rows * ROW_BYTES
    if jax.process_count() > 1 and config.checkpoint_every:
        needed += config.seeds * per_seed
    have, what = available_memory()
    if needed > have:
        gib = 2**30
        raise ValueError(
            f"the run needs about {needed / gib:.3g} GiB ({seeds_here} seeds x {2 * per_seed / gib:.3g} GiB of "
            f"training state, {rows} metrics rows over {chunks} chunks), more than the {have / gib:.3g} GiB of "
            f"{what}; lower --seeds, --agent.buffer-size or --steps, raise --eval-every, or shard over more devices"
        )
    return needed


class Runner:
    """The chunked training loop of one run (all seeds vmapped; sharded over devices with --shard)."""

    def __init__(self, config: MinAtarConfig):
        self.config = config
        self.agent_config = config.agent_config()
        self.env = make(config.game, config.protocol)
        self.agent = DQNAgent(self.agent_config, self.env)
        self.layout = SeedLayout(config.seeds, config.shard)
        check_memory(config, self.agent, self.layout)
        self.plan = chunk_plan(self.agent_config, config.eval_every)
        agent = self.agent
        self._init = self.layout.map(lambda k: agent.warmup(agent.init(k)))
        self._evaluate = self.layout.map(agent.evaluate, in_axes=(0, 0))
        self._compiled = {}

    def keys(self):
        seed_keys = jax.random.split(jax.random.key(self.config.seed, impl=self.config.prng), self.config.seeds)
        pairs = jax.vmap(jax.random.split)(seed_keys)
        return pairs[:, 0], pairs[:, 1]  # training keys, evaluation keys

    def initial_state(self):
        train_keys, _ = self.keys()
        return self._init(self.layout.put(train_keys))

    def _chunk_program(self, state, periods: int):
        """The compiled chunk of ``periods`` target periods (compiled outside the timed region)."""
        if periods not in self._compiled:
            agent = self.agent
            program = self.layout.map(lambda s: agent.train_chunk(s, periods))
            self._compiled[periods] = program.lower(state).compile()
        return self._compiled[periods]

    def run_chunk(self, state, index: int):
        """Train chunk ``index``, evaluate, and return ``(state, rows)`` of tidy metrics.

        Every process calls it (the metrics are gathered from every device); the rows are the
        same on every process, and only process 0 writes them.
        """
        _, eval_keys = self.keys()
        periods = self.plan[index]
        program = self._chunk_program(state, periods)
        started = time.perf_counter()
        state, chunk_stats = program(state)
        jax.block_until_ready(state.step)
        seconds = time.perf_counter() - started
        chunk_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(eval_keys, index)
        returns, lengths, finished = self._evaluate(state.params, self.layout.put(chunk_keys))
        steps, returns, lengths, finished, chunk_stats = self.layout.host_values(
            (state.step, returns, lengths, finished, chunk_stats)
        )
        step = int(steps[0])
        rows = []
        algorithm = self.config.algo
        for seed in range(self.config.seeds):
            def add(metric, value, seed=seed):
                rows.append({"variant": algorithm, "seed": seed, "step": step, "metric": metric, "value": float(value)})

            add("eval_return", returns[seed].mean())
            add("eval_length", lengths[seed].mean())
            add("eval_finished", finished[seed].mean())
            episodes = int(chunk_stats.episodes[seed])
            if episodes:
                add("train_return", float(chunk_stats.episode_return_sum[seed]) / episodes)
            for name in CHUNK_METRICS:
                add(name, getattr(chunk_stats, name)[seed])
        steps_done = self.plan[index] * self.agent_config.target_period * self.config.seeds
        rows.append({"variant": algorithm, "seed": -1, "step": step, "metric": "sps_aggregate", "value": steps_done / seconds})
        return state, rows


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _write_metrics(path: Path, rows: list[dict], chunk: int) -> None:
    """``metrics.csv``, atomically; the pause point lies between the write and the rename."""
    with atomic_path(path) as tmp:
        write_tidy_csv(tmp, rows)
        pause_point("metrics-write", chunk)


def _resume_point(config: MinAtarConfig, runner: Runner, checkpointer: Checkpointer | None, state):
    """``(state, next chunk, rows)`` from the newest complete checkpoint, or the start, saying which.

    Process 0 reads the checkpoint (into the gathered layout) and sends it to every process;
    each places its own seeds on its devices. The rows are process 0's only.
    """
    layout = runner.layout
    host_like = layout.to_host(state)
    restored = checkpointer.restore_latest(host_like, say=_say) if checkpointer is not None else None
    found = broadcast_from_primary(np.asarray(restored is not None))
    if not bool(found):
        if is_primary():
            _say(f"{config.run_dir()} has no complete checkpoint; starting it from the beginning")
        return state, 0, []
    if restored is not None:
        _, host_state, extra = restored
        next_chunk, rows = extra["next_chunk"], extra["rows"]
    else:  # another process: process 0 sends the state
        host_state, next_chunk, rows = host_like, 0, []
    next_chunk = int(broadcast_from_primary(np.asarray(next_chunk, np.int64)))
    if jax.process_count() > 1:
        host_state = broadcast_from_primary(jax.tree.map(np.asarray, host_state))
    state = layout.from_host(host_state, state)  # one process: restored straight into the run's layout
    if is_primary():
        print(f"resuming {config.run_dir()} at chunk {next_chunk}/{len(runner.plan)}")
    return state, next_chunk, rows


def _open_run_dir(config: MinAtarConfig, payload: dict) -> None:
    """Process 0 creates (or checks, on --resume) the run folder; every process learns the outcome."""
    run_dir = config.run_dir()
    ok = False
    try:
        if is_primary():
            try:
                RunDir(run_dir, payload, overwrite=config.overwrite, resume=config.resume, mutable=MUTABLE_ON_RESUME)
            except RunExistsError as error:
                if (run_dir / "checkpoints").exists():
                    raise RunExistsError(f"{error}; or pass --resume to continue it") from None
                raise
        ok = True
    finally:
        agree(ok, f"open the run folder {run_dir}")


def run(config: MinAtarConfig) -> dict:
    """Train one run; with several processes every process calls it and process 0 writes the results."""
    initialize(config.cluster())
    runner = Runner(config)
    run_dir = config.run_dir()
    agent_config = runner.agent_config
    primary = is_primary()
    payload = {"cli": config, "agent": agent_config, "protocol": runner.env.describe(), "chunks": runner.plan}
    _open_run_dir(config, payload)
    checkpointer = Checkpointer(run_dir / "checkpoints") if config.checkpoint_every and primary else None
    state, start_chunk, rows = runner.initial_state(), 0, []
    if config.resume:
        state, start_chunk, rows = _resume_point(config, runner, checkpointer, state)

    total_steps = sum(runner.plan) * agent_config.target_period + agent_config.learning_starts
    done_steps = sum(runner.plan[:start_chunk]) * agent_config.target_period + agent_config.learning_starts
    bar = tqdm(total=total_steps, initial=done_steps, unit="step", desc=f"{config.game} {config.algo}",
               disable=not (config.progress and primary), unit_scale=True)
    for index in range(start_chunk, len(runner.plan)):
        state, chunk_rows = runner.run_chunk(state, index)
        pause_point("chunk", index + 1)
        rows += chunk_rows
        bar.update(runner.plan[index] * agent_config.target_period)
        latest = {r["metric"]: r["value"] for r in chunk_rows if r["seed"] in (0, -1)}
        bar.set_postfix(eval_return=f"{np.mean([r['value'] for r in chunk_rows if r['metric'] == 'eval_return']):.2f}",
                        sps=f"{latest['sps_aggregate']:.0f}")
        if primary:
            _write_metrics(run_dir / "metrics.csv", rows, index + 1)
        if config.checkpoint_every and ((index + 1) % config.checkpoint_every == 0 or index + 1 == len(runner.plan)):
            host_state = runner.layout.to_host(state)  # a collective: every process takes part
            if checkpointer is not None:
                checkpointer.save(index + 1, host_state, {"next_chunk": index + 1, "rows": rows})
    bar.close()
    if checkpointer is not None:
        checkpointer.close()
    if not primary:
        return {}
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
        "algorithm": config.algo,
        "protocol": runner.env.describe(),
        "seeds": config.seeds,
        "final_step": final_step,
        "final_eval_return_mean": float(final.mean()),
        "final_eval_return_per_seed": final.tolist(),
        "final_eval_return_ci95": list(stats.interval(final, kind="normal")),
        "sps_aggregate_median": float(np.median(sps)) if len(sps) else None,
        "layout": runner.layout.describe(),
    }
    write_json(run_dir / "summary.json", summary)
    print(format_table([{k: summary[k] for k in ("game", "algorithm", "seeds", "final_step", "final_eval_return_mean")}]))
    print(f"results in {run_dir}")
    return summary


# ---------------------------------------------------------------------------------------------
# minatar-report
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MinAtarReportConfig:
    """Plot finished MinAtar runs side by side: one curve per configuration, one panel per game."""

    runs: tuple[Path, ...] = ()
    """Run folders (each with metrics.csv and config.json); default: every run under --root."""
    root: Path = Path("results/minatar")
    """Where to look for runs when --runs is not given."""
    out: Path = Path("results/minatar-report")
    """Output folder (never a run folder)."""
    overwrite: bool = False
    """Replace an earlier report in the output folder."""
    official: bool = True
    """Draw the paper's 10M-step returns (dashed, per algorithm) beside the curves and tabulate them."""


REPORT_FILES = ("eval_returns.csv", "summary.json", "minatar_report.png")
RUN_FILES = ("config.json", "metrics.csv", "checkpoints")


def _load_run(path: Path):
    """``(flat config, eval_return rows)`` of a finished run, or a ValueError naming the run."""
    import json

    import pandas as pd

    if not (path / "metrics.csv").exists() or not (path / "config.json").exists():
        raise ValueError(f"{path} is not a run folder (needs metrics.csv and config.json)")
    try:
        meta = json.loads((path / "config.json").read_text())
        frame = pd.read_csv(path / "metrics.csv")
    except (ValueError, OSError) as error:  # pandas' EmptyDataError and json's errors are ValueErrors
        raise ValueError(f"run {path} cannot be read ({type(error).__name__}: {error})") from None
    if not {"metric", "seed", "step", "value"} <= set(frame.columns):
        raise ValueError(f"run {path}: metrics.csv lacks the tidy columns (metric, seed, step, value)")
    frame = frame[frame.metric == "eval_return"].copy()
    if frame.empty:
        raise ValueError(f"run {path} has no evaluation rows in metrics.csv (empty or unfinished run)")
    flat = {k: v for k, v in flat_config(meta).items() if not k.startswith(MUTABLE_ON_RESUME)}
    return flat, frame


def _group_labels(configs: dict[str, dict]) -> dict[str, str]:
    """A label per group: its algorithm, plus every user setting in which the groups of the same
    game differ (what the game itself sets, e.g. its episode limit, never names a curve)."""
    labels = {}
    for game in {flat.get("cli.game") for flat in configs.values()}:
        same_game = {key: flat for key, flat in configs.items() if flat.get("cli.game") == game}
        names = sorted({name for flat in same_game.values() for name in flat})
        differing = [n for n in names if len({repr(flat.get(n)) for flat in same_game.values()}) > 1]
        shown = [n for n in differing if n.startswith("cli.") and n not in ("cli.algo", "cli.game")]
        if not shown:  # groups that differ only in derived fields: name those
            shown = [n for n in differing if not n.startswith(("agent.algorithm", "cli.algo", "cli.game"))]
        for key, flat in same_game.items():
            extra = ", ".join(f"{n.removeprefix('cli.')}={flat.get(n)}" for n in shown)
            labels[key] = flat["cli.algo"] + (f" ({extra})" if extra else "")
    return labels


def report(config: MinAtarReportConfig) -> dict:
    """Group runs by every setting that changes the computation (seeds pooled), refuse duplicates."""
    import json

    import pandas as pd
    import seaborn as sns

    out = check_output_folder(Path(config.out))
    if any((out / name).exists() for name in RUN_FILES):
        raise ValueError(f"report output {out} is a run folder; choose another --out")
    if any((out / name).exists() for name in REPORT_FILES) and not config.overwrite:
        raise ValueError(f"{out} already holds a report; pass --overwrite to replace it, or choose another --out")
    runs = [Path(p) for p in config.runs] or sorted(p.parent for p in Path(config.root).glob("*/metrics.csv"))
    if not runs:
        raise ValueError(f"no finished runs found (looked in {config.root}); pass --runs")
    groups, frames, seen = {}, [], {}
    for path in runs:
        flat, frame = _load_run(path)
        group = {k: v for k, v in flat.items() if not k.startswith(SEED_FIELDS)}
        group_key = json.dumps(group, sort_keys=True)
        groups[group_key] = group
        # one seed's computation: its group, master seed, PRNG and index (split(key, n) is prefix-stable)
        for seed in sorted(frame.seed.unique()):
            unit = (group_key, flat.get("cli.seed"), flat.get("cli.prng"), int(seed))
            if unit in seen:
                raise ValueError(
                    f"seed {seed} of run {path} repeats seed {seed} of run {seen[unit]} (same settings and seed); "
                    "pass each run once"
                )
            seen[unit] = path
        frame["game"] = flat["cli.game"]
        frame["group"] = group_key
        frame["run"] = str(path)
        frames.append(frame)
    data = pd.concat(frames, ignore_index=True)
    labels = _group_labels(groups)
    data["algorithm"] = data["group"].map(labels)
    data["unit"] = data["run"] + "#" + data["seed"].astype(str)
    order = sorted(labels.values(), key=lambda label: (list(ALGORITHMS).index(label.split(" ")[0]), label))
    write_tidy_csv(out / "eval_returns.csv", data.drop(columns=["group"]).to_dict("records"))
    games = sorted(data.game.unique())
    palette = dict(zip(order, sns.color_palette(n_colors=len(order))))
    with figure(out / "minatar_report.png", 1, len(games), figsize=(5 * len(games), 3.8), squeeze=False) as (_, axes):
        for ax, game in zip(axes[0], games):
            panel = data[data.game == game]
            sns.lineplot(data=panel, x="step", y="value", hue="algorithm",
                         hue_order=[o for o in order if o in set(panel.algorithm)], palette=palette,
                         errorbar=("ci", 95), ax=ax, seed=0, n_boot=300)
            for label in sorted(set(panel.algorithm)) if config.official else ():
                official = OFFICIAL_10M_RETURNS.get(game, {}).get(label.split(" ")[0])
                if official is not None:
                    ax.axhline(official, color=palette[label], linestyle="--", linewidth=1)
            if config.official:
                ax.text(0.01, 0.99, "dashed: paper, 10M steps", transform=ax.transAxes, va="top", fontsize=7)
            ax.set_title(game)
            ax.set_xlabel("environment steps")
            ax.set_ylabel("greedy evaluation return")
    table = []
    for (game, label), group in data.groupby(["game", "algorithm"]):
        last = group[group.step == group.step.max()].value.to_numpy()
        table.append({"game": game, "algorithm": label, "step": int(group.step.max()), "seeds": len(last),
                      "final_return": float(last.mean()), "ci95": list(stats.interval(last, kind="normal")),
                      "paper_10M": OFFICIAL_10M_RETURNS.get(game, {}).get(label.split(" ")[0])})
    write_json(out / "summary.json", table)
    columns = ("game", "algorithm", "step", "seeds", "final_return") + (("paper_10M",) if config.official else ())
    print(format_table([{k: r[k] for k in columns} for r in table]))
    print(f"report in {out}")
    return {"runs": [str(r) for r in runs], "table": table}


def demo_section(out: Path):
    """The MinAtar part of ``mdvi-lab demo``: the four DQN-family agents, briefly, on Breakout."""
    from experiments.demo import DemoSection

    runs = []
    for algo in ("dqn", "dqn+dvw", "mdqn", "mdqn+dvw"):
        config = MinAtarConfig(
            game="breakout", algo=algo, seeds=2, steps=20_000, eval_every=5_000,
            agent=DQNConfig(eval_episodes=16, learning_starts=5_000, buffer_size=20_000, exploration_fraction=0.5),
            checkpoint_every=0, out=out / "minatar" / f"breakout-{get_algorithm(algo).slug}", progress=False,
            overwrite=True,
        )
        run(config)
        runs.append(config.run_dir())
    summary = report(MinAtarReportConfig(runs=tuple(runs), out=out / "minatar" / "report", overwrite=True))
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
