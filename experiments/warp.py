"""``mdvi-lab warp``: WARP (Rame et al. 2024, arXiv 2406.16768) on the oracle LM, evaluated exactly.

The preference task of :mod:`envs.alignment` (584 completions per prompt, so every
expectation and KL over the held-out prompts is an exact sum). Per seed: an SFT policy (MLE on
oracle completions) is ``theta_init``; RLOO (:mod:`agents.lm.warp`) maximises a *proxy* reward,
the golden reward plus a length bonus that the golden reward penalises (a reward that can be
hacked), minus ``beta log(pi / pi_anchor)``:

1. anchors: the fixed SFT anchor (``mu = 0``) against WARP's EMA anchor (``mu > 0``), ``M`` runs
   of each from ``theta_init`` with their own sampling seeds (all policies in one vmapped program);
2. merging: the ``M`` EMA runs' task vectors merged by SLERP per tensor and by LERP (the plain
   average) (:func:`agents.lm.weights.slerp_merge`, :func:`~agents.lm.weights.average`);
3. LITI: ``theta_init + eta (theta_merged - theta_init)`` for a sweep of eta; the KL-reward front
   it traces against the single runs' training trajectories;
4. iterations: a second round of ``M`` EMA runs from the LITI point ``eta = liti_eta`` of round 1,
   merged and swept again.

Everything is evaluated exactly: golden and proxy reward and ``KL(pi || pi_SFT)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents.lm import LMConfig, TransformerSpec, language_model, rl, warp, weights
from envs import alignment, token_mdp
from experiments import align_common, stats
from experiments.plotting import figure
from experiments.results import RunDir, format_table

MODEL = TransformerSpec(num_layers=1, width=32, num_heads=2)


@dataclasses.dataclass(frozen=True)
class WarpConfig:
    """WARP: EMA anchor, SLERP of task vectors, LITI, iterations (exact golden / proxy / KL)."""

    task: alignment.PreferenceConfig = alignment.PreferenceConfig()
    """The golden preference task (envs/alignment.py), enumerable (584 completions per prompt)."""
    length_bonus: float = 0.6
    """Proxy = golden + length_bonus * len(y) / max_completion (the golden reward penalises length)."""
    sft: LMConfig = LMConfig(model=MODEL, objective="mle", batch_size=32, steps=300, eval_every=100, learning_rate=3e-3)
    """The SFT policy theta_init (MLE on oracle completions); its model is every network's."""
    train_prompts: int = 256
    heldout_prompts: int = 16
    rl: LMConfig = LMConfig(
        model=MODEL, objective="mle", batch_size=16, steps=300, eval_every=50, learning_rate=1e-3, warmup_steps=10
    )
    """RLOO's optimizer and steps per round (batch_size prompts per step)."""
    beta: float = 0.1
    """KL weight (WARP's beta = 0.1; unconfirmed)."""
    mu: float = 0.01
    """EMA anchor step (WARP's mu = 0.01; unconfirmed)."""
    runs: int = 2
    """M: runs merged per round (WARP's M = 2)."""
    rl_samples: int = 4
    rl_chunk: int = 50
    etas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
    """LITI sweep."""
    liti_eta: float = 0.3
    """The LITI point that starts the next round (WARP's eta = 0.3; unconfirmed)."""
    iterations: int = 2
    """WARP iterations I (1 or 2)."""
    seeds: int = 3
    seed: int = 0
    out: Path = Path("results/warp")
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (intervals over seeds), got {self.seeds}")
        if self.runs < 2:
            raise ValueError(f"runs must be >= 2 (M models to merge), got {self.runs}")
        if self.iterations not in (1, 2):
            raise ValueError(f"iterations must be 1 or 2, got {self.iterations}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be finite and > 0, got {self.beta}")
        if not 0.0 < self.mu <= 1.0:
            raise ValueError(f"mu must lie in (0, 1], got {self.mu}")
        if not self.etas or any(not 0.0 <= e <= 1.0 for e in self.etas):
            raise ValueError(f"etas must lie in [0, 1], got {self.etas}")
        if not 0.0 <= self.liti_eta <= 1.0:
            raise ValueError(f"liti_eta must lie in [0, 1], got {self.liti_eta}")
        if self.rl_samples < 2:
            raise ValueError(f"rl_samples must be >= 2 (leave-one-out), got {self.rl_samples}")
        if self.rl_chunk < 1 or self.rl_chunk % self.rl.eval_every or self.rl.steps % self.rl_chunk:
            raise ValueError(f"rl_chunk ({self.rl_chunk}) must be a multiple of rl.eval_every and divide rl.steps")


