"""``mdvi-lab gkd``: generalized knowledge distillation (Agarwal et al. 2023, arXiv 2306.13649) on an
exact oracle: lambda (the fraction of on-policy batches) x the token divergence.

The pipeline of :mod:`experiments.distillation` (oracle -> imperfect teacher -> smaller student)
with the fixed data set = one teacher completion per train prompt. For each divergence (a static
choice: one compiled program each) the (lambda, seed) students train vmapped. Measured: the
golden metric (sequence-level ``KL(p* || S)`` on held-out prompts, exact log-probabilities), the
proxy (the same against the teacher), per-token versions, the teacher's and oracle's
log-likelihood of student samples (quality), the student's entropy and distinct-2 / Self-BLEU
(diversity). ``lambda = 0`` with the forward KL is supervised KD; ``lambda = 1`` is on-policy.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from agents.lm import LMConfig, TransformerSpec, evaluation, language_model, make_trainer
from experiments import distillation
from experiments.plotting import figure
from experiments.results import RunDir, format_table
from mdvi import get_divergence
from mdvi.sweep import grid, nested_vmap

CURVE_METRICS = ("golden_seq", "golden_token", "proxy_seq", "proxy_token")
FINAL_METRICS = CURVE_METRICS + ("teacher_loglik", "oracle_loglik", "entropy", "distinct_2", "self_bleu")


@dataclasses.dataclass(frozen=True)
class GKDConfig:
    """GKD: lambda x divergence on an oracle -> teacher -> student pipeline."""

    task: distillation.DistillTask = distillation.DistillTask()
    """Oracle, prompts and teacher."""
    lm: LMConfig = LMConfig(
        model=TransformerSpec(num_layers=1, width=32, num_heads=2), objective="gkd", batch_size=32,
        steps=300, eval_every=100, learning_rate=3e-3, warmup_steps=30,
    )  # fmt: skip
    """The student and its training (objective, lmbda, divergence, prompt_length and teacher are set by the sweep)."""
    lambdas: tuple[float, ...] = (0.0, 0.5, 1.0)
    """Probabilities of an on-policy (student-sampled) batch."""
    divergences: tuple[str, ...] = ("kl", "reverse_kl", "jsd:0.1", "jsd:0.5", "jsd:0.9")
    """Token divergences D(teacher || student) (names of mdvi.get_divergence)."""
    seeds: int = 3
    """Vmapped student seeds per (lambda, divergence)."""
    final_samples: int = 256
    """Student completions of held-out prompts for quality and diversity at the end."""
    seed: int = 0
    out: Path = Path("results/gkd")
    overwrite: bool = False
    """Replace the run already in --out."""
    progress: bool = True

    def validate(self) -> None:
        self.task.validate()
        for name in self.divergences:
            get_divergence(name)
        if not self.divergences or not self.lambdas or any(not 0 <= lam <= 1 for lam in self.lambdas):
            raise ValueError(f"lambdas must lie in [0, 1] and divergences be non-empty, got {self.lambdas}, {self.divergences}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if not 2 <= self.final_samples <= self.task.heldout_prompts:
            raise ValueError(
                f"final_samples must lie in [2, task.heldout_prompts = {self.task.heldout_prompts}], got {self.final_samples}"
            )


def _run(trainer, data, intervals, state, hyper):
    return trainer.run(state, data, hyper, data.shape[0], intervals)


def _samples(model, prompts, params, key):
    return evaluation.student_samples(model, params, key, prompts).tokens


def _label(divergence: str, lmbda: float) -> str:
    return f"{divergence}, lambda={lmbda:g}"


def run(config: GKDConfig) -> dict:
    config.validate()
    started = time.perf_counter()
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    key_task, key_data, key_train, key_final = jax.random.split(jax.random.key(config.seed), 4)
    task = distillation.build_task(config.task, key_task)
    data = distillation.teacher_completions(task, key_data, task.train_prompts)
    sweep = grid(lmbda=config.lambdas)
    extra = {"teacher": task.teacher_params}
    rows, finals = [], {}
    bar = tqdm(total=len(config.divergences), desc="gkd: divergences", disable=not config.progress, leave=False)
    for divergence in config.divergences:
        lm = dataclasses.replace(
            config.lm,
            objective="gkd",
            divergence=divergence,
            prompt_length=config.task.prompt_length,
            teacher=config.task.teacher.model,
        )
        student = language_model(lm.model, task.space)
        trainer = make_trainer(
            lm,
            task.space,
            evaluation.distillation_evaluator(student, task.oracle, task.teacher, task.teacher_params, task.reference),
        )
        hyper = {**lm.hyperparameters(), "lmbda": sweep.values["lmbda"]}
        axes = {name: 0 if name == "lmbda" else None for name in hyper}
        state = jax.jit(jax.vmap(trainer.init, in_axes=(0, None, None)))(jax.random.split(key_train, config.seeds), data, extra)
        state = jax.tree.map(lambda x: jnp.broadcast_to(x, (sweep.size, *x.shape)), state)
        intervals = lm.steps // lm.eval_every
        run_all = jax.jit(nested_vmap(functools.partial(_run, trainer, data, intervals), (0, axes), (0, None)))
        state, curves = run_all(state, hyper)
        curves = jax.device_get(curves)
        final_eval = evaluation.distillation_evaluator(
            trainer.model, task.oracle, task.teacher, task.teacher_params, task.reference, config.final_samples
        )
        keys = jax.random.split(key_final, sweep.size * config.seeds).reshape(sweep.size, config.seeds)
        final = jax.device_get(jax.jit(nested_vmap(final_eval, 0, 0))(state.params, keys))
        prompts = task.heldout_prompts[: config.final_samples]
        samples = jax.device_get(
            jax.jit(nested_vmap(functools.partial(_samples, trainer.model, prompts), 0, 0))(state.params, keys)
        )
        for i, point in enumerate(sweep.points):
            for s in range(config.seeds):
                base = {
                    "variant": _label(divergence, point["lmbda"]),
                    "divergence": divergence,
                    "lmbda": point["lmbda"],
                    "seed": s,
                }
                for metric in CURVE_METRICS:
                    for j, value in enumerate(curves[metric][i, s]):
                        rows.append({**base, "step": (j + 1) * lm.eval_every, "metric": metric, "value": float(value)})
                result = {name: float(value[i, s]) for name, value in final.items()}
                result.update(distillation.diversity(samples[i, s], config.task.prompt_length))
                finals[(divergence, point["lmbda"], s)] = result
                for metric in ("teacher_loglik", "oracle_loglik", "entropy", "distinct_2", "self_bleu"):
                    rows.append({**base, "step": lm.steps, "metric": metric, "value": result[metric]})
        bar.update(1)
    bar.close()
    summary_rows = _summary_rows(config, finals)
    comparisons = _on_policy_vs_supervised(config, finals)
    elapsed = time.perf_counter() - started
    csv_path = run_dir.write_metrics(rows, columns=["variant", "divergence", "lmbda", "seed", "step", "metric", "value"])
    figures = _plot(config, run_dir, summary_rows, rows, task.teacher_report)
    summary = {
        "teacher": task.teacher_report,
        "variants": summary_rows,
        "on_policy_minus_supervised_golden": comparisons,
        "models": len(config.divergences) * sweep.size * config.seeds,
        "seconds": elapsed,
        "files": {"metrics": csv_path.name, **{k: Path(v).name for k, v in figures.items()}},
    }
    run_dir.write_summary(summary)
    print(f"\nGKD on an oracle LM: teacher per-token KL(p* || T) = {task.teacher_report['teacher_kl_token']:.4f} nats "
          f"(oracle entropy {task.teacher_report['oracle_entropy_token']:.3f} nats/token)")  # fmt: skip
    print(
        format_table(
            [
                {
                    k: r[k]
                    for k in ("variant", "golden_seq", "golden_seq_ci", "proxy_seq", "teacher_loglik", "entropy", "distinct_2")
                }
                for r in summary_rows
            ]
        )
    )
    print("\nGolden (sequence KL) of lambda = 1 minus lambda = 0, paired over seeds (negative: on-policy better):")
    print(format_table(comparisons))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _summary_rows(config, finals) -> list[dict]:
    rows = []
    for divergence in config.divergences:
        for lmbda in config.lambdas:
            row = {"variant": _label(divergence, lmbda), "divergence": divergence, "lambda": lmbda}
            for metric in FINAL_METRICS:
                s = distillation.summarise([finals[(divergence, lmbda, seed)][metric] for seed in range(config.seeds)])
                row[metric], row[f"{metric}_se"] = s["mean"], s["se"]
                row[f"{metric}_ci"] = f"[{s['ci_low']:.3g}, {s['ci_high']:.3g}]"
            rows.append(row)
    return rows


def _on_policy_vs_supervised(config, finals) -> list[dict]:
    if 0.0 not in config.lambdas or 1.0 not in config.lambdas:
        return []
    out = []
    for divergence in config.divergences:
        diff = [
            finals[(divergence, 1.0, s)]["golden_seq"] - finals[(divergence, 0.0, s)]["golden_seq"] for s in range(config.seeds)
        ]
        s = distillation.summarise(diff)
        out.append({"divergence": divergence, "difference": s["mean"], "ci_low": s["ci_low"], "ci_high": s["ci_high"]})
    return out


def _plot(config, run_dir, summary_rows, rows, teacher_report) -> dict:
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(summary_rows)
    frame["lambda"] = frame["lambda"].map(lambda v: f"{v:g}")
    bars = run_dir.file("golden_by_divergence.png")
    with figure(bars, 1, 2, figsize=(12, 4.2)) as (_, axes):
        for ax, metric, title in (
            (axes[0], "golden_seq", "golden: KL(p* || S) per completion"),
            (axes[1], "proxy_seq", "proxy: KL(T || S) per completion"),
        ):
            sns.barplot(data=frame, x="divergence", y=metric, hue="lambda", ax=ax, errorbar=None)
            for container, (_, group) in zip(ax.containers, frame.groupby("lambda", sort=False)):
                xs = [bar.get_x() + bar.get_width() / 2 for bar in container]
                ax.errorbar(xs, group[metric], yerr=1.96 * group[f"{metric}_se"], fmt="none", color="black", lw=1)
            ax.set_title(title)
            ax.set_ylabel("nats")
        axes[0].axhline(teacher_report["teacher_kl_seq"], ls="--", color="grey", lw=1, label="teacher's own")
    qd = run_dir.file("quality_diversity.png")
    with figure(qd, 1, 2, figsize=(12, 4.4)) as (_, axes):
        for ax, x in ((axes[0], "entropy"), (axes[1], "distinct_2")):
            sns.scatterplot(data=frame, x=x, y="oracle_loglik", hue="divergence", style="lambda", s=90, ax=ax)
            ax.set_ylabel("oracle log-lik / token of student samples")
            ax.set_xlabel({"entropy": "student entropy / token (nats)", "distinct_2": "distinct-2"}[x])
        axes[0].set_title("quality vs diversity (mean over seeds)")
    curves = run_dir.file("golden_curves.png")
    curve_frame = pd.DataFrame([r for r in rows if r["metric"] == "golden_seq"])
    curve_frame["lambda"] = curve_frame["lmbda"].map(lambda v: f"{v:g}")
    with figure(curves, 1, len(config.divergences), figsize=(3.6 * len(config.divergences), 3.6), squeeze=False, sharey=True) as (
        _,
        axes,
    ):
        for ax, divergence in zip(axes[0], config.divergences):
            sns.lineplot(
                data=curve_frame[curve_frame.divergence == divergence],
                x="step",
                y="value",
                hue="lambda",
                ax=ax,
                errorbar=("ci", 95),
                seed=0,
                n_boot=200,
            )
            ax.set_title(divergence)
            ax.set_ylabel("golden KL(p* || S)")
    return {"golden_by_divergence": bars, "quality_diversity": qd, "golden_curves": curves}


def demo_section(out: Path):
    """The GKD part of ``mdvi-lab demo``: a short lambda x divergence sweep."""
    from experiments.demo import DemoSection

    config = GKDConfig(
        out=out / "gkd", overwrite=True, progress=False, seeds=2, final_samples=64, divergences=("kl",),
        lambdas=(0.0, 1.0),
        task=dataclasses.replace(distillation.DistillTask(), train_prompts=128, heldout_prompts=128,
                                 teacher=dataclasses.replace(distillation.DistillTask().teacher, steps=150, eval_every=150)),
        lm=dataclasses.replace(GKDConfig().lm, steps=100, eval_every=50),
    )  # fmt: skip
    summary = run(config)
    table = format_table(
        [{k: r[k] for k in ("variant", "golden_seq", "proxy_seq", "oracle_loglik", "entropy")} for r in summary["variants"]]
    )
    text = (
        f"Oracle -> teacher (2 layers, width 64, {config.task.teacher.steps} MLE steps; exact per-token KL to the oracle "
        f"{summary['teacher']['teacher_kl_token']:.3f} nats) -> student (1 layer, width 32), "
        f"distilled for {config.lm.steps} steps "
        f"on {config.task.train_prompts} prompts with supervised KD (lambda = 0) and on-policy GKD (lambda = 1), "
        f"{config.seeds} vmapped seeds (forward KL only). "
        "golden_seq = E_x KL(p*(.|x) || S(.|x)) on held-out prompts (exact likelihoods, "
        "Monte Carlo over oracle completions); proxy_seq = the same against the teacher. The full run is `mdvi-lab gkd`.\n\n"
        + table
    )
    return DemoSection(
        title="Distillation: GKD (lambda x divergence) with an exact golden metric",
        text=text,
        figures=[config.out / "golden_by_divergence.png", config.out / "quality_diversity.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
