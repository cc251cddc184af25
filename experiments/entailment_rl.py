"""``mdvi-lab entailment-rl``: RL from entailment feedback (Roit et al. 2023) with golden scores.

The summarisation task of :mod:`envs.alignment`: sources are oracle prefixes, summaries short
completions, and consistency, informativeness, extractiveness and length are exact. Per seed:

1. SFT: MLE on reference summaries from a noisy rule that hallucinates, so the SFT policy is
   measurably inconsistent;
2. an entailment classifier (the transformer with a binary head, fine-tuned from the SFT torso,
   :mod:`agents.lm.reward_models`) on labelled (source, summary) pairs;
3. RLOO (:func:`agents.lm.rl.rloo_objective`) against the classifier's entailment probability
   with the KL penalty ``beta log(pi / pi_SFT)``, for every ``beta`` of a sweep (all policies in
   one vmapped program).

Every policy is evaluated exactly over all summaries of the held-out sources: the golden scores'
expectations, ``KL(pi || pi_SFT)``, and ``KL(pi || pi*_beta)`` to the KL-regularized optimum
``pi*_beta ∝ pi_SFT exp(r / beta)`` computed by the core (:func:`agents.lm.rl.kl_optimum`), whose
own golden scores are reported too (what RL would reach if it optimised exactly).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents.lm import LMConfig, language_model, reward_models, rl
from agents.lm.reward_models import RewardConfig
from envs import alignment, token_mdp
from experiments import align_common, stats
from experiments.plotting import figure
from experiments.results import RunDir, format_table
from experiments.warm import MODEL

SCORES = ("consistency", "entailed", "informativeness", "extractiveness", "length")


@dataclasses.dataclass(frozen=True)
class EntailmentRLConfig:
    """SFT on hallucinating references, then KL-regularized RL against a learned entailment classifier."""

    task: alignment.SummaryConfig = alignment.SummaryConfig()
    """The summarisation task (envs/alignment.py); its summaries are enumerable."""
    sft: LMConfig = LMConfig(model=MODEL, objective="mle", batch_size=32, steps=400, eval_every=100, learning_rate=3e-3)
    """The SFT policy (MLE on reference summaries); its model is every network's."""
    train_sources: int = 512
    heldout_sources: int = 32
    """Held-out sources: exact evaluation over all their summaries."""
    references_per_source: int = 2
    """Noisy reference summaries per train source (the SFT data)."""
    classifier: RewardConfig = RewardConfig(kind="binary", steps=400, batch_size=32, learning_rate=1e-3, warmup_steps=40)
    classifier_pairs: int = 2048
    """Labelled (source, summary) pairs for the entailment classifier."""
    betas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0)
    """KL weights of RL."""
    rl: LMConfig = LMConfig(
        model=MODEL, objective="mle", batch_size=16, steps=300, eval_every=50, learning_rate=1e-3, warmup_steps=10
    )
    """RLOO's optimizer and steps (batch_size sources per step; the model is the SFT's)."""
    rl_samples: int = 4
    rl_chunk: int = 50
    seeds: int = 3
    seed: int = 0
    out: Path = Path("results/entailment_rl")
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.seeds < 1 or self.train_sources < 2 or self.heldout_sources < 1 or self.classifier_pairs < 2:
            raise ValueError("seeds, heldout_sources must be >= 1 and train_sources, classifier_pairs >= 2")
        if not self.betas or any(not (b > 0 and math.isfinite(b)) for b in self.betas):
            raise ValueError(f"betas must be finite and > 0, got {self.betas}")
        if self.references_per_source < 1:
            raise ValueError(f"references_per_source must be >= 1, got {self.references_per_source}")
        if self.rl_samples < 2:
            raise ValueError(f"rl_samples must be >= 2 (leave-one-out), got {self.rl_samples}")
        if self.rl_chunk < 1 or self.rl_chunk % self.rl.eval_every or self.rl.steps % self.rl_chunk:
            raise ValueError(f"rl_chunk ({self.rl_chunk}) must be a multiple of rl.eval_every and divide rl.steps")


