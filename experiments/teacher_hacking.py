"""``mdvi-lab teacher-hacking``: does a distilled student get closer to its teacher while getting
farther from the truth? (Tiapkin et al. 2025, arXiv 2502.02671.)

On the pipeline of :mod:`experiments.distillation`, a student distils the teacher with the
token-level forward KL under the paper's data regimes:

  (a) offline: ``prompts`` fixed prompts with one teacher completion each, many epochs;
  (b) offline with ``completions`` teacher completions per prompt;
  (c) offline with ``completions x prompts`` prompts, one completion each (more prompts);
  (d) fresh teacher completions of the ``prompts`` prompts at every step;
  (e) on-policy: student completions of the ``prompts`` prompts (GKD with lambda = 1).

Along training the golden metric ``E_x KL(p*(.|x) || S(.|x))`` and the proxy ``E_x KL(T(.|x) ||
S(.|x))`` (sequence level, held-out prompts, exact log-probabilities) are recorded and drawn
against each other on log-log axes. A run is flagged as hacking (the U-shape) when its golden
metric ends more than ``u_tolerance`` (relative) above its minimum while the proxy kept falling
after that minimum; a run whose golden metric ends that far above its minimum for any reason
(hacking, or overfitting where the proxy rises too) is counted in ``golden_rise_runs``. The power
law ``log golden = a + b log proxy`` is fitted on the regimes where no run's golden metric rose
(healthy), and every regime's distance to that law at the end is reported.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents.lm import LMConfig, TransformerSpec, evaluation, language_model, make_trainer
from experiments import distillation
from experiments.plotting import figure
from experiments.results import RunDir, format_table
from mdvi.sweep import nested_vmap

CURVE_METRICS = ("golden_seq", "golden_token", "proxy_seq", "proxy_token")
REGIMES = {
    "a": "offline, 1 completion/prompt",
    "b": "offline, k completions/prompt",
    "c": "offline, k x more prompts",
    "d": "fresh teacher samples",
    "e": "on-policy student samples",
}


@dataclasses.dataclass(frozen=True)
class TeacherHackingConfig:
    """Golden vs proxy metric along distillation under offline, fresh and on-policy data."""

    task: distillation.DistillTask = distillation.DistillTask(train_prompts=512)
    """Oracle, prompts and teacher (task.train_prompts must be >= completions x prompts)."""
    lm: LMConfig = LMConfig(
        model=TransformerSpec(num_layers=1, width=32, num_heads=2), objective="gkd", divergence="kl", batch_size=32,
        steps=800, eval_every=40, learning_rate=3e-3, warmup_steps=30,
    )  # fmt: skip
    """The student; eval_every sets the points of the golden-vs-proxy curves."""
    prompts: int = 64
    """Prompts of regimes (a), (b), (d), (e)."""
    completions: int = 8
    """Completions per prompt in (b); prompt multiplier in (c)."""
    regimes: tuple[str, ...] = ("a", "b", "c", "d", "e")
    seeds: int = 3
    u_tolerance: float = 0.02
    """A run hacks when its final golden metric exceeds its minimum by this fraction while the proxy fell."""
    seed: int = 0
    out: Path = Path("results/teacher_hacking")
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        self.task.validate()
        unknown = sorted(set(self.regimes) - set(REGIMES))
        if unknown or not self.regimes:
            raise ValueError(f"regimes must be among {', '.join(REGIMES)}, got {self.regimes}")
        if self.prompts < 2 or self.completions < 1 or self.seeds < 1:
            raise ValueError("prompts must be >= 2, completions and seeds >= 1")
        if self.prompts * self.completions > self.task.train_prompts:
            raise ValueError(
                f"regime (c) needs prompts x completions = {self.prompts * self.completions} train prompts; "
                f"task.train_prompts is {self.task.train_prompts}"
            )
        if self.lm.steps // self.lm.eval_every < 3:
            raise ValueError("lm.steps / lm.eval_every must give at least 3 curve points")


def _offline_data(config, task, key):
    """``[3, k P, T]`` data of regimes (a), (b), (c) and their row counts ``[3]``."""
    k, P = config.completions, config.prompts
    key_a, key_b, key_c = jax.random.split(key, 3)
    a = distillation.teacher_completions(task, key_a, task.train_prompts[:P])
    b = distillation.teacher_completions(task, key_b, task.train_prompts[:P], per_prompt=k)
    c = distillation.teacher_completions(task, key_c, task.train_prompts[: k * P])
    a_padded = jnp.concatenate([a, jnp.tile(a, (k - 1, 1))]) if k > 1 else a
    return jnp.stack([a_padded, b, c]), jnp.asarray([P, k * P, k * P]), a


def run(config: TeacherHackingConfig) -> dict:
    config.validate()
    started = time.perf_counter()
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    key_task, key_data, key_train = jax.random.split(jax.random.key(config.seed), 3)
    task = distillation.build_task(config.task, key_task)
    offline, counts, data_a = _offline_data(config, task, key_data)
    extra = {"teacher": task.teacher_params}
    base = dataclasses.replace(
        config.lm, objective="gkd", prompt_length=config.task.prompt_length, teacher=config.task.teacher.model
    )
    student = language_model(base.model, task.space)
    evaluate = evaluation.distillation_evaluator(student, task.oracle, task.teacher, task.teacher_params, task.reference)
    intervals = base.steps // base.eval_every
    seed_keys = jax.random.split(key_train, config.seeds)
    curves = {}
    programs = [
        ("offline", [r for r in config.regimes if r in "abc"]),
        ("d", ["d"] * ("d" in config.regimes)),
        ("e", ["e"] * ("e" in config.regimes)),
    ]
    bar = tqdm(total=len(config.regimes), desc="teacher-hacking: regimes", disable=not config.progress, leave=False)
    for program, regimes in programs:
        if not regimes:
            continue
        lm = {
            "offline": dataclasses.replace(base, lmbda=0.0, distill_source="data"),
            "d": dataclasses.replace(base, lmbda=0.0, distill_source="teacher"),
            "e": dataclasses.replace(base, lmbda=1.0, distill_source="data"),
        }[program]
        trainer = make_trainer(lm, task.space, evaluate)
        hyper = lm.hyperparameters()

        def train(key, data, count, trainer=trainer, hyper=hyper):
            state = trainer.init(key, data, extra)
            return trainer.run(state, data, hyper, count, intervals)[1]

        if program == "offline":
            index = jnp.asarray(["abc".index(r) for r in regimes])
            out = jax.jit(nested_vmap(train, (None, 0, 0), (0, None, None)))(seed_keys, offline[index], counts[index])
            for i, regime in enumerate(regimes):
                curves[regime] = {name: np.asarray(value[i]) for name, value in out.items()}
        else:
            out = jax.jit(jax.vmap(train, in_axes=(0, None, None)))(seed_keys, data_a, data_a.shape[0])
            curves[program] = {name: np.asarray(value) for name, value in out.items()}
        bar.update(len(regimes))
    bar.close()
    steps = (np.arange(intervals) + 1) * base.eval_every
    analysis = analyse(config, curves)
    elapsed = time.perf_counter() - started
    rows = [
        {"variant": f"({r}) {REGIMES[r]}", "regime": r, "seed": s, "step": int(step), "metric": name, "value": float(v)}
        for r in config.regimes for name, values in curves[r].items() if name in CURVE_METRICS
        for s in range(config.seeds) for step, v in zip(steps, values[s])
    ]  # fmt: skip
    csv_path = run_dir.write_metrics(rows, columns=["variant", "regime", "seed", "step", "metric", "value"])
    figures = _plot(config, run_dir, curves, steps, analysis)
    summary = {"teacher": task.teacher_report, **analysis, "seconds": elapsed,
               "files": {"metrics": csv_path.name, **{k: Path(v).name for k, v in figures.items()}}}  # fmt: skip
    run_dir.write_summary(summary)
    print(f"\nTeacher hacking: teacher per-token KL(p* || T) = {task.teacher_report['teacher_kl_token']:.4f} nats")
    print(format_table(analysis["regimes"]))
    law = analysis["healthy_law"]
    print(
        f"healthy law (regimes {', '.join(law['regimes']) or '-'}): "
        f"log golden = {law['intercept']:.3f} + {law['slope']:.3f} log proxy (R^2 {law['r2']:.3f})"
    )
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def u_shape(golden, proxy, tolerance: float) -> bool:
    """Whether one run hacks: the golden metric ends ``tolerance`` (relative) above its minimum,
    reached before the end, while the proxy at the end is below the proxy at that minimum."""
    golden, proxy = np.asarray(golden), np.asarray(proxy)
    low = int(np.argmin(golden))
    return bool(low < golden.size - 1 and golden[-1] > (1 + tolerance) * golden[low] and proxy[-1] < proxy[low])


def fit_law(golden, proxy) -> dict:
    """Least-squares ``log golden = intercept + slope log proxy`` over all given points."""
    x, y = np.log(np.ravel(proxy)), np.log(np.ravel(golden))
    if x.size < 2 or np.ptp(x) == 0:
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan"), "points": int(x.size)}
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    r2 = 1 - residual.var() / y.var() if y.var() > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r2": float(r2), "points": int(x.size)}


def golden_rises(golden, tolerance: float) -> bool:
    """Whether the golden metric ends ``tolerance`` (relative) above its minimum (hacking or overfitting)."""
    golden = np.asarray(golden)
    return bool(golden[-1] > (1 + tolerance) * golden.min())


def analyse(config, curves) -> dict:
    """Per regime: final and best golden metric, U-shape (hacking) runs, runs whose golden metric
    rose at all, and the log-log fit; the healthy law is fitted on the regimes where no run's
    golden metric rose (``NaN`` if there are none), and every regime's final distance to it."""
    rows, healthy = [], []
    for regime in config.regimes:
        golden, proxy = curves[regime]["golden_seq"], curves[regime]["proxy_seq"]
        flags = [u_shape(golden[s], proxy[s], config.u_tolerance) for s in range(config.seeds)]
        rises = [golden_rises(golden[s], config.u_tolerance) for s in range(config.seeds)]
        final = distillation.summarise(golden[:, -1])
        best = distillation.summarise(golden.min(axis=1))
        rows.append({
            "regime": f"({regime}) {REGIMES[regime]}", "golden_final": final["mean"],
            "golden_final_ci": f"[{final['ci_low']:.3g}, {final['ci_high']:.3g}]",
            "golden_min": best["mean"], "proxy_final": float(proxy[:, -1].mean()), "u_shape_runs": int(sum(flags)),
            "golden_rise_runs": int(sum(rises)),
            **{f"fit_{k}": v for k, v in fit_law(golden, proxy).items() if k in ("slope", "r2")},
        })  # fmt: skip
        if not any(rises):
            healthy.append(regime)
    law = fit_law(
        np.concatenate([curves[r]["golden_seq"].ravel() for r in healthy]) if healthy else [],
        np.concatenate([curves[r]["proxy_seq"].ravel() for r in healthy]) if healthy else [],
    )
    for row, regime in zip(rows, config.regimes):
        golden, proxy = curves[regime]["golden_seq"][:, -1], curves[regime]["proxy_seq"][:, -1]
        predicted = np.exp(law["intercept"] + law["slope"] * np.log(proxy))
        row["final_excess_over_law"] = float(np.mean(np.log(golden) - np.log(predicted)))
    return {"regimes": rows, "healthy_law": {**law, "regimes": healthy}}


