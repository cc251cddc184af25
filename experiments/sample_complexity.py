"""``mdvi-lab sample-complexity``: measure N*(H) and N*(d) and compare exponents with theory.

For each algorithm (tabular MDVI, LS-MDVI, VWLS-MDVI, oracle-weighted LS-MDVI) and each point
of a horizon sweep (``H = 1 / (1 - gamma)``) and of a dimension sweep (``k`` block copies of the
instance: ``d = k d_1``), find ``N*``: the smallest total number of generative-model calls
with ``P(||V* - V^{pi_K}||_inf <= eps) >= 0.9`` over ``seeds`` vmapped seeds (the protocol of
an exponent check: a horizon sweep with ``K`` growing as ``H ln H``, the exact error of the
final policy by a linear solve on the true model, and a log-log fit with seed-bootstrap
intervals). The search is on ``M``, the samples per iteration: doubling (or halving) from a
guess until the success rate crosses the level, then geometric bisection until the bracket's
ratio is at most ``precision``. All evaluations of one point share their seeds (common random
numbers). A point's random numbers and its search's first guess are functions of its identity
(algorithm, family, H, d, copies) and the master seed (``zlib.crc32`` of a canonical string
folded into the master key), never of its position in a sweep: a point run alone gives the same
``M*`` and ``N*`` as inside any sweep, and a point shared by two sweeps is searched once.
``N*`` counts every call (for VWLS-MDVI: both phases and the variance fit; its phase-2 design
is estimated, so its count varies slightly by seed and ``N`` is the mean over seeds).
Tabular MDVI samples ``ceil(M / (S A))`` draws at every pair.

A second dimension sweep (``dims``, family F4 only) varies ``d`` at one decision: F4 of
:mod:`envs.linear` is F2 with a ``(d - 4)``-dimensional action block shared by the decision state
and its risky sibling, so success stays one event at every ``d`` (block copies need all ``k``
decisions right: a union over ``k`` events that the bounds' ``d`` does not contain).

The instance family is F2 of :mod:`envs.linear` by default (a high-variance state shares the
feature coordinates of the decision state's actions, so unweighted least squares leaks its
variance into the action gap and variance weighting should matter: the ``H^4`` of
unweighted least squares against the ``H^3`` of VWLS-MDVI, Kitamura et al. 2023,
arXiv 2305.13185; the exponents compared are those of :mod:`theory.bounds`), with ``eps = 0.5`` absolute and
``K = ceil(2 H ln H)`` iterations of beta -> inf MDVI with ``alpha = gamma``. Slopes of
``log N*`` on ``log H`` (raw, and with K's ``ln H`` divided out) and on ``log d`` come with
seed-bootstrap 95% intervals (:mod:`theory.fitting`) and are set beside the exponents of
:mod:`theory.bounds`. Two fits of the horizon sweep address its lower-order terms: the slope of
``N*/ln H`` on the horizons ``H >= fit_min_horizon`` only (default 32: the stated rule for
dropping small horizons), and the leading exponent ``p`` of ``N*/ln H = a H^p + b H^(p-1)``
over every horizon (the next term modelled, :func:`theory.fitting.lower_order_fit`). Sampling
uses the exact multinomial-count trick, so a point's cost does not grow with ``M``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import zlib
from pathlib import Path
from typing import Literal, NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from envs import linear as linear_envs
from experiments.plotting import figure
from experiments.results import RunDir, format_table, write_tidy_csv
from mdvi import Regularization
from mdvi import linear as lin
from mdvi import tabular as solvers
from theory import bounds, fitting

ALGORITHMS = ("tabular", "ls", "vwls", "oracle")
LABELS = {
    "tabular": "tabular MDVI",
    "ls": "LS-MDVI (f = 1)",
    "vwls": "VWLS-MDVI",
    "oracle": "oracle-weighted (f*)",
}


@dataclasses.dataclass(frozen=True)
class SampleComplexityConfig:
    """Search N*(H) and N*(d) for MDVI variants on a linear MDP family; fit the exponents."""

    family: Literal["F1", "F2", "F3", "F4"] = "F2"
    """Instance family of envs.linear (F2: the weighting gap; F3: negative control; F1: control;
    F4: F2 with a (d - 4)-dimensional action block, at d = 6 outside its dimension sweep)."""
    horizons: tuple[int, ...] = (8, 16, 32, 64, 128)
    """Horizons H = 1 / (1 - gamma) of the horizon sweep."""
    epsilon: float = 0.5
    """Target accuracy ||V* - V^{pi_K}||_inf <= eps (absolute; also sets the action gap 2 eps)."""
    copies: tuple[int, ...] = (1, 2, 4)
    """Dimension sweep: numbers of independent block copies of the instance (d = copies * d_1)."""
    dims: tuple[int, ...] = ()
    """Dimension sweep of family F4 (one decision whose contrast spreads over the action block):
    feature dimensions d >= 6 (F4 only)."""
    dim_horizon: int = 16
    """Horizon of the dimension sweeps."""
    algorithms: tuple[Literal["tabular", "ls", "vwls", "oracle"], ...] = ALGORITHMS
    """Algorithms to measure."""
    seeds: int = 200
    """Vmapped seeds per evaluation (at least 200 for the reported numbers)."""
    success: float = 0.9
    """Required success probability."""
    iteration_constant: float = 2.0
    """K = ceil(c H ln H) iterations."""
    phase1_fraction: float = 0.2
    """VWLS-MDVI: fraction of the K iterations in the unweighted phase 1."""
    variance_ratio: float = 1.0
    """VWLS-MDVI: variance-fit draws N_sigma = ratio * M (M = samples per iteration)."""
    precision: float = 1.2
    """Stop the bisection when the bracket [lo, hi] on M has hi / lo <= precision."""
    max_doublings: int = 30
    """Cap on doubling / halving steps of the search."""
    bootstrap: int = 1000
    """Seed-bootstrap replicates of the slope intervals."""
    fit_min_horizon: float = 32.0
    """The stated rule for dropping small horizons: the tail fit uses only H >= this (at least
    three horizons), where K = ceil(2 H ln H) >= 222 and the per-point lower-order costs (the
    ceil allocation, VWLS's phase 1 and variance fit) weigh least."""
    seed: int = 0
    """Master seed (runs and bootstrap)."""
    out: Path = Path("results/sample_complexity")
    """Output folder."""
    overwrite: bool = False
    """Replace the run already in --out (otherwise such a folder is refused)."""
    progress: bool = True
    """Show progress bars."""


def _validate(config: SampleComplexityConfig) -> None:
    if not config.algorithms:
        raise ValueError("choose at least one algorithm")
    unknown = set(config.algorithms) - set(ALGORITHMS)
    if unknown:
        raise ValueError(f"unknown algorithms {sorted(unknown)}; choose from {ALGORITHMS}")
    if config.family not in linear_envs.FAMILIES:
        raise ValueError(f"unknown family {config.family!r}; choose from {sorted(linear_envs.FAMILIES)}")
    if not (config.horizons or config.copies or config.dims):
        raise ValueError("nothing to sweep: give horizons, copies or dims")
    if any(h <= 1 for h in config.horizons):
        raise ValueError(f"horizons must be > 1, got {config.horizons}")
    if len(set(config.horizons)) != len(config.horizons):
        raise ValueError(f"horizons must be distinct, got {config.horizons}")
    if config.copies and (any(c < 1 for c in config.copies) or len(set(config.copies)) != len(config.copies)):
        raise ValueError(f"copies must be distinct and >= 1, got {config.copies}")
    if config.dims:
        if config.family not in linear_envs.DIMENSION_FAMILIES:
            raise ValueError(f"dims sweeps the dimension of family F4; got family {config.family!r} (use copies)")
        if any(d < 6 for d in config.dims) or len(set(config.dims)) != len(config.dims):
            raise ValueError(f"dims must be distinct and >= 6, got {config.dims}")
    if config.seeds < 2:
        raise ValueError(f"seeds must be >= 2, got {config.seeds}")
    if not 0.0 < config.success < 1.0:
        raise ValueError(f"success must lie in (0, 1), got {config.success}")
    if not config.epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {config.epsilon}")
    if not config.precision > 1.0:
        raise ValueError(f"precision must be > 1, got {config.precision}")
    if not 0.0 < config.phase1_fraction < 1.0:
        raise ValueError(f"phase1_fraction must lie in (0, 1), got {config.phase1_fraction}")
    if not config.variance_ratio > 0:
        raise ValueError(f"variance_ratio must be > 0, got {config.variance_ratio}")
    if not config.fit_min_horizon > 1:
        raise ValueError(f"fit_min_horizon must be > 1, got {config.fit_min_horizon}")
    if config.bootstrap < 10:
        raise ValueError(f"bootstrap must be >= 10, got {config.bootstrap}")
    for h in (*config.horizons, config.dim_horizon):
        linear_envs.gap_delta(h, config.epsilon)  # raises if eps is too large for H


# ---------------------------------------------------------------------------------------------
# Batched runs (one compiled program per algorithm and MDP shape; M, K, H traced)
# ---------------------------------------------------------------------------------------------


@jax.jit
def _tabular_batch(keys, model, regularization, v_star, draws_per_pair, num_iterations):
    def one(key):
        init = solvers.mdvi_init(model, regularization)
        run = solvers.iterate_mdvi(
            model, regularization, init, num_iterations, key=key, samples_per_pair=draws_per_pair, sampler="multinomial"
        )
        return solvers.policy_gap(model, v_star, run.state, regularization)

    return jax.vmap(one)(keys)


@jax.jit
def _ls_batch(keys, model, regularization, v_star, allocation, num_iterations):
    def one(key):
        init = solvers.mdvi_init(model.tabular, regularization)
        run = lin.iterate_ls_mdvi(model, regularization, init, allocation, num_iterations, key=key)
        return solvers.policy_gap(model.tabular, v_star, run.state, regularization), run.total_samples

    return jax.vmap(one)(keys)


@jax.jit
def _vwls_batch(keys, model, regularization, v_star, phase1, variance, samples_per_iteration, phases):
    def one(key):
        run = lin.iterate_vwls_mdvi(key, model, regularization, phase1, variance, samples_per_iteration, phases)
        return solvers.policy_gap(model.tabular, v_star, run.state, regularization), run.total_samples

    return jax.vmap(one)(keys)


class Evaluation(NamedTuple):
    samples_per_iteration: int  # M
    calls: float  # mean total generative-model calls per run (N)
    success: np.ndarray  # [seeds] bool: ||V* - V^{pi_K}||_inf <= eps

    @property
    def rate(self) -> float:
        return float(self.success.mean())


def point_identity(algorithm: str, family: str, horizon: float, dim: int, copies: int = 1) -> str:
    """The canonical name of one sweep point: what it measures, never where it sits in a sweep.

    ``algorithm``, instance family, horizon ``H``, feature dimension ``d`` and the number of block
    copies (1 unless the instance is :func:`envs.linear.block_copies` of the family).
    """
    return f"algorithm={algorithm};family={family};copies={int(copies)};H={float(horizon)!r};d={int(dim)}"


def identity_tag(identity: str) -> int:
    """A stable 31-bit integer of a point identity (``zlib.crc32``; Python's ``hash`` is salted)."""
    return zlib.crc32(identity.encode("utf-8")) & 0x7FFFFFFF


def point_key(seed: int, identity: str):
    """The PRNG key of a point: the master key ``key(seed)`` folded with :func:`identity_tag`.

    A point draws the same random numbers alone or inside any sweep (issue 18, item 3).
    """
    return jax.random.fold_in(jax.random.key(seed), identity_tag(identity))


class Point:
    """One instance of a sweep (a horizon and a dimension), prepared on the host.

    Its random numbers (seeds of every evaluation, bootstrap) and its search's starting guess
    are functions of its identity (:func:`point_identity`) and the master seed only, so a point
    gives the same ``M*`` and ``N*`` run alone or inside any sweep.
    """

    def __init__(self, config: SampleComplexityConfig, horizon: float, copies: int = 1, dim: int | None = None):
        family = config.family
        if dim is None:
            base = linear_envs.FAMILIES[family](horizon, epsilon=config.epsilon)
        elif family in linear_envs.DIMENSION_FAMILIES:
            base = linear_envs.FAMILIES[family](horizon, dim=dim, epsilon=config.epsilon)
        else:
            raise ValueError(f"dim is a parameter of family F4 only, got dim={dim} for family {family!r}")
        self.mdp = linear_envs.block_copies(base, copies) if copies > 1 else base
        self.family = family
        self.horizon, self.copies, self.epsilon = float(horizon), copies, config.epsilon
        self.dim = self.mdp.dim
        self.seed, self.seeds = config.seed, config.seeds
        self.num_iterations = bounds.num_iterations(horizon, config.iteration_constant)
        self.phase1_iterations = max(1, math.ceil(config.phase1_fraction * self.num_iterations))
        self.variance_ratio = config.variance_ratio
        self.regularization = Regularization.from_alpha_beta(self.mdp.discount, math.inf)
        self.model = lin.linear_model(self.mdp)
        self.v_star = solvers.optimal_values(self.model.tabular).v
        self.design = lin.design(self.model)
        f_star = np.asarray(lin.oracle_weights(self.model, self.v_star))
        self.oracle_weights = f_star
        self.oracle_design = lin.design(self.model, f_star)
        S, A = self.mdp.num_states, self.mdp.num_actions
        self.pairs = S * A
        self.pad = max(len(self.design.support), len(self.oracle_design.support))
        self._keys = {}

    def identity(self, algorithm: str) -> str:
        return point_identity(algorithm, self.family, self.horizon, self.dim, self.copies)

    def keys(self, algorithm: str):
        """``[seeds]`` keys of ``algorithm`` at this point (shared by all its evaluations)."""
        if algorithm not in self._keys:
            self._keys[algorithm] = jax.random.split(point_key(self.seed, self.identity(algorithm)), self.seeds)
        return self._keys[algorithm]

    def initial_guess(self, algorithm: str) -> int:
        """The search's first ``M``: ``8 |support| (H / 8)^(a - 1)``, ``a`` the bound's H exponent.

        A function of the point alone (``N ~ K M`` with ``K ~ H ln H``, so ``M ~ H^(a - 1)``), so the
        search path, and with it ``M*`` and ``N*``, does not depend on the other points of a sweep.
        """
        exponent = bounds.get_bound(algorithm).horizon_exponent
        return max(1, int(round(8 * max(len(self.design.support), 1) * (self.horizon / 8.0) ** (exponent - 1.0))))

    def evaluate(self, algorithm: str, M: int) -> Evaluation:
        eps = self.epsilon
        if algorithm == "tabular":
            per_pair = max(1, math.ceil(M / self.pairs))
            gaps = _tabular_batch(
                self.keys(algorithm), self.model.tabular, self.regularization, self.v_star, per_pair, self.num_iterations
            )
            calls = float(self.num_iterations * self.pairs * per_pair)
        elif algorithm in ("ls", "oracle"):
            design = self.design if algorithm == "ls" else self.oracle_design
            weights = None if algorithm == "ls" else self.oracle_weights
            allocation = lin.allocate(self.model, design, M, weights, pad_to=self.pad)
            gaps, calls = _ls_batch(
                self.keys(algorithm), self.model, self.regularization, self.v_star, allocation, self.num_iterations
            )
            calls = float(np.mean(np.asarray(calls)))
        elif algorithm == "vwls":
            phase1 = lin.allocate(self.model, self.design, M, pad_to=self.pad)
            variance = lin.allocate(self.model, self.design, max(1, round(self.variance_ratio * M)), pad_to=self.pad)
            gaps, calls = _vwls_batch(
                self.keys(algorithm), self.model, self.regularization, self.v_star, phase1, variance, M,
                lin.VWLSPhases(self.num_iterations, self.phase1_iterations),
            )  # fmt: skip
            calls = float(np.mean(np.asarray(calls)))
        else:
            raise ValueError(f"unknown algorithm {algorithm!r}")
        return Evaluation(M, calls, np.asarray(gaps) <= eps)


def search_threshold(
    evaluate, start: int, level: float, precision: float, max_doublings: int
) -> tuple[int, dict[int, Evaluation]]:
    """Smallest evaluated ``M`` meeting the level: doubling / halving, then geometric bisection.

    Returns ``(M*, evaluations by M)``; ``M*`` is the upper end of the final bracket.
    """
    evaluations: dict[int, Evaluation] = {}

    def ok(M):
        if M not in evaluations:
            evaluations[M] = evaluate(M)
        return evaluations[M].rate >= level

    M = max(1, int(start))
    lo, hi = None, None
    if ok(M):
        hi = M
        for _ in range(max_doublings):
            if hi == 1:
                break
            candidate = max(1, hi // 2)
            if ok(candidate):
                hi = candidate
            else:
                lo = candidate
                break
    else:
        lo = M
        for _ in range(max_doublings):
            candidate = lo * 2
            if ok(candidate):
                hi = candidate
                break
            lo = candidate
        if hi is None:
            raise RuntimeError(f"no sample size up to {lo} reached success {level}; raise max_doublings")
    while lo is not None and hi / lo > precision:
        mid = int(round(math.sqrt(lo * hi)))
        if mid <= lo or mid >= hi:
            break
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, evaluations


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


def run(config: SampleComplexityConfig) -> dict:
    """Run both sweeps; write CSVs, JSON summary and figure; return the summary."""
    _validate(config)
    with jax.enable_x64(True):
        return _run(config)


def _sweep(config, name, points, algorithms, bar, searched):
    """Search every (algorithm, point); return threshold rows, evaluation rows, bootstrap arrays.

    ``searched`` maps point identities already searched (in another sweep of this run) to their
    ``(M*, evaluations)``: the same identity gives the same numbers, so it is not searched twice.
    """
    thresholds, evaluation_rows, boots = [], [], {}
    for algorithm in algorithms:
        for x, point in points:
            identity = point.identity(algorithm)
            started = time.perf_counter()
            reused = identity in searched
            if not reused:
                searched[identity] = search_threshold(
                    functools.partial(point.evaluate, algorithm),
                    point.initial_guess(algorithm),
                    config.success,
                    config.precision,
                    config.max_doublings,
                )
            m_star, evals = searched[identity]
            seconds = time.perf_counter() - started
            ms = sorted(evals)
            calls = np.array([evals[m].calls for m in ms])
            success = np.stack([evals[m].success for m in ms])
            n_star = fitting.threshold(calls, success, config.success)
            rng = np.random.default_rng([config.seed, identity_tag(identity)])
            boot = fitting.bootstrap_thresholds(calls, success, config.success, config.bootstrap, rng)
            boots[(algorithm, x)] = boot
            censored = float(np.mean(boot >= calls.max())) if not np.isnan(n_star) else 1.0
            thresholds.append(
                {
                    "sweep": name,
                    "algorithm": algorithm,
                    "horizon": point.horizon,
                    "dim": point.dim,
                    "copies": point.copies,
                    "iterations": point.num_iterations,
                    "M_star": m_star,
                    "N_star": n_star,
                    "N_star_low": float(np.quantile(boot, 0.025)),
                    "N_star_high": float(np.quantile(boot, 0.975)),
                    "evaluations": len(ms),
                    "censored_bootstrap_fraction": censored,
                    "reused": reused,
                    "seconds": seconds,
                }
            )
            for m in ms:
                evaluation_rows.append(
                    {
                        "sweep": name,
                        "algorithm": algorithm,
                        "horizon": point.horizon,
                        "dim": point.dim,
                        "copies": point.copies,
                        "samples_per_iteration": m,
                        "calls": evals[m].calls,
                        "success_rate": evals[m].rate,
                        "seeds": len(evals[m].success),
                    }
                )
            bar.update(1)
            bar.set_postfix_str(f"{algorithm} {name}={x:g}: N*={n_star:.3g}")
    return thresholds, evaluation_rows, boots


def _fit(rows, boots, algorithms, key: str, divide_log: bool = False, min_x: float = -math.inf, model: str = "power"):
    """Per algorithm: the log-log slope of ``N*`` on ``key`` over the points with ``key >= min_x``.

    ``divide_log``: fit ``N* / ln H`` (K's log factor removed). ``model="lower-order"``: fit
    ``a x^p + b x^(p - 1)`` (:func:`theory.fitting.lower_order_fit`, at least four points).
    """
    fits = {}
    needed = 4 if model == "lower-order" else (3 if min_x > -math.inf else 2)
    for algorithm in algorithms:
        mine = [r for r in rows if r["algorithm"] == algorithm and r[key] >= min_x]
        x = np.array([r[key] for r in mine], np.float64)
        if x.size < needed:
            continue
        y = np.array([r["N_star"] for r in mine])
        y_boot = np.stack([boots[(algorithm, r[key])] for r in mine])
        if divide_log:
            factor = bounds.iteration_log_factor(x)
            y, y_boot = y / factor, y_boot / factor[:, None]
        if np.any(~np.isfinite(y)):
            continue
        if model == "lower-order":
            fits[algorithm] = fitting.lower_order_fit(x, y, y_boot)
        else:
            fits[algorithm] = fitting.slope_with_ci(x, y, y_boot)
    return fits


def _run(config: SampleComplexityConfig) -> dict:
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    started = time.perf_counter()
    total = len(config.algorithms) * (len(config.horizons) + len(config.copies) + len(config.dims))
    bar = tqdm(total=total, desc="N* search", disable=not config.progress)

    searched: dict = {}
    horizon_points = [(h, Point(config, h, 1)) for h in sorted(config.horizons)]
    h_rows, h_evals, h_boots = _sweep(config, "horizon", horizon_points, config.algorithms, bar, searched)
    d_rows, d_evals, d_boots = [], [], {}
    if config.copies:
        dim_points = [(c, Point(config, config.dim_horizon, c)) for c in sorted(config.copies)]
        d_rows, d_evals, d_boots = _sweep(config, "dim", dim_points, config.algorithms, bar, searched)
    f4_rows, f4_evals, f4_boots = [], [], {}
    if config.dims:
        f4_points = [(d, Point(config, config.dim_horizon, 1, dim=d)) for d in sorted(config.dims)]
        f4_rows, f4_evals, f4_boots = _sweep(config, "dim-f4", f4_points, config.algorithms, bar, searched)
    bar.close()
    elapsed = time.perf_counter() - started

    raw = _fit(h_rows, h_boots, config.algorithms, "horizon")
    no_log = _fit(h_rows, h_boots, config.algorithms, "horizon", divide_log=True)
    tail_min = config.fit_min_horizon
    tail = _fit(h_rows, h_boots, config.algorithms, "horizon", min_x=tail_min)
    tail_no_log = _fit(h_rows, h_boots, config.algorithms, "horizon", divide_log=True, min_x=tail_min)
    lower = _fit(h_rows, h_boots, config.algorithms, "horizon", divide_log=True, model="lower-order")
    dim_fits = {}
    if len(config.copies) >= 2:
        dim_fits = _fit(d_rows, d_boots, config.algorithms, "copies")
    f4_fits = _fit(f4_rows, f4_boots, config.algorithms, "dim") if len(config.dims) >= 2 else {}

    slopes = []
    for algorithm in config.algorithms:
        bound = bounds.get_bound(algorithm)
        entry = {"algorithm": algorithm, "theory_H": bound.horizon_exponent}
        if algorithm in raw:
            entry.update(
                slope_H=raw[algorithm].slope,
                slope_H_ci=(raw[algorithm].ci_low, raw[algorithm].ci_high),
                slope_H_no_log=no_log[algorithm].slope,
                slope_H_no_log_ci=(no_log[algorithm].ci_low, no_log[algorithm].ci_high),
            )
        if algorithm in tail:
            entry.update(
                tail_min_horizon=tail_min,
                slope_H_tail=tail[algorithm].slope,
                slope_H_tail_ci=(tail[algorithm].ci_low, tail[algorithm].ci_high),
                slope_H_no_log_tail=tail_no_log[algorithm].slope,
                slope_H_no_log_tail_ci=(tail_no_log[algorithm].ci_low, tail_no_log[algorithm].ci_high),
            )
        if algorithm in lower:
            fit = lower[algorithm]
            entry.update(
                lower_order_model="N*/ln H = a H^p + b H^(p-1)",
                exponent_H_lower_order=fit.exponent,
                exponent_H_lower_order_ci=(fit.ci_low, fit.ci_high),
                lower_order_correction=fit.correction,
                lower_order_correction_ci=fit.correction_ci,
            )
        entry["theory_d"] = bound.dim_exponent
        entry["theory_d_paper"] = bound.dim_exponent if bound.dim_exponent_paper is None else bound.dim_exponent_paper
        if algorithm in dim_fits:
            entry.update(slope_d=dim_fits[algorithm].slope, slope_d_ci=(dim_fits[algorithm].ci_low, dim_fits[algorithm].ci_high))
        if algorithm in f4_fits:
            fit = f4_fits[algorithm]
            entry.update(slope_d_f4=fit.slope, slope_d_f4_ci=(fit.ci_low, fit.ci_high))
        slopes.append(entry)

    ratios = []
    by = {(r["algorithm"], r["horizon"]): r["N_star"] for r in h_rows}
    for h in sorted(config.horizons):
        row = {"horizon": h}
        for a, b in (("ls", "vwls"), ("ls", "oracle"), ("tabular", "vwls")):
            if (a, h) in by and (b, h) in by:
                row[f"{a}/{b}"] = by[(a, h)] / by[(b, h)]
        ratios.append(row)

    threshold_path = write_tidy_csv(run_dir.file("thresholds.csv"), h_rows + d_rows + f4_rows)
    evaluations_path = write_tidy_csv(run_dir.file("evaluations.csv"), h_evals + d_evals + f4_evals)
    figure = _plot(run_dir.file("sample_complexity.png"), config, h_rows, d_rows, f4_rows, raw, dim_fits, f4_fits)
    summary = {
        "family": config.family,
        "epsilon": config.epsilon,
        "seeds": config.seeds,
        "success": config.success,
        "iterations": f"K = ceil({config.iteration_constant:g} H ln H)",
        "horizons": list(config.horizons),
        "copies": list(config.copies),
        "dims": list(config.dims),
        "dim_horizon": config.dim_horizon,
        "slopes": slopes,
        "ratios": ratios,
        "thresholds": h_rows + d_rows + f4_rows,
        "bounds": {a: dataclasses.asdict(bounds.get_bound(a)) for a in config.algorithms},
        "seconds": elapsed,
        "files": {"thresholds": threshold_path.name, "evaluations": evaluations_path.name, "figure": figure.name},
    }
    run_dir.write_summary(summary)
    print(f"\nN* ({config.family}, eps = {config.epsilon}, success >= {config.success} over {config.seeds} seeds)")
    columns = ("sweep", "algorithm", "horizon", "dim", "M_star", "N_star")
    print(format_table([{k: r[k] for k in columns} for r in h_rows + d_rows + f4_rows]))
    print("\nexponents (95% seed-bootstrap intervals)")
    print(format_table(_slope_table(slopes)))
    print(f"results in {run_dir.path} ({elapsed:.0f} s)")
    return summary


def _fmt_ci(value, ci) -> str:
    return f"{value:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _slope_table(slopes) -> list[dict]:
    table = []
    for s in slopes:
        row = {"algorithm": LABELS[s["algorithm"]]}
        if "slope_H" in s:
            row["N* vs H"] = _fmt_ci(s["slope_H"], s["slope_H_ci"])
            row["N*/ln H vs H"] = _fmt_ci(s["slope_H_no_log"], s["slope_H_no_log_ci"])
        if "slope_H_tail" in s:
            row[f"N*/ln H, H >= {s['tail_min_horizon']:g}"] = _fmt_ci(s["slope_H_no_log_tail"], s["slope_H_no_log_tail_ci"])
        if "exponent_H_lower_order" in s:
            row["p of a H^p + b H^(p-1)"] = _fmt_ci(s["exponent_H_lower_order"], s["exponent_H_lower_order_ci"])
        row["theory H"] = f"{s['theory_H']:g}"
        if "slope_d" in s:
            row["N* vs d (copies)"] = _fmt_ci(s["slope_d"], s["slope_d_ci"])
        if "slope_d_f4" in s:
            row["N* vs d (F4)"] = _fmt_ci(s["slope_d_f4"], s["slope_d_f4_ci"])
        if "slope_d" in s or "slope_d_f4" in s:
            paper = "" if s["theory_d_paper"] == s["theory_d"] else f" (paper {s['theory_d_paper']:g})"
            row["theory d"] = f"{s['theory_d']:g}{paper}"
        table.append(row)
    return table


def _plot(path, config, h_rows, d_rows, f4_rows, raw_fits, dim_fits, f4_fits):
    """One panel per sweep that ran: N*(H), N*(d) over block copies, N*(d) on F4."""
    panels = [
        (h_rows, "horizon", "horizon H = 1/(1-gamma)", raw_fits,
         f"{config.family}, eps = {config.epsilon}, P(success) >= {config.success}, {config.seeds} seeds"),
        (d_rows, "dim", "feature dimension d", dim_fits, f"dimension sweep: block copies at H = {config.dim_horizon}"),
        (f4_rows, "dim", "feature dimension d", f4_fits, f"dimension sweep: F4 (one decision) at H = {config.dim_horizon}"),
    ]  # fmt: skip
    panels = [panel for panel in panels if panel[0]]
    with figure(path, 1, len(panels), figsize=(6.2 * len(panels), 4.4), squeeze=False) as (_, axes):
        for ax, panel in zip(axes[0], panels):
            _draw_sweep(ax, *panel)
    return Path(path)


def _draw_sweep(ax, rows, key, xlabel, fits, title):
    import matplotlib.ticker as ticker
    import pandas as pd
    import seaborn as sns

    palette = dict(zip(ALGORITHMS, sns.color_palette("deep", len(ALGORITHMS))))
    frame = pd.DataFrame(rows)
    sns.lineplot(data=frame, x=key, y="N_star", hue="algorithm", palette=palette, marker="o", ax=ax, legend=False, errorbar=None)
    for algorithm, group in frame.groupby("algorithm"):
        group = group.sort_values(key)
        x = group[key].to_numpy(float)
        y = group["N_star"].to_numpy(float)
        err = np.vstack([y - group["N_star_low"].to_numpy(float), group["N_star_high"].to_numpy(float) - y])
        ax.errorbar(x, y, yerr=np.maximum(err, 0), fmt="none", ecolor=palette[algorithm], capsize=3, lw=1)
        bound = bounds.get_bound(algorithm)
        exponent = bound.horizon_exponent if key == "horizon" else bound.dim_exponent
        fit = fits.get(algorithm)
        ref = bounds.reference_line(x, exponent, x[0], y[0], log_factor=(key == "horizon"))
        ax.plot(x, ref, ls="--", lw=1, color=palette[algorithm], alpha=0.8)
        slope = f", fit {fit.slope:.2f}" if fit is not None else ""
        theory = f"H^{exponent:g} ln H" if key == "horizon" else f"d^{exponent:g}"
        ax.plot([], [], color=palette[algorithm], marker="o", label=f"{LABELS[algorithm]}{slope} (theory {theory}, dashed)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ticks = sorted(frame[key].unique())
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("N* (generative-model calls)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)


def demo_section(out: Path):
    """The sample-complexity part of ``mdvi-lab demo``: a short horizon sweep on F2."""
    from experiments.demo import DemoSection

    config = SampleComplexityConfig(
        horizons=(8, 16, 32),
        copies=(),
        algorithms=("ls", "vwls", "oracle"),
        seeds=200,
        precision=1.3,
        bootstrap=300,
        out=out / "sample_complexity",
        overwrite=True,
        progress=False,
    )
    summary = run(config)
    table = format_table(_slope_table(summary["slopes"]))
    text = (
        "N*(H): the smallest number of generative-model calls with P(||V* - V^pi_K||_inf <= 0.5) >= 0.9 "
        f"over {config.seeds} vmapped seeds, on the F2 linear MDP (a risky state shares feature coordinates "
        "with the decision state), for least-squares MDVI without weights, VWLS-MDVI and the oracle-weighted "
        "variant. A short run (H = 8, 16, 32; the full sweep is `mdvi-lab sample-complexity`): the exponents "
        "carry wide intervals over three horizons.\n\n" + table
    )
    return DemoSection(
        title="Sample complexity of LS-MDVI and VWLS-MDVI (linear MDP, G-optimal design)",
        text=text,
        figures=[config.out / "sample_complexity.png"],
        files=[config.out / "thresholds.csv", config.out / "summary.json"],
    )
