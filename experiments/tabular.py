"""``mdvi-lab tabular``: exact and sampled MDVI on a tabular MDP with known ground truth.

Runs exact MDVI and, for each ``M`` in ``samples_per_pair``, sampled MDVI over ``seeds``
vmapped seeds, recording the optimality gap ``||V* - V^{pi_k}||_inf`` of every iterate.
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

from envs import tabular as tabular_envs
from experiments.plotting import plot_lines
from experiments.resources import check_memory
from experiments.results import RunDir, format_table, tidy_rows
from experiments.stats import mean_se
from mdvi import Regularization, loop
from mdvi import tabular as solvers
from mdvi.divergences import get_divergence


@dataclasses.dataclass(frozen=True)
class TabularConfig:
    """Exact and sampled MDVI on a tabular MDP."""

    env: Literal["garnet", "chain", "gridworld", "arm"] = "garnet"
    """Which generator builds the MDP."""
    num_states: int = 50
    """States of a garnet or chain."""
    num_actions: int = 4
    """Actions of a garnet (arms of the arm MDP)."""
    branching: int = 5
    """Garnet successors per state-action pair (N_B)."""
    grid_size: int = 6
    """Side of the gridworld."""
    slip: float = 0.1
    """Slip probability of the chain and gridworld."""
    epsilon: float = 0.5
    """Half the action gap of the arm MDP."""
    discount: float = 0.9
    """Discount gamma in [0, 1)."""
    env_seed: int = 0
    """Seed of the MDP generator."""
    alpha: float | None = None
    """MDVI's alpha = tau / (tau + kappa); default gamma (Kozuno et al. 2022)."""
    beta: float = math.inf
    """MDVI's inverse temperature 1 / (tau + kappa); inf is the hard-max limit."""
    divergence: str = "kl"
    """Regularizer of the greedy step and soft value (kl, alpha:1.5, chi2, ...; non-KL runs the policy form)."""
    iterations: int = 60
    """MDVI iterations K."""
    samples_per_pair: tuple[int, ...] = (1, 4, 16, 64)
    """Generative-model draws M per pair and iteration, one sampled run per value."""
    seeds: int = 100
    """Independent sampled runs per M (vmapped)."""
    seed: int = 0
    """Master seed of the sampled runs."""
    chunk: int = 20
    """Iterations per jitted call (progress-bar granularity)."""
    out: Path = Path("results/tabular")
    """Output folder."""
    overwrite: bool = False
    """Replace the run already in --out (otherwise such a folder is refused)."""
    progress: bool = True
    """Show progress bars."""

    def build_mdp(self) -> tabular_envs.TabularMDP:
        if self.env == "garnet":
            return tabular_envs.garnet(
                self.num_states, self.num_actions, self.branching, self.discount, self.env_seed
            )
        if self.env == "chain":
            return tabular_envs.chain(self.num_states, self.slip, self.discount)
        if self.env == "gridworld":
            return tabular_envs.gridworld(self.grid_size, self.slip, self.discount)
        if self.env == "arm":
            return tabular_envs.arm_mdp(self.discount, self.epsilon, self.num_actions)
        raise ValueError(f"unknown env {self.env!r}; choose garnet, chain, gridworld or arm")

    def __post_init__(self):
        try:
            get_divergence(self.divergence)
        except ValueError as error:
            raise ValueError(f"divergence: {error}") from None

    def regularization(self) -> Regularization:
        alpha = self.discount if self.alpha is None else self.alpha
        return Regularization.from_alpha_beta(alpha, self.beta)

    def shape(self) -> tuple[int, int]:
        """``(S, A)`` of the MDP :meth:`build_mdp` would build, without building it."""
        if self.env == "garnet":
            return self.num_states, self.num_actions
        if self.env == "chain":
            return self.num_states, 2
        if self.env == "gridworld":
            return self.grid_size**2, 4
        return self.num_actions + 2, self.num_actions  # arm: a decision state, an arm state each, and a sink


# Bytes per held row of the tidy metrics table (a Python dict of five fields).
_ROW_BYTES = 400


def required_bytes(config: TabularConfig) -> int:
    """Peak memory of a run, from its largest arrays (float64, int32 indices).

    The generators build the dense ``P`` (``S A S``) and the model may copy it; each exact
    policy evaluation solves an ``S x S`` system, once per seed when vmapped; the iid sampler
    holds ``S A M`` uniforms, indices and gathered values per seed; every (seed, iteration)
    becomes a row of the metrics table.
    """
    S, A = config.shape()
    K, seeds = config.iterations, config.seeds
    exact = 2 * S * A * S * 8 + 3 * S * S * 8
    per_seed = [S * A * M * 20 + 2 * S * S * 8 + 4 * S * A * 8 for M in config.samples_per_pair]
    sampled = seeds * max(per_seed, default=0)
    rows = _ROW_BYTES * K * (1 + seeds * len(config.samples_per_pair))
    return exact + sampled + rows