def _plot(config, run_dir, curves, steps, analysis) -> dict:
    plt_path = run_dir.file("golden_vs_proxy.png")
    law = analysis["healthy_law"]
    regimes = config.regimes
    with figure(plt_path, 1, len(regimes), figsize=(3.8 * len(regimes), 3.9), squeeze=False, sharex=True, sharey=True) as (
        fig,
        axes,
    ):
        for ax, regime in zip(axes[0], regimes):
            golden, proxy = curves[regime]["golden_seq"], curves[regime]["proxy_seq"]
            for s in range(config.seeds):
                ax.plot(proxy[s], golden[s], marker=".", lw=1, alpha=0.8, label=f"seed {s}")
                ax.annotate(
                    "",
                    xy=(proxy[s, -1], golden[s, -1]),
                    xytext=(proxy[s, -2], golden[s, -2]),
                    arrowprops={"arrowstyle": "->", "lw": 1},
                )
            if np.isfinite(law["slope"]):
                xs = np.geomspace(
                    min(c["proxy_seq"].min() for c in curves.values()), max(c["proxy_seq"].max() for c in curves.values()), 50
                )
                ax.plot(xs, np.exp(law["intercept"] + law["slope"] * np.log(xs)), "k--", lw=1, label="healthy law")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"({regime}) {REGIMES[regime]}", fontsize=10)
            ax.set_xlabel("proxy KL(T || S)")
        axes[0][0].set_ylabel("golden KL(p* || S)")
        axes[0][-1].legend(fontsize=7)
    steps_path = run_dir.file("golden_along_training.png")
    with figure(steps_path, 1, 2, figsize=(11, 4)) as (_, axes):
        for regime in regimes:
            for ax, metric in zip(axes, ("golden_seq", "proxy_seq")):
                values = curves[regime][metric]
                ax.plot(steps, values.mean(0), label=f"({regime}) {REGIMES[regime]}")
                ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15)
        for ax, title in zip(axes, ("golden KL(p* || S) per completion", "proxy KL(T || S) per completion")):
            ax.set_yscale("log")
            ax.set_xlabel("student step")
            ax.set_title(title + " (mean, seed range)")
        axes[0].legend(fontsize=7)
    return {"golden_vs_proxy": plt_path, "golden_along_training": steps_path}


