"""``mdvi-lab bond``: BOND / J-BOND (Sessa et al. 2024, arXiv 2407.14622) against RLOO + KL, exactly.

Policies are tabular softmax policies over the enumerated completions of each prompt
(:func:`agents.lm.bond.make_tabular_train`), started at ``pi_ref`` = the oracle language model's
exact conditional distribution; they are trained by sampling as the algorithms do and every
metric is an exact sum over completions. Three sections:

1. ``distil`` (an enumerable task, tie-free reward): forward-only, backward-only and Jeffreys BOND
   distilling Best-of-N of ``pi_ref`` for N = 4 and 16; exact ``KL(pi_BoN || pi)`` along training.
2. ``iterate``: iterated BOND (Best-of-``n`` of an anchor set to the policy every
   ``anchor_period`` steps) and J-BOND (Best-of-2 of an EMA anchor); the effective N of the
   policy (the real ``N`` whose exact Best-of-N of ``pi_ref`` is closest to the policy in
   ``KL(pi_BoN || pi)``) against the paper's ``n^M`` after ``M`` anchor updates.
3. ``preference`` (the larger preference task of :mod:`envs.alignment`, 584 completions per
   prompt): J-BOND and forward / backward / Jeffreys BOND (N = 16) against RLOO + KL for a sweep
   of beta, all trained
   on a proxy reward (the golden reward plus a fixed per-completion error, a stand-in for a
   learned reward model), evaluated on the golden reward against ``KL(pi || pi_ref)``; the
   exact Best-of-N and KL-regularized-optimum curves of the proxy are drawn for reference.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents.lm import bond, rl
from envs import alignment, token_mdp
from envs.token_mdp import OracleConfig
from experiments import stats
from experiments.plotting import figure
from experiments.results import RunDir, format_table

SMALL_TASK = alignment.PreferenceConfig(
    oracle=OracleConfig(vocab_size=4, num_hidden=4, min_length=3, max_length=5, eos_hazard=0.3),
    prompt_length=2,
    max_completion=3,
    num_targets=1,
    num_forbidden=1,
)


@dataclasses.dataclass(frozen=True)
class BondExperimentConfig:
    """BOND / J-BOND vs RLOO + KL on golden preference tasks (tabular policies, exact metrics)."""

    small_task: alignment.PreferenceConfig = SMALL_TASK
    """The enumerable task of the distil and iterate sections (84 completions per prompt)."""
    small_prompts: int = 8
    task: alignment.PreferenceConfig = alignment.PreferenceConfig()
    """The larger preference task (584 completions per prompt)."""
    prompts: int = 16
    jitter: float = 1e-3
    """Scale of a fixed uniform per-completion tie breaker added to the training reward (BOND's
    backward term assumes a tie-free reward)."""
    proxy_noise: float = 0.3
    """Preference section: std of the fixed per-completion error of the proxy reward."""
    best_of: tuple[int, ...] = (4, 16)
    """Distil section: the N of the distilled Best-of-N."""
    distil_steps: int = 2000
    iterate_n: int = 2
    anchor_period: int = 250
    anchor_updates: int = 5
    """Iterated BOND: anchor updates M (steps = M * anchor_period); n^M is the paper's effective N."""
    jbond_steps: int = 1500
    """J-BOND and Jeffreys BOND steps in the preference and iterate sections."""
    betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    """RLOO + KL weights (preference section)."""
    rloo_steps: int = 1500
    policy_samples: int = 8
    forward_samples: int = 8
    quantile_samples: int = 16
    learning_rate: float = 0.05
    eval_every: int = 50
    seeds: int = 5
    seed: int = 0
    out: Path = Path("results/bond")
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.seeds < 2:
            raise ValueError(f"seeds must be >= 2 (intervals over seeds), got {self.seeds}")
        if self.small_prompts < 1 or self.prompts < 1:
            raise ValueError("small_prompts and prompts must be >= 1")
        if not self.best_of or min(self.best_of) < 2:
            raise ValueError(f"best_of must hold integers >= 2, got {self.best_of}")
        if not self.betas or any(not (b > 0 and math.isfinite(b)) for b in self.betas):
            raise ValueError(f"betas must be finite and > 0, got {self.betas}")
        if self.iterate_n < 2 or self.anchor_updates < 1:
            raise ValueError("iterate_n must be >= 2 and anchor_updates >= 1")
        for name in ("distil_steps", "jbond_steps", "rloo_steps", "anchor_period"):
            if getattr(self, name) % self.eval_every:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of eval_every ({self.eval_every})")
        if not (self.proxy_noise >= 0 and self.jitter >= 0):
            raise ValueError("proxy_noise and jitter must be >= 0")