def _validate(config: TabularConfig) -> None:
    if config.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {config.iterations}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    if config.chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {config.chunk}")
    if any(m < 1 for m in config.samples_per_pair):
        raise ValueError(f"samples_per_pair must all be >= 1, got {config.samples_per_pair}")
    if min(config.shape()) < 1:
        raise ValueError(f"the {config.env} MDP needs at least one state and one action, got (S, A) = {config.shape()}")
    what = (
        f"tabular with S = {config.shape()[0]}, A = {config.shape()[1]}, {config.seeds} seeds, "
        f"M up to {max(config.samples_per_pair, default=0)} and {config.iterations} iterations"
    )
    check_memory(required_bytes(config), what)


def run(config: TabularConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    _validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _sampled_chunk(M: int):
    """One chunk of sampled MDVI for every seed: ``(keys, states, start, size, model, regularization, v_star)``.

    The model, ``V*`` and the regularization are arguments, not closure constants: XLA would
    otherwise fold them into the program (slow compiles, a copy of ``P`` per chunk size).
    """

    def one(key, state, start, size, model, regularization, v_star):
        return solvers.run_mdvi(
            model, regularization, state, size, start=start, key=key, samples_per_pair=M, v_star=v_star
        )

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None, None, None)), static_argnums=3)


def _run(config: TabularConfig) -> dict:
    mdp = config.build_mdp()
    regularization = config.regularization()
    model = mdp.model()
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    started = time.perf_counter()
    optimum = solvers.optimal_values(model)
    v_star = optimum.v
    K = config.iterations
    rows: list[dict] = []
    summary_rows: list[dict] = []

    def progress(description: str):
        return tqdm(total=K, desc=description, disable=not config.progress, leave=False)

    # Exact MDVI, chunked for progress.
    with progress("exact MDVI") as bar:
        exact = loop.run_in_chunks(
            lambda state, start, size: solvers.run_mdvi(model, regularization, state, size, start=start, v_star=v_star),
            solvers.mdvi_init(model, regularization, config.divergence), K, config.chunk, bar.update,
        )  # fmt: skip
    rows += tidy_rows("exact", "gap", exact.gap)
    summary_rows.append(
        {"variant": "exact", "M": "-", "final_gap": float(exact.gap[-1]), "gap_se": 0.0, "calls_per_run": 0}
    )

    # Sampled MDVI: all seeds in one vmapped call per chunk.
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    init = solvers.mdvi_init(model, regularization, config.divergence)
    seeded_init = jax.tree.map(lambda x: np.broadcast_to(x, (config.seeds, *x.shape)), init)
    for M in config.samples_per_pair:
        chunk = _sampled_chunk(M)

        def advance(states, start, size, chunk=chunk):
            return chunk(keys, states, start, size, model, regularization, v_star)

        with progress(f"sampled MDVI M={M} x{config.seeds} seeds") as bar:
            sampled = loop.run_in_chunks(advance, seeded_init, K, config.chunk, bar.update)
        variant = f"M={M}"
        rows += tidy_rows(variant, "gap", sampled.gap)
        final_gap, gap_se = mean_se(sampled.gap[:, -1])
        summary_rows.append(
            {
                "variant": variant,
                "M": M,
                "final_gap": final_gap,
                "gap_se": gap_se,
                "calls_per_run": int(sampled.total_samples[0]),
            }
        )
    elapsed = time.perf_counter() - started

    csv_path = run_dir.write_metrics(rows)
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame = frame[frame.metric == "gap"].copy()
    floor = 1e-12
    frame["value"] = frame["value"].clip(lower=floor)
    figure = plot_lines(
        frame,
        run_dir.file("gap.png"),
        title=f"MDVI on {mdp.name} (gamma={mdp.discount}, alpha={regularization.alpha:.3g}, beta={regularization.beta:g}"
        + ("" if config.divergence == "kl" else f", {config.divergence}") + ")",
        xlabel="iteration k",
        ylabel="||V* - V^{pi_k}||_inf",
        logy=True,
    )
    summary = {
        "mdp": mdp.name,
        "num_states": mdp.num_states,
        "num_actions": mdp.num_actions,
        "discount": mdp.discount,
        "alpha": regularization.alpha,
        "beta": regularization.beta,
        "divergence": get_divergence(config.divergence).name,
        "iterations": K,
        "seeds": config.seeds,
        "v_star_max": float(np.max(np.asarray(v_star))),
        "variants": summary_rows,
        "seconds": elapsed,
        "files": {"metrics": csv_path.name, "figure": figure.name},
    }
    run_dir.write_summary(summary)
    print(f"\nMDVI on {mdp.name}: gap ||V* - V^pi_K||_inf after K={K} iterations ({config.seeds} seeds)")
    print(format_table(summary_rows))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def demo_section(out: Path):
    """The tabular part of ``mdvi-lab demo``: a Garnet, exact and sampled MDVI."""
    from experiments.demo import DemoSection

    config = TabularConfig(out=out / "tabular", iterations=60, seeds=100, progress=False, overwrite=True)
    summary = run(config)
    table = format_table(summary["variants"])
    text = (
        f"Exact and sampled MDVI (alpha = gamma = {config.discount}, beta = inf) on "
        f"{summary['mdp']} with {config.seeds} vmapped seeds per M. The gap of the sampled runs "
        "shrinks as the number of generative-model draws M per pair grows; exact MDVI "
        "converges geometrically.\n\n" + table
    )
    return DemoSection(
        title="Tabular MDVI (exact and with a generative model)",
        text=text,
        figures=[config.out / "gap.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