def run(config: WarpConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    config.validate()
    started = time.perf_counter()
    task = config.task.build()
    space, P, S, M = task.space, task.prompt_length, config.seeds, config.runs
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    keys = jax.random.split(jax.random.key(config.seed), 6)
    train_prompts, heldout_prompts = token_mdp.split_prompts(
        task.oracle, keys[0], config.train_prompts, config.heldout_prompts, P
    )
    seed_keys = jax.random.split(keys[1], S)
    sft_data = jax.vmap(lambda k: token_mdp.sample_completions(task.oracle, k, train_prompts, 2))(seed_keys)
    sft_params = jax.block_until_ready(align_common.train_sft(config.sft, space, keys[2], sft_data))
    timings = {"sft": time.perf_counter() - started}
    model = language_model(config.sft.model, space)

    def proxy_reward(params, tokens):
        del params
        length = rl.completion_lengths(tokens, P)
        return task.reward(tokens) + config.length_bonus * length / config.task.max_completion

    completions = alignment.enumerate_completions(space, heldout_prompts)
    X, Mc, T = completions.shape
    flat = completions.reshape(-1, T)
    golden_all = task.reward(flat).reshape(X, Mc)
    proxy_all = proxy_reward(None, flat).reshape(X, Mc)
    log_probs = align_common.policy_log_probs(model)
    log_sft = jax.jit(jax.vmap(log_probs, in_axes=(0, None)))(sft_params, completions)  # [S, X, Mc]
    data = {"completions": completions, "golden": golden_all, "proxy": proxy_all, "log_sft": log_sft}

    def exact(params, seed, data):
        log_pi = log_probs(params, data["completions"])
        return align_common.exact_policy_metrics(
            log_pi, data["log_sft"][seed], {"golden": data["golden"], "proxy": data["proxy"]}
        )

    exact_vmapped = jax.jit(jax.vmap(exact, in_axes=(0, 0, None)))

    def exact_many(stacked, seeds, data, chunk: int = 7):
        """:func:`exact` of many stacked models, ``chunk`` at a time (bounded memory)."""
        count = seeds.shape[0]
        parts = [
            jax.device_get(exact_vmapped(align_common.take(stacked, slice(i, i + chunk)), seeds[i : i + chunk], data))
            for i in range(0, count, chunk)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    prompt_rows = jnp.pad(train_prompts, ((0, 0), (0, T - P)))
    rl_config = dataclasses.replace(config.rl, model=config.sft.model)
    rows, trajectories, fronts, cosines = [], [], [], []

    def final_params(init, mus, seed_of, key):
        """RLOO from ``init`` (stacked [R]) with EMA steps ``mus [R]``, exact evaluation every chunk:
        ``(params, curves, evaluations)``."""
        return align_common.rl_runs(
            "warp_rloo_ema", rl_config, space, proxy_reward, config.rl_samples, key, init, {"reference": init},
            jnp.broadcast_to(prompt_rows, (len(mus), *prompt_rows.shape)), jnp.full((len(mus),), config.beta),
            lambda p, i, d: exact(p, d["seed_of"][i], d), {**data, "seed_of": seed_of}, config.rl_chunk,
            config.progress, "warp", extra_hyper={"mu": jnp.asarray(mus)}, make_objective=warp.rloo_ema_objective,
        )  # fmt: skip

    def record_trajectories(round_index, anchors, seed_of, run_of, evaluations):
        steps = np.arange(evaluations["kl_ref"].shape[-1]) * config.rl_chunk
        for i in range(len(anchors)):
            for j, step in enumerate(steps):
                point = {"round": round_index, "variant": f"single run ({anchors[i]} anchor)", "seed": int(seed_of[i]),
                         "run": int(run_of[i]), "step": int(step),
                         **{k: float(v[i, j]) for k, v in evaluations.items()}}  # fmt: skip
                trajectories.append(point)
                for metric in ("golden", "proxy", "kl_ref"):
                    rows.append({"section": "trajectory", "round": round_index, "variant": point["variant"],
                                 "seed": point["seed"], "run": point["run"], "x": int(step), "metric": metric,
                                 "value": point[metric]})  # fmt: skip

    def merge_and_sweep(round_index, init_per_seed, run_params, seed_of_runs):
        """SLERP and LERP merges of each seed's M runs, then the LITI sweep; returns the SLERP
        LITI point at liti_eta per seed (stacked)."""
        merged = {"SLERP": [], "LERP": []}
        for s in range(S):
            members = [align_common.take(run_params, i) for i in range(len(seed_of_runs)) if int(seed_of_runs[i]) == s]
            theta_init = align_common.take(init_per_seed, s)
            cosines.append({"round": round_index, "seed": s, **_task_vector_cosines(theta_init, members[0], members[1])})
            merged["SLERP"].append(weights.slerp_merge(theta_init, members))
            merged["LERP"].append(weights.average(members))
        stacked, labels = [], []
        for name, per_seed in merged.items():
            for s in range(S):
                for eta in config.etas:
                    stacked.append(weights.liti(align_common.take(init_per_seed, s), per_seed[s], eta))
                    labels.append((name, s, eta))
        metrics = jax.device_get(exact_many(align_common.stack_trees(stacked), jnp.asarray([s for _, s, _ in labels]), data))
        for i, (name, s, eta) in enumerate(labels):
            point = {"round": round_index, "variant": f"{name} + LITI", "seed": s, "eta": eta,
                     **{k: float(v[i]) for k, v in metrics.items()}}  # fmt: skip
            fronts.append(point)
            for metric in ("golden", "proxy", "kl_ref"):
                rows.append({"section": "liti", "round": round_index, "variant": point["variant"], "seed": s, "run": "",
                             "x": eta, "metric": metric, "value": point[metric]})  # fmt: skip
        return align_common.stack_trees(
            [weights.liti(align_common.take(init_per_seed, s), merged["SLERP"][s], config.liti_eta) for s in range(S)]
        )

    # Round 1: fixed (mu = 0) and EMA (mu) anchors, M runs each, per seed.
    anchors = ["fixed"] * (S * M) + ["EMA"] * (S * M)
    mus = [0.0] * (S * M) + [config.mu] * (S * M)
    seed_of = jnp.asarray([i // M % S for i in range(2 * S * M)])
    run_of = [i % M for i in range(2 * S * M)]
    init = align_common.take(sft_params, seed_of)
    params, _, evaluations = final_params(init, mus, seed_of, keys[3])
    record_trajectories(1, anchors, seed_of, run_of, evaluations)
    timings["round 1"] = time.perf_counter() - started - sum(timings.values())
    ema_index = jnp.arange(S * M, 2 * S * M)
    next_init = merge_and_sweep(1, sft_params, align_common.take(params, ema_index), seed_of[ema_index])
    # the fixed-anchor runs merged too (is the merge's gain WARP's EMA or the merge itself?)
    fixed_index = jnp.arange(0, S * M)
    _sweep_fixed(config, S, sft_params, align_common.take(params, fixed_index), seed_of[fixed_index], exact_many, data,
                 fronts, rows)  # fmt: skip
    timings["merge 1"] = time.perf_counter() - started - sum(timings.values())

    if config.iterations == 2:
        seed_of2 = jnp.asarray([i // M for i in range(S * M)])
        init2 = align_common.take(next_init, seed_of2)
        params2, _, evaluations2 = final_params(init2, [config.mu] * (S * M), seed_of2, keys[4])
        record_trajectories(2, ["EMA"] * (S * M), seed_of2, [i % M for i in range(S * M)], evaluations2)
        timings["round 2"] = time.perf_counter() - started - sum(timings.values())
        merge_and_sweep(2, next_init, params2, seed_of2)
        timings["merge 2"] = time.perf_counter() - started - sum(timings.values())

    elapsed = time.perf_counter() - started
    csv_path = run_dir.write_metrics(rows, columns=["section", "round", "variant", "seed", "run", "x", "metric", "value"])
    tables = _tables(config, trajectories, fronts)
    figure_path = _plot(config, run_dir, trajectories, fronts)
    summary = {
        "task": {"targets": task.targets, "forbidden": task.forbidden, "completions_per_prompt": int(Mc)},
        **tables,
        "task_vector_cosines": cosines,
        "seeds": S,
        "seconds": elapsed,
        "stage_seconds": timings,
        "files": {"metrics": csv_path.name, "figure": figure_path.name},
    }
    run_dir.write_summary(summary)
    print(f"\nWARP on a golden preference task ({S} seeds, M = {M}, beta = {config.beta:g}, mu = {config.mu:g})")
    for name, table in {**tables, "task vector cosines (runs 0 and 1)": cosines}.items():
        print(name)
        print(format_table(table))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _sweep_fixed(config, S, sft_params, run_params, seed_of_runs, exact_many, data, fronts, rows):
    stacked, labels = [], []
    for s in range(S):
        members = [align_common.take(run_params, i) for i in range(len(seed_of_runs)) if int(seed_of_runs[i]) == s]
        merged = weights.slerp_merge(align_common.take(sft_params, s), members)
        for eta in config.etas:
            stacked.append(weights.liti(align_common.take(sft_params, s), merged, eta))
            labels.append((s, eta))
    metrics = jax.device_get(exact_many(align_common.stack_trees(stacked), jnp.asarray([s for s, _ in labels]), data))
    for i, (s, eta) in enumerate(labels):
        point = {"round": 1, "variant": "SLERP + LITI (fixed-anchor runs)", "seed": s, "eta": eta,
                 **{k: float(v[i]) for k, v in metrics.items()}}  # fmt: skip
        fronts.append(point)
        for metric in ("golden", "proxy", "kl_ref"):
            rows.append({"section": "liti", "round": 1, "variant": point["variant"], "seed": s, "run": "", "x": eta,
                         "metric": metric, "value": point[metric]})  # fmt: skip


def _task_vector_cosines(theta_init, theta_a, theta_b) -> dict:
    """Cosine between two runs' task vectors: over all parameters, and the min / mean over tensors
    (SLERP falls back to lerp for a tensor whose |cos| exceeds weights.DOT_THRESHOLD)."""
    da = jax.tree.leaves(weights.task_vector(theta_a, theta_init))
    db = jax.tree.leaves(weights.task_vector(theta_b, theta_init))
    per = [float(jnp.sum(a * b) / (jnp.linalg.norm(a.ravel()) * jnp.linalg.norm(b.ravel()) + 1e-12)) for a, b in zip(da, db)]
    flat_a = jnp.concatenate([a.ravel() for a in da])
    flat_b = jnp.concatenate([b.ravel() for b in db])
    overall = float(flat_a @ flat_b / (jnp.linalg.norm(flat_a) * jnp.linalg.norm(flat_b) + 1e-12))
    return {"cos (all parameters)": overall, "cos per tensor (min)": min(per), "cos per tensor (mean)": float(np.mean(per)),
            "tensors past the lerp threshold": int(sum(abs(c) > weights.DOT_THRESHOLD for c in per))}  # fmt: skip


def _ci(values) -> str:
    mean, _ = stats.mean_se(values)
    low, high = stats.interval(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _front_value(kl, value, at):
    """The upper envelope of a KL-value curve (best value at KL <= each point), interpolated at ``at``."""
    order = np.argsort(kl)
    kl, value = np.asarray(kl)[order], np.maximum.accumulate(np.asarray(value)[order])
    if at < kl[0] or at > kl[-1]:
        return math.nan
    return float(np.interp(at, kl, value))


def _tables(config, trajectories, fronts) -> dict:
    final_step = config.rl.steps
    finals = []
    for variant in sorted({t["variant"] for t in trajectories if t["round"] == 1}):
        points = [t for t in trajectories if t["round"] == 1 and t["variant"] == variant and t["step"] == final_step]
        finals.append(
            {"policy": f"round 1 {variant}, final", **{m: _ci([p[m] for p in points]) for m in ("golden", "proxy", "kl_ref")}}
        )
    for round_index in sorted({f["round"] for f in fronts}):
        for variant in sorted({f["variant"] for f in fronts if f["round"] == round_index}):
            for eta in (config.liti_eta, 1.0):
                points = [f for f in fronts if f["round"] == round_index and f["variant"] == variant and f["eta"] == eta]
                if points:
                    finals.append({"policy": f"round {round_index} {variant}, eta = {eta:g}",
                                   **{m: _ci([p[m] for p in points]) for m in ("golden", "proxy", "kl_ref")}})  # fmt: skip
    # domination: the SLERP + LITI front of round r against round r's single EMA runs' trajectory points
    dominance = []
    for round_index in sorted({f["round"] for f in fronts}):
        for variant in ("SLERP + LITI", "LERP + LITI"):
            for metric in ("golden", "proxy"):
                per_seed, covered = [], 0
                for s in range(config.seeds):
                    front = [f for f in fronts if f["round"] == round_index and f["variant"] == variant and f["seed"] == s]
                    kl, value = [f["kl_ref"] for f in front], [f[metric] for f in front]
                    gaps = []
                    for t in trajectories:
                        if (
                            t["round"] == round_index
                            and t["seed"] == s
                            and t["variant"] == "single run (EMA anchor)"
                            and t["step"] > 0
                        ):
                            v = _front_value(kl, value, t["kl_ref"])
                            if math.isfinite(v):
                                gaps.append(v - t[metric])
                    covered += len(gaps)
                    if gaps:
                        per_seed.append(float(np.mean(gaps)))
                dominance.append({
                    "round": round_index, "front": variant, "metric": metric,
                    "front - single-run points at equal KL (mean over points) [95% CI over seeds]":
                        _ci(per_seed) if len(per_seed) >= 2 else "n/a",
                    "points compared": covered,
                })  # fmt: skip
    # anchors: EMA single-run points against the fixed-anchor runs' trajectory front, at equal KL
    per_seed, covered = {"golden": [], "proxy": []}, 0
    for s in range(config.seeds):
        fixed = [t for t in trajectories if t["round"] == 1 and t["seed"] == s and t["variant"] == "single run (fixed anchor)"]
        for metric in ("golden", "proxy"):
            gaps = []
            for t in trajectories:
                if t["round"] == 1 and t["seed"] == s and t["variant"] == "single run (EMA anchor)" and t["step"] > 0:
                    v = _front_value([f["kl_ref"] for f in fixed], [f[metric] for f in fixed], t["kl_ref"])
                    if math.isfinite(v):
                        gaps.append(t[metric] - v)
            covered += len(gaps) if metric == "golden" else 0
            if gaps:
                per_seed[metric].append(float(np.mean(gaps)))
    anchors = [
        {"comparison": "EMA-anchor run points - fixed-anchor trajectory front at equal KL", "metric": metric,
         "mean [95% CI over seeds]": _ci(values) if len(values) >= 2 else "n/a", "points compared": covered}
        for metric, values in per_seed.items()
    ]  # fmt: skip
    return {"policies": finals, "dominance": dominance, "anchors": anchors}


def _plot(config, run_dir, trajectories, fronts) -> Path:
    import pandas as pd

    path = run_dir.file("warp.png")
    traj = pd.DataFrame(trajectories)
    front = pd.DataFrame(fronts)
    colors = {"single run (fixed anchor)": "tab:grey", "single run (EMA anchor)": "tab:blue"}
    with figure(path, 1, 2, figsize=(13, 4.8)) as (_, axes):
        for ax, metric in zip(axes, ("golden", "proxy")):
            for (round_index, variant, _seed, _run), group in traj.groupby(["round", "variant", "seed", "run"]):
                ax.plot(group.kl_ref, group[metric], color=colors[variant] if round_index == 1 else "tab:cyan",
                        lw=0.7, alpha=0.5)  # fmt: skip
            styles = {"SLERP + LITI": "o-", "LERP + LITI": "s--", "SLERP + LITI (fixed-anchor runs)": "^:"}
            for (round_index, variant), group in front.groupby(["round", "variant"]):
                mean = group.groupby("eta")[["kl_ref", metric]].mean()
                ax.plot(mean.kl_ref, mean[metric], styles[variant], ms=4, label=f"round {round_index}: {variant} (eta sweep)")
            for variant, color in colors.items():
                ax.plot([], [], color=color, label=f"round 1: {variant} trajectories")
            if config.iterations == 2:
                ax.plot([], [], color="tab:cyan", label="round 2: single EMA runs")
            ax.set_xlabel("exact KL(pi || pi_SFT) (nats)")
            ax.set_ylabel(f"{metric} reward (exact)")
            ax.set_title(f"{metric} reward vs KL (fronts: mean of {config.seeds} seeds per eta)")
            ax.legend(fontsize=6)
    return path


def demo_section(out: Path):
    """The WARP part of ``mdvi-lab demo``: a reduced run (2 seeds, one iteration, shorter SFT and RLOO; nearly all
    of its time is compilation, so a second iteration, another RLOO program, would take it well past ~40 s)."""
    from experiments.demo import DemoSection

    config = WarpConfig(
        out=out / "warp", overwrite=True, progress=False, seeds=2, iterations=1, rl_chunk=25,
        sft=dataclasses.replace(WarpConfig.sft, steps=200),
        rl=dataclasses.replace(WarpConfig.rl, steps=100, eval_every=25),
    )  # fmt: skip
    summary = run(config)
    text = (
        f"Reduced run: {config.seeds} seeds, {config.iterations} iteration, {config.sft.steps} SFT steps and "
        f"{config.rl.steps} RLOO steps (the full run, `mdvi-lab warp`, has {WarpConfig.seeds} seeds, "
        f"{WarpConfig.iterations} iterations, {WarpConfig.sft.steps} SFT and {WarpConfig.rl.steps} RLOO steps per round). "
        "WARP (Rame et al. 2024) on the oracle LM's preference task, every metric exact over the "
        f"{summary['task']['completions_per_prompt']} completions of {config.heldout_prompts} held-out prompts: "
        f"M = {config.runs} RLOO runs per seed on a hackable proxy (golden + {config.length_bonus:g} x relative length) "
        f"with beta = {config.beta:g}, a fixed SFT anchor against an EMA anchor (mu = {config.mu:g}), the EMA runs "
        f"merged by SLERP and by LERP of task vectors, then LITI (eta in {list(config.etas)}); the fronts are compared "
        "with the single runs' training trajectories at equal KL.\n\n"
        + format_table(summary["policies"])
        + "\n\n"
        + format_table(summary["dominance"])
        + "\n\n"
        + format_table(summary["anchors"])
    )
    return DemoSection(
        title="WARP: EMA anchor, SLERP / LERP of task vectors, LITI (exact)",
        text=text,
        figures=[config.out / "warp.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