def _task_arrays(config: alignment.PreferenceConfig, key, prompts: int, jitter: float, noise: float):
    """``(log_ref, train_reward, golden)`` ``[X, M]`` over every completion of ``prompts`` oracle prompts."""
    task = config.build()
    key_prompts, key_jitter, key_noise = jax.random.split(key, 3)
    heads = token_mdp.sample_prompts(task.oracle, key_prompts, prompts, config.prompt_length)
    completions = alignment.enumerate_completions(task.space, heads)
    X, M, T = completions.shape
    flat = completions.reshape(-1, T)
    log_ref = token_mdp.conditional_log_likelihood(task.oracle, flat, config.prompt_length).reshape(X, M)
    golden = task.reward(flat).reshape(X, M)
    train = golden + noise * jax.random.normal(key_noise, (X, M)) + jitter * jax.random.uniform(key_jitter, (X, M))
    return log_ref, train, golden


N_GRID = 2.0 ** np.linspace(0.0, 14.0, 281)


def _effective_n(log_pi, log_ref, reward):
    """The grid N minimising the exact ``KL(BoN_N(pi_ref) || pi)`` (mean over prompts)."""
    kls = jax.vmap(lambda n: jnp.mean(rl.exact_kl(rl.best_of_n_log_probs(log_ref, reward, n), log_pi)))(jnp.asarray(N_GRID))
    return jnp.asarray(N_GRID)[jnp.argmin(kls)], jnp.min(kls)


def _train(config: bond.BondConfig, keys, log_ref, reward, golden, hyper, hyper_axes=None):
    """vmapped over seeds (keys [S]) and, optionally, hyperparameters (leading axis of hyper)."""
    train = bond.make_tabular_train(config)
    per_seed = jax.vmap(train, in_axes=(0, None, None, None, None))
    if hyper_axes is None:
        return jax.jit(per_seed)(keys, log_ref, reward, golden, hyper)
    return jax.jit(jax.vmap(per_seed, in_axes=(None, None, None, None, hyper_axes)))(keys, log_ref, reward, golden, hyper)