def run(config: EntailmentRLConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    config.validate()
    started = time.perf_counter()
    task = config.task.build()
    space, P, S, B = task.space, task.prompt_length, config.seeds, len(config.betas)
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    keys = jax.random.split(jax.random.key(config.seed), 8)
    train_sources, heldout_sources = token_mdp.split_prompts(
        task.oracle, keys[0], config.train_sources, config.heldout_sources, P
    )
    seed_keys = jax.random.split(keys[1], S)

    repeated = jnp.repeat(train_sources, config.references_per_source, 0)
    sft_data = jnp.stack([task.reference_summaries(k, repeated) for k in seed_keys])
    sft_params = jax.block_until_ready(align_common.train_sft(config.sft, space, keys[2], sft_data))
    timings = {"sft": time.perf_counter() - started}
    model = language_model(config.sft.model, space)

    # Entailment classifier per seed, fine-tuned from the SFT torso.
    pair_sources = train_sources[jnp.arange(config.classifier_pairs) % config.train_sources]
    pairs = [task.classifier_pairs(jax.random.fold_in(k, 7), pair_sources) for k in seed_keys]
    data = {"tokens": jnp.stack([p[0] for p in pairs]), "labels": jnp.stack([p[1] for p in pairs])}
    init = jax.vmap(lambda p, k: reward_models.init_from_lm(p, config.sft.model, space, k))(
        sft_params, jax.random.split(keys[3], S)
    )
    train = reward_models.make_reward_train(config.classifier, config.sft.model, space)
    classifier, classifier_losses = jax.jit(jax.vmap(train, in_axes=(0, 0, 0, None)))(
        jax.random.split(keys[4], S), init, data, config.classifier.learning_rate
    )
    apply = reward_models.reward_model(config.sft.model, space).apply
    jax.block_until_ready(classifier)
    timings["classifier"] = time.perf_counter() - started - sum(timings.values())

    # Exact evaluation sets: every summary of every held-out source.
    completions = alignment.enumerate_completions(space, heldout_sources)
    X, Mc, T = completions.shape
    flat = completions.reshape(X * Mc, T)
    golden = {name: value.reshape(X, Mc).astype(jnp.float32) for name, value in task.scores(flat).items()}
    log_probs = align_common.policy_log_probs(model)
    log_ref = jax.jit(jax.vmap(log_probs, in_axes=(0, None)))(sft_params, completions)  # [S, X, Mc]
    logits = jax.jit(jax.vmap(lambda p, t: reward_models.sequence_scores(apply, p, t), in_axes=(0, None)))(classifier, flat)
    logits = logits.reshape(S, X, Mc)
    reward_all = jax.nn.sigmoid(logits)
    heldout_tokens, heldout_labels = task.classifier_pairs(keys[5], heldout_sources[jnp.arange(1024) % X])
    classifier_accuracy = [
        float(
            jnp.mean(
                (reward_models.sequence_scores(apply, align_common.take(classifier, s), heldout_tokens) > 0)
                == (heldout_labels > 0)
            )
        )
        for s in range(S)
    ]
    # on the SFT policy's own summaries, weighted exactly by pi_SFT
    sft_accuracy = [
        float(jnp.mean(jnp.sum(jnp.exp(log_ref[s]) * ((logits[s] > 0) == (golden["entailed"] > 0)), -1))) for s in range(S)
    ]

    rows, points = [], []

    def record(policy: str, beta, seed: int, step, metrics: dict):
        point = {"policy": policy, "beta": beta, "seed": seed, "step": step, **{k: float(v) for k, v in metrics.items()}}
        points.append(point)
        for metric, value in metrics.items():
            rows.append({"policy": policy, "beta": beta, "seed": seed, "step": step, "metric": metric, "value": float(value)})

    for s in range(S):
        record(
            "SFT",
            "",
            s,
            0,
            {
                **align_common.exact_policy_metrics(log_ref[s], log_ref[s], golden),
                "classifier_reward": jnp.mean(jnp.sum(jnp.exp(log_ref[s]) * reward_all[s], -1)),
            },
        )
        for beta in config.betas:
            log_star = rl.kl_optimum(reward_all[s], log_ref[s], beta)
            metrics = align_common.exact_policy_metrics(log_star, log_ref[s], golden)
            metrics["classifier_reward"] = jnp.mean(jnp.sum(jnp.exp(log_star) * reward_all[s], -1))
            record("optimum pi*", beta, s, "", metrics)

    # RLOO for every (beta, seed), vmapped.
    R = B * S
    seed_of = jnp.tile(jnp.arange(S), B)
    beta_of = jnp.repeat(jnp.asarray(config.betas, jnp.float32), S)
    log_star_all = jax.vmap(rl.kl_optimum)(reward_all[seed_of], log_ref[seed_of], beta_of)  # [R, X, Mc]

    def evaluate(params, index, data):
        log_pi = log_probs(params, data["completions"])
        ref = data["log_ref"][data["seed_of"][index]]
        out = align_common.exact_policy_metrics(log_pi, ref, data["golden"])
        out["kl_optimum"] = jnp.mean(rl.exact_kl(log_pi, data["log_star"][index]))
        out["classifier_reward"] = jnp.mean(jnp.sum(jnp.exp(log_pi) * data["reward"][data["seed_of"][index]], -1))
        return out

    evaluation_data = {
        "completions": completions,
        "log_ref": log_ref,
        "seed_of": seed_of,
        "golden": golden,
        "log_star": log_star_all,
        "reward": reward_all,
    }

    def entailment_reward(params, tokens):
        return jax.nn.sigmoid(reward_models.sequence_scores(apply, params, tokens))

    sft_of = align_common.take(sft_params, seed_of)
    prompt_rows = jnp.broadcast_to(jnp.pad(train_sources, ((0, 0), (0, T - P))), (R, config.train_sources, T))
    _, curves, evaluations = align_common.rl_runs(
        "rloo_entailment", dataclasses.replace(config.rl, model=config.sft.model), space, entailment_reward, config.rl_samples,
        keys[6], sft_of, {"reference": sft_of, "reward": align_common.take(classifier, seed_of)}, prompt_rows, beta_of,
        evaluate, evaluation_data, config.rl_chunk, config.progress, "entailment-rl: RLOO",
    )  # fmt: skip
    timings["rl"] = time.perf_counter() - started - sum(timings.values())
    steps = np.arange(evaluations["kl_ref"].shape[-1]) * config.rl_chunk
    for i in range(R):
        beta, s = config.betas[i // S], int(seed_of[i])
        for j, step in enumerate(steps):
            record("RL", beta, s, int(step), {k: v[i, j] for k, v in evaluations.items()})
        for metric, values in curves.items():
            for j, value in enumerate(values[i]):
                rows.append(
                    {
                        "policy": "RL (training batch)",
                        "beta": beta,
                        "seed": s,
                        "step": (j + 1) * config.rl.eval_every,
                        "metric": metric,
                        "value": float(value),
                    }
                )
    elapsed = time.perf_counter() - started

    csv_path = run_dir.write_metrics(rows, columns=["policy", "beta", "seed", "step", "metric", "value"])
    table = _table(points, config)
    figures = _plot(config, run_dir, points)
    summary = {
        "task": {
            "source_length": P,
            "max_summary": config.task.max_summary,
            "summaries_per_source": int(Mc),
            "hallucination": config.task.hallucination,
        },
        "classifier_accuracy_heldout_pairs": stats.mean_se(classifier_accuracy),
        "classifier_accuracy_on_sft_summaries": stats.mean_se(sft_accuracy),
        "classifier_final_train_loss": stats.mean_se(np.asarray(classifier_losses)[:, -20:].mean(-1).tolist()),
        "final": table,
        "seeds": S,
        "seconds": elapsed,
        "stage_seconds": timings,
        "files": {"metrics": csv_path.name, **{k: Path(v).name for k, v in figures.items()}},
    }
    run_dir.write_summary(summary)
    print(
        f"\nRL from entailment feedback ({S} seeds, {config.rl.steps} RLOO steps, exact expectations over {Mc} summaries/source)"
    )
    accuracy = summary["classifier_accuracy_heldout_pairs"][0], summary["classifier_accuracy_on_sft_summaries"][0]
    print(f"classifier accuracy: held-out pairs {accuracy[0]:.3f}, on SFT summaries {accuracy[1]:.3f}")
    print(format_table(table))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _table(points, config) -> list[dict]:
    rows = []
    final_step = config.rl.steps
    groups = [("SFT", "", lambda p: p["policy"] == "SFT")]
    for beta in config.betas:
        groups.append(("RL", beta, lambda p, b=beta: p["policy"] == "RL" and p["beta"] == b and p["step"] == final_step))
        groups.append(("optimum pi*", beta, lambda p, b=beta: p["policy"] == "optimum pi*" and p["beta"] == b))
    for policy, beta, keep in groups:
        chosen = [p for p in points if keep(p)]
        row = {"policy": policy, "beta": beta}
        for metric in ("consistency", "informativeness", "extractiveness", "length", "kl_ref", "kl_optimum"):
            values = [p[metric] for p in chosen if metric in p]
            if not values:
                continue
            mean, _ = stats.mean_se(values)
            low, high = stats.interval(values) if len(values) > 1 else (math.nan, math.nan)
            row[metric] = mean
            if metric == "consistency":
                row["consistency 95% CI"] = f"[{low:.3f}, {high:.3f}]"
        rows.append(row)
    return rows


def _plot(config, run_dir, points) -> dict:
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(points)
    final = frame[(frame.policy == "RL") & (frame.step == config.rl.steps)]
    optimum = frame[frame.policy == "optimum pi*"]
    sft = frame[frame.policy == "SFT"]
    panels = (
        ("consistency", "golden consistency"),
        ("informativeness", "informativeness"),
        ("extractiveness", "extractiveness (longest copied span)"),
        ("length", "summary length"),
    )
    beta_path = run_dir.file("scores_vs_beta.png")
    with figure(beta_path, 1, 4, figsize=(17, 4.0)) as (_, axes):
        for ax, (metric, label) in zip(axes, panels):
            sns.lineplot(
                data=final, x="beta", y=metric, marker="o", errorbar=("ci", 95), ax=ax, label="RLOO (final)", seed=0, n_boot=200
            )
            sns.lineplot(
                data=optimum,
                x="beta",
                y=metric,
                marker="s",
                ls="--",
                errorbar=("ci", 95),
                ax=ax,
                label="optimum pi* (core)",
                seed=0,
                n_boot=200,
            )
            ax.axhline(sft[metric].mean(), color="grey", ls=":", label="SFT")
            ax.set_xscale("log")
            ax.set_title(label)
            ax.legend(fontsize=7)
    kl_path = run_dir.file("scores_vs_kl.png")
    rl = frame[frame.policy == "RL"].copy()
    rl["beta"] = rl["beta"].map(lambda b: f"{b:g}")
    with figure(kl_path, 1, 4, figsize=(17, 4.0)) as (_, axes):
        for ax, (metric, label) in zip(axes, panels):
            sns.lineplot(
                data=rl,
                x="kl_ref",
                y=metric,
                hue="beta",
                units="seed",
                estimator=None,
                sort=False,
                marker=".",
                alpha=0.7,
                ax=ax,
                legend=ax is axes[-1],
            )
            ax.set_xlabel("KL(pi || SFT), exact (nats)")
            ax.set_title(f"{label} along training")
    return {"scores_vs_beta": beta_path, "scores_vs_kl": kl_path}


def demo_section(out: Path):
    """The entailment-RL part of ``mdvi-lab demo``: short runs, 2 seeds, 3 betas."""
    from experiments.demo import DemoSection

    config = EntailmentRLConfig(
        out=out / "entailment_rl",
        overwrite=True,
        sft=dataclasses.replace(EntailmentRLConfig.sft, steps=200),
        classifier=dataclasses.replace(EntailmentRLConfig.classifier, steps=200),
        train_sources=256,
        heldout_sources=16,
        classifier_pairs=1024,
        betas=(0.01, 0.1, 1.0),
        rl=dataclasses.replace(EntailmentRLConfig.rl, steps=100),
        seeds=2,
        progress=False,
    )
    summary = run(config)
    text = (
        "RL from entailment feedback (Roit et al. 2023) on a summarisation task with golden scores: SFT on reference "
        f"summaries that hallucinate {config.task.hallucination:.0%} of their tokens, an entailment classifier fine-tuned "
        "from the SFT policy, then RLOO against its entailment probability for several KL weights beta. Expectations "
        "are exact over all summaries of the held-out sources; 'optimum pi*' is the core's KL-regularized optimum for the "
        "same reward. The full run is `mdvi-lab entailment-rl`.\n\n" + format_table(summary["final"])
    )
    return DemoSection(
        title="RL from entailment feedback: consistency vs beta",
        text=text,
        figures=[config.out / "scores_vs_beta.png", config.out / "scores_vs_kl.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