def demo_section(out: Path):
    """The teacher-hacking part of ``mdvi-lab demo``: short runs of regimes (a) and (c) (one compiled program)."""
    from experiments.demo import DemoSection

    teacher = dataclasses.replace(distillation.DistillTask().teacher, steps=150, eval_every=150)
    config = TeacherHackingConfig(
        out=out / "teacher_hacking", overwrite=True, progress=False, seeds=2, regimes=("a", "c"), prompts=16, completions=4,
        task=dataclasses.replace(distillation.DistillTask(), train_prompts=64, heldout_prompts=128, teacher=teacher),
        lm=dataclasses.replace(TeacherHackingConfig().lm, steps=200, eval_every=20),
    )  # fmt: skip
    summary = run(config)
    table = format_table(
        [{k: r[k] for k in ("regime", "golden_final", "golden_min", "proxy_final", "u_shape_runs")} for r in summary["regimes"]]
    )
    text = (
        "A student distils an imperfect teacher (exact per-token KL to the oracle "
        f"{summary['teacher']['teacher_kl_token']:.3f} nats) "
        f"with the forward KL for {config.lm.steps} steps: offline on {config.prompts} prompts with one completion each (a), "
        f"and on {config.prompts * config.completions} prompts (c); {config.seeds} seeds. "
        "The golden metric is the oracle's sequence-level KL to the student on held-out prompts, the proxy the teacher's. "
        "u_shape_runs counts runs whose golden metric rose again while the proxy kept falling. "
        "The full run (all five regimes) is `mdvi-lab teacher-hacking`.\n\n" + table
    )
    return DemoSection(
        title="Teacher hacking: golden vs proxy along distillation",
        text=text,
        figures=[config.out / "golden_vs_proxy.png", config.out / "golden_along_training.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