def run(config: BondExperimentConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    config.validate()
    started = time.perf_counter()
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    keys = jax.random.split(jax.random.key(config.seed), 4)
    S = config.seeds
    seed_keys = jax.random.split(keys[0], S)
    common = dict(
        policy_samples=config.policy_samples, forward_samples=config.forward_samples,
        quantile_samples=config.quantile_samples, learning_rate=config.learning_rate, eval_every=config.eval_every,
    )  # fmt: skip
    rows, timings = [], {}
    jobs = len(config.best_of) * 3 + 2 + 5
    bar = tqdm(total=jobs, desc="bond", disable=not config.progress, leave=False)

    def record(section, method, curves, steps, metrics):
        for s in range(S):
            for j, step in enumerate(steps):
                for metric in metrics:
                    rows.append(
                        {"section": section, "method": method, "seed": s, "step": int(step), "metric": metric,
                         "value": float(curves[metric][s, j])}
                    )  # fmt: skip

    # 1. distil: forward / backward / Jeffreys towards Best-of-N of pi_ref (fixed anchor).
    log_ref, reward, golden = _task_arrays(config.small_task, keys[1], config.small_prompts, config.jitter, 0.0)
    distil = {}
    for n in config.best_of:
        for method, b in (("forward", 0.0), ("backward", 1.0), ("jeffreys", 0.5)):
            cfg = bond.BondConfig(method=method, n=n, b=b, steps=config.distil_steps, lr_decay=True, **common)
            _, curves = _train(cfg, seed_keys, log_ref, reward, golden, {"beta": 1.0, "eval_n": n})
            curves = jax.device_get(curves)
            steps = np.arange(curves["kl_ref"].shape[-1]) * config.eval_every
            name = f"{method} N={n}"
            record("distil", name, curves, steps, ("kl_bon_forward", "kl_bon_backward", "kl_ref", "golden", "quantile"))
            distil[name] = curves
            bar.update()
    timings["distil"] = time.perf_counter() - started

    # 2. iterate: iterated BOND (moving anchor) and J-BOND (EMA anchor); effective N.
    n = config.iterate_n
    period, updates = config.anchor_period, config.anchor_updates
    iterated_cfg = bond.BondConfig(
        method="jeffreys", n=n, b=0.5, anchor="moving", anchor_period=period, steps=period * updates, **common
    )
    jbond_small_cfg = bond.jbond_config(
        steps=config.jbond_steps, policy_samples=config.policy_samples, learning_rate=config.learning_rate,
        eval_every=config.eval_every,
    )  # fmt: skip
    effective = jax.jit(jax.vmap(jax.vmap(_effective_n, in_axes=(0, None, None)), in_axes=(0, None, None)))
    iterate = {}
    for name, cfg in (("iterated BOND", iterated_cfg), ("J-BOND", jbond_small_cfg)):
        _, curves = _train(cfg, seed_keys, log_ref, reward, golden, {"beta": 1.0, "eval_n": 2})
        curves = jax.device_get(curves)
        n_eff, kl_fit = (np.asarray(x) for x in effective(curves["log_pi"], log_ref, reward))
        curves = {**curves, "effective_n": n_eff, "effective_n_kl_fit": kl_fit}
        steps = np.arange(n_eff.shape[-1]) * config.eval_every
        record("iterate", name, curves, steps, ("effective_n", "effective_n_kl_fit", "kl_ref", "golden", "quantile"))
        iterate[name] = (steps, curves)
        bar.update()
    steps, curves = iterate["iterated BOND"]
    growth = []
    for m in range(1, updates + 1):
        j = int(np.searchsorted(steps, m * period))
        values = curves["effective_n"][:, j]
        low, high = stats.interval(np.log2(values))
        growth.append(
            {"anchor updates M": m, "paper n^M": n**m, "measured N (geo-mean)": float(2 ** np.mean(np.log2(values))),
             "95% CI": f"[{2**low:.2f}, {2**high:.2f}]",
             "KL(BoN_N || pi) at fit": float(np.mean(curves["effective_n_kl_fit"][:, j]))}
        )  # fmt: skip
    timings["iterate"] = time.perf_counter() - started - sum(timings.values())

    # 3. preference task: J-BOND, Jeffreys BOND N = 16 and RLOO + KL on a proxy reward; golden vs KL.
    log_ref, proxy, golden = _task_arrays(config.task, keys[2], config.prompts, config.jitter, config.proxy_noise)
    pref = {}
    jb = bond.jbond_config(
        steps=config.jbond_steps, policy_samples=config.policy_samples, learning_rate=config.learning_rate,
        eval_every=config.eval_every,
    )  # fmt: skip
    variants = [("J-BOND", jb)] + [
        (f"{label} N=16", bond.BondConfig(method=method, n=16, b=b, steps=config.jbond_steps, **common))
        for label, method, b in (("Jeffreys BOND", "jeffreys", 0.5), ("forward BOND", "forward", 0.0),
                                 ("backward BOND", "backward", 1.0))
    ]  # fmt: skip
    for name, cfg in variants:
        _, curves = _train(cfg, seed_keys, log_ref, proxy, golden, {"beta": 1.0, "eval_n": 16})
        curves = {k: v for k, v in jax.device_get(curves).items() if k != "log_pi"}
        pref[name] = curves
        record("preference", name, curves, np.arange(curves["kl_ref"].shape[-1]) * config.eval_every,
               ("kl_ref", "golden", "reward"))  # fmt: skip
        bar.update()
    rloo_cfg = bond.BondConfig(method="rloo", steps=config.rloo_steps, **common)
    betas = jnp.asarray(config.betas, jnp.float32)
    _, curves = _train(rloo_cfg, seed_keys, log_ref, proxy, golden, {"beta": betas, "eval_n": 16}, {"beta": 0, "eval_n": None})
    curves = {k: v for k, v in jax.device_get(curves).items() if k != "log_pi"}  # [B, S, points]
    for i, beta in enumerate(config.betas):
        name = f"RLOO+KL beta={beta:g}"
        pref[name] = {k: v[i] for k, v in curves.items()}
        record("preference", name, pref[name], np.arange(curves["kl_ref"].shape[-1]) * config.eval_every,
               ("kl_ref", "golden", "reward"))  # fmt: skip
    bar.update()
    # exact reference curves of the proxy: Best-of-N and the KL-regularized optimum
    reference_curves = []
    for n_bon in (1, 2, 4, 8, 16, 32, 64, 128):
        log_bon = rl.best_of_n_log_probs(log_ref, proxy, n_bon)
        reference_curves.append({"curve": "exact Best-of-N", "x": n_bon, "kl_ref": float(jnp.mean(rl.exact_kl(log_bon, log_ref))),
                                 "golden": float(jnp.mean(jnp.sum(jnp.exp(log_bon) * golden, -1)))})  # fmt: skip
    for beta in np.geomspace(0.02, 3.0, 12):
        log_star = rl.kl_optimum(proxy, log_ref, float(beta))
        reference_curves.append({"curve": "exact KL optimum", "x": float(beta),
                                 "kl_ref": float(jnp.mean(rl.exact_kl(log_star, log_ref))),
                                 "golden": float(jnp.mean(jnp.sum(jnp.exp(log_star) * golden, -1)))})  # fmt: skip
    for point in reference_curves:
        for metric in ("kl_ref", "golden"):
            rows.append({"section": "preference_exact", "method": point["curve"], "seed": "", "step": point["x"],
                         "metric": metric, "value": point[metric]})  # fmt: skip
    bar.update()
    bar.close()
    timings["preference"] = time.perf_counter() - started - sum(timings.values())

    matched = _matched_kl(pref, config.betas)
    elapsed = time.perf_counter() - started
    csv_path = run_dir.write_metrics(rows, columns=["section", "method", "seed", "step", "metric", "value"])
    figure_path = _plot(config, run_dir, distil, iterate, growth, pref, reference_curves)
    summary = {
        "distil": _distil_table(distil),
        "iterate_growth": growth,
        "jbond_growth": _jbond_growth(*iterate["J-BOND"]),
        "preference_final": _pref_table(pref),
        "matched_kl": matched,
        "seeds": S,
        "seconds": elapsed,
        "stage_seconds": timings,
        "files": {"metrics": csv_path.name, "figure": figure_path.name},
    }
    run_dir.write_summary(summary)
    print(f"\nBOND on golden preference tasks ({S} seeds; tabular policies, exact metrics)")
    print(format_table(summary["distil"]))
    print(format_table(growth))
    print(format_table(summary["jbond_growth"]))
    print(format_table(summary["preference_final"]))
    print(format_table(matched))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _ci(values) -> dict:
    mean, _ = stats.mean_se(values)
    low, high = stats.interval(values)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def _fmt(ci: dict, digits: int = 3) -> str:
    return f"{ci['mean']:.{digits}f} [{ci['ci_low']:.{digits}f}, {ci['ci_high']:.{digits}f}]"


def _distil_table(distil) -> list[dict]:
    return [
        {
            "method": name,
            "KL(BoN||pi) start": float(np.mean(c["kl_bon_forward"][:, 0])),
            "KL(BoN||pi) final [95% CI]": _fmt(_ci(c["kl_bon_forward"][:, -1]), 4),
            "KL(pi||BoN) final": float(np.mean(c["kl_bon_backward"][:, -1])),
            "KL(pi||ref) final": float(np.mean(c["kl_ref"][:, -1])),
        }
        for name, c in distil.items()
    ]


def _pref_table(pref) -> list[dict]:
    return [
        {
            "method": name,
            "golden final [95% CI]": _fmt(_ci(c["golden"][:, -1])),
            "proxy final": float(np.mean(c["reward"][:, -1])),
            "KL(pi||ref) final": float(np.mean(c["kl_ref"][:, -1])),
        }  # fmt: skip
        for name, c in pref.items()
    ]


def _front(kl, golden, at):
    """Golden reward of a KL-reward curve at KL ``at``: linear interpolation of the upper envelope of
    the points (the best golden reached at KL <= each point), ``nan`` outside the KL range."""
    order = np.argsort(kl)
    kl, golden = np.asarray(kl)[order], np.maximum.accumulate(np.asarray(golden)[order])
    if at < kl[0] or at > kl[-1]:
        return math.nan
    return float(np.interp(at, kl, golden))


def _matched_kl(pref, betas, levels=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0)) -> list[dict]:
    """Golden reward at equal KL: at each KL level, each BOND variant's trajectory (upper envelope
    of its evaluation points) minus the RLOO + KL front (all RLOO evaluation points of that seed,
    every beta and step), per seed; levels outside a seed's range of either are skipped."""
    rows = []
    rloo = [pref[f"RLOO+KL beta={b:g}"] for b in betas]
    for name in [n for n in pref if "BOND" in n]:
        c = pref[name]
        for level in levels:
            diffs = []
            for s in range(c["kl_ref"].shape[0]):
                kl = np.concatenate([r["kl_ref"][s] for r in rloo])
                golden = np.concatenate([r["golden"][s] for r in rloo])
                diffs.append(_front(c["kl_ref"][s], c["golden"][s], level) - _front(kl, golden, level))
            diffs = np.asarray(diffs)
            ok = np.isfinite(diffs)
            if ok.sum() < 2:
                continue
            rows.append({"method": name, "KL level": level, "golden - RLOO front [95% CI]": _fmt(_ci(diffs[ok])),
                         "seeds": int(ok.sum())})  # fmt: skip
    return rows


def _jbond_growth(steps, curves, at=(100, 250, 500, 750, 1000, 1500)) -> list[dict]:
    rows = []
    for step in at:
        j = int(np.searchsorted(steps, step))
        if j < len(steps) and steps[j] == step:
            values = np.log2(curves["effective_n"][:, j])
            low, high = stats.interval(values)
            rows.append({"step": step, "J-BOND effective N (geo-mean)": float(2 ** values.mean()),
                         "95% CI": f"[{2**low:.1f}, {2**high:.1f}]",
                         "KL(pi||ref)": float(curves["kl_ref"][:, j].mean())})  # fmt: skip
    return rows


def _plot(config, run_dir, distil, iterate, growth, pref, reference_curves) -> Path:
    path = run_dir.file("bond.png")
    with figure(path, 1, 3, figsize=(17, 4.6)) as (_, axes):
        ax = axes[0]
        for name, c in distil.items():
            steps = np.arange(c["kl_bon_forward"].shape[-1]) * config.eval_every
            mean = c["kl_bon_forward"].mean(0)
            ax.plot(steps, mean, label=name, ls="-" if "N=4" in name else "--")
        ax.axhline(0.02, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("exact KL(pi_BoN || pi)")
        ax.set_title(f"distilling Best-of-N of pi_ref (mean of {config.seeds} seeds)")
        ax.legend(fontsize=7)
        ax = axes[1]
        for name, (steps, c) in iterate.items():
            mean = 2 ** np.log2(c["effective_n"]).mean(0)
            low = np.quantile(c["effective_n"], 0.0, axis=0)
            high = np.quantile(c["effective_n"], 1.0, axis=0)
            ax.plot(steps, mean, label=f"{name} (geo-mean; band: seed range)")
            ax.fill_between(steps, low, high, alpha=0.2)
        ms = [g["anchor updates M"] for g in growth]
        ax.plot([m * config.anchor_period for m in ms], [g["paper n^M"] for g in growth], "k*", label="paper: n^M at update M")
        ax.set_yscale("log", base=2)
        ax.set_xlabel("step")
        ax.set_ylabel("effective N (argmin_N KL(BoN_N(pi_ref) || pi))")
        ax.set_title(f"iterated BOND (n = {config.iterate_n}, anchor every {config.anchor_period}) and J-BOND")
        ax.legend(fontsize=7)
        ax = axes[2]
        for name, c in pref.items():
            ax.plot(c["kl_ref"].mean(0), c["golden"].mean(0), marker="." if "RLOO" in name else "o",
                    ms=3, lw=1.5 if "RLOO" not in name else 1, label=name, alpha=0.9)  # fmt: skip
        for curve, style in (("exact Best-of-N", "k--"), ("exact KL optimum", "k:")):
            points = sorted((p for p in reference_curves if p["curve"] == curve), key=lambda p: p["kl_ref"])
            ax.plot([p["kl_ref"] for p in points], [p["golden"] for p in points], style, label=f"{curve} (proxy)")
        ax.set_xlabel("exact KL(pi || pi_ref) (nats)")
        ax.set_ylabel("golden reward (exact)")
        ax.set_title(f"preference task, proxy = golden + {config.proxy_noise:g} noise (along training)")
        ax.legend(fontsize=6)
    return path


def demo_section(out: Path):
    """The BOND part of ``mdvi-lab demo``: 2 seeds and N = 4 only (10 compiled training programs, the
    fewest the sections allow; compilation is nearly all of the time, so the steps stay as in the full run)."""
    from experiments.demo import DemoSection

    config = BondExperimentConfig(out=out / "bond", overwrite=True, progress=False, seeds=2, best_of=(4,))
    summary = run(config)
    text = (
        f"Reduced run: {config.seeds} vmapped seeds and Best-of-{config.best_of[0]} only in the distil section "
        f"(the full run, `mdvi-lab bond`, has {BondExperimentConfig.seeds} seeds and N = "
        f"{', '.join(map(str, BondExperimentConfig.best_of))}); steps as in the full run. Tabular softmax policies over "
        "every completion of each prompt, started at pi_ref (the oracle LM), trained by sampling as BOND does and "
        "evaluated exactly (Sessa et al. 2024). Distil: forward, backward and Jeffreys BOND towards Best-of-"
        f"{config.best_of[0]} of pi_ref ({config.distil_steps} steps):\n\n"
        + format_table(summary["distil"])
        + f"\n\nIterated BOND (Best-of-{config.iterate_n} of an anchor moved to the policy every {config.anchor_period} "
        "steps): the effective N (the N whose exact Best-of-N of pi_ref is closest to pi in KL(BoN_N || pi)) against "
        "the paper's n^M after M anchor updates:\n\n"
        + format_table(summary["iterate_growth"])
        + f"\n\nPreference task ({config.prompts} prompts, 584 completions each): trained on a proxy reward (golden + a "
        f"fixed error of std {config.proxy_noise:g}), golden reward and KL(pi || pi_ref) at the end of training "
        f"(BOND / J-BOND {config.jbond_steps} steps, RLOO + KL {config.rloo_steps} steps):\n\n"
        + format_table(summary["preference_final"])
    )
    return DemoSection(
        title="BOND / J-BOND: Best-of-N distillation vs RLOO + KL (exact)",
        text=text,
        figures=[config.out / "bond.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
