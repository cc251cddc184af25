"""``mdvi-lab lm-irl``: MLE against IRL-SFT (TD-regularized MLE) on an oracle language model.

A random sparse hidden-Markov oracle (:mod:`envs.token_mdp`) generates a small and a larger
training set; a 2-layer transformer (:mod:`agents.lm`) is trained on each with the IRL-SFT
objective of Wulfmeier et al. (2024, Eq. 14) for every ``lambda`` in ``lambdas`` (``lambda = 0``
is MLE exactly), over ``seeds`` vmapped seeds (each seed draws its own training set; the small
set is the first rows of the larger one). All (data size, lambda, seed) models train in one
compiled, vmapped program.

Measured, with the oracle's exact likelihoods as ground truth:
  * quality: the oracle's log-likelihood per token of model samples, and the model's
    log-likelihood per token of held-out oracle data;
  * diversity: the model's per-token entropy along its samples, distinct-n, Self-BLEU-4 and the
    fraction of samples that copy a training sequence;
  * the Spearman correlation of the recovered reward ``Q(s_t, a_t) - gamma V(s_{t+1})`` with the
    oracle's ``log p(a_t | s_t)`` on held-out data.
Samples are drawn at several temperatures, which traces each model's quality-diversity curve;
"diversity at equal quality" interpolates each curve at the quality of MLE at temperature 1.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents import lm, lm_losses, lm_metrics
from envs import token_mdp
from experiments.results import RunDir, format_table

DIVERSITY_METRICS = ("self_bleu", "entropy", "distinct_2")


@dataclasses.dataclass(frozen=True)
class LMIRLConfig:
    """MLE vs IRL-SFT on a synthetic oracle language model."""

    oracle: Literal["hmm", "markov"] = "hmm"
    """Oracle family (envs/token_mdp.py)."""
    vocab_size: int = 32
    """Regular tokens (plus EOS)."""
    num_hidden: int = 16
    """Hidden states of the HMM oracle."""
    branching: int = 3
    """Successors per hidden state."""
    emission_support: int = 4
    """Tokens each hidden state emits."""
    oracle_temperature: float = 1.0
    """Lower = peakier oracle = lower entropy."""
    smoothing: float = 1e-3
    """Oracle mass spread over all tokens."""
    min_length: int = 16
    """Fewest regular tokens per sequence."""
    max_length: int = 32
    """Most regular tokens per sequence."""
    eos_hazard: float = 0.125
    """Probability of ending at each position between min_length and max_length."""
    oracle_seed: int = 0
    """Seed of the oracle generator."""
    data_sizes: tuple[int, ...] = (256, 2048)
    """Training-set sizes (sequences); each seed's smaller sets are prefixes of its largest."""
    heldout_size: int = 512
    """Held-out oracle sequences (shared by all models)."""
    lambdas: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0)
    """IRL-SFT weights of the squared TD term; 0 is MLE."""
    discount: float = 1.0
    """gamma of the token-level MDP."""
    seeds: int = 3
    """Vmapped seeds per (data size, lambda)."""
    seed: int = 0
    """Master seed (data, initialisation, batches, samples)."""
    steps: int = 600
    """Optimizer steps per model."""
    batch_size: int = 32
    """Sequences per step."""
    learning_rate: float = 1e-3
    """Peak Adam learning rate (warmup then cosine decay)."""
    width: int = 64
    """Transformer width."""
    num_layers: int = 2
    """Transformer layers."""
    eval_every: int = 100
    """Steps between two points of the training curves."""
    curve_samples: int = 64
    """Model samples per training-curve point."""
    final_samples: int = 256
    """Model samples per temperature at the end."""
    temperatures: tuple[float, ...] = (0.7, 0.85, 1.0, 1.15)
    """Sampling temperatures of the final evaluation (must include 1.0)."""
    bleu_order: int = 4
    """Self-BLEU's n-gram order."""
    chunk: int = 100
    """Steps per jitted call (progress-bar granularity; a multiple of eval_every)."""
    out: Path = Path("results/lm_irl")
    """Output folder."""
    overwrite: bool = False
    """Replace the run already in --out (otherwise such a folder is refused)."""
    progress: bool = True
    """Show progress bars."""

    def build_oracle(self) -> token_mdp.TokenOracle:
        return token_mdp.random_oracle(
            self.oracle,
            vocab_size=self.vocab_size,
            num_hidden=self.num_hidden,
            branching=self.branching,
            emission_support=self.emission_support,
            temperature=self.oracle_temperature,
            smoothing=self.smoothing,
            min_length=self.min_length,
            max_length=self.max_length,
            eos_hazard=self.eos_hazard,
            seed=self.oracle_seed,
        )

    def lm_config(self) -> lm.LMConfig:
        return lm.LMConfig(
            num_actions=self.vocab_size + 1,
            window=self.max_length + 1,
            min_length=self.min_length,
            num_layers=self.num_layers,
            width=self.width,
            objective="irl_sft",
            lam=0.0,
            discount=self.discount,
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            steps=self.steps,
            eval_every=self.eval_every,
        )


def _validate(config: LMIRLConfig) -> None:
    if not config.data_sizes or any(n < 2 for n in config.data_sizes):
        raise ValueError(f"data_sizes must be >= 2 each, got {config.data_sizes}")
    if not config.lambdas or any(not (lam >= 0 and math.isfinite(lam)) for lam in config.lambdas):
        raise ValueError(f"lambdas must be finite and >= 0, got {config.lambdas}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    if config.heldout_size < 2 or config.final_samples < 2 or config.curve_samples < 1:
        raise ValueError("heldout_size and final_samples must be >= 2, curve_samples >= 1")
    if 1.0 not in config.temperatures or any(t <= 0 for t in config.temperatures):
        raise ValueError(f"temperatures must be > 0 and include 1.0, got {config.temperatures}")
    if config.chunk % config.eval_every or config.steps % config.chunk:
        raise ValueError(
            f"chunk ({config.chunk}) must be a multiple of eval_every ({config.eval_every}) and divide steps ({config.steps})"
        )


def _variant(data_size: int, lam: float) -> str:
    return f"{'MLE' if lam == 0 else f'IRL-SFT lambda={lam:g}'}, N={data_size}"


def run(config: LMIRLConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    _validate(config)
    started = time.perf_counter()
    oracle = config.build_oracle()  # validates the oracle's arguments
    lm_config = config.lm_config()  # validates the learner's
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    key = jax.random.key(config.seed)
    key_data, key_heldout, key_train, key_final = jax.random.split(key, 4)
    max_size = max(config.data_sizes)
    sample_oracle = jax.jit(token_mdp.sample, static_argnums=2)
    train_tokens = jax.vmap(lambda k: sample_oracle(oracle, k, max_size))(jax.random.split(key_data, config.seeds))
    heldout = sample_oracle(oracle, key_heldout, config.heldout_size)
    heldout_mask = token_mdp.sequence_mask(heldout)
    heldout_scores = token_mdp.score(oracle, heldout)
    _, apply = lm.network(lm_config)

    def evaluate(params, key):
        logits = lm.model_logits(apply, params, heldout, lm_config.bos)
        samples = lm.sample_sequences(lm_config, params, key, config.curve_samples)
        sample_scores = token_mdp.score(oracle, samples.tokens)
        return {
            "heldout_nll": lm_losses.mle_loss(logits, heldout, heldout_mask),
            "sample_quality": lm_losses.masked_mean(sample_scores.step_log_probs, samples.mask),
            "sample_entropy": lm_losses.masked_mean(samples.entropy, samples.mask),
        }

    trainer = lm.make_trainer(lm_config, evaluate)
    variants = [(n, lam) for n in config.data_sizes for lam in config.lambdas]
    lams = jnp.asarray([lam for _, lam in variants], dtype=jnp.float32)
    sizes = jnp.asarray([n for n, _ in variants], dtype=jnp.int32)
    seed_keys = jax.random.split(key_train, config.seeds)
    # [variants, seeds] models: the outer vmap is over (data size, lambda), the inner over seeds.
    init = jax.jit(jax.vmap(trainer.init))
    state = init(seed_keys, train_tokens)
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (len(variants), *x.shape)), state)
    intervals = config.chunk // config.eval_every
    run_chunk = jax.jit(
        jax.vmap(
            jax.vmap(lambda s, t, lam, n: trainer.run(s, t, lam, n, intervals), in_axes=(0, 0, None, None)),
            in_axes=(0, None, 0, 0),
        )
    )
    curves = []
    models = len(variants) * config.seeds
    bar = tqdm(total=config.steps, desc=f"lm-irl: {models} models (vmapped)", disable=not config.progress, leave=False)
    for _ in range(config.steps // config.chunk):
        state, chunk_curves = run_chunk(state, train_tokens, lams, sizes)
        curves.append(jax.device_get(chunk_curves))
        bar.update(config.chunk)
    bar.close()
    curves = {name: np.concatenate([c[name] for c in curves], axis=-1) for name in curves[0]}  # [V, S, points]
    params = state.params
    train_seconds = time.perf_counter() - started

    # Final evaluation: samples at each temperature, and the recovered reward on held-out data.
    final = _final_evaluation(config, lm_config, oracle, params, key_final, train_tokens, heldout, heldout_scores)
    rows, points = _tidy(config, variants, curves, final)
    oracle_reference = _oracle_reference(config, oracle, heldout, heldout_scores)
    equal_quality = _equal_quality(config, variants, points)
    elapsed = time.perf_counter() - started

    csv_path = run_dir.write_metrics(
        rows, columns=["variant", "data_size", "lam", "seed", "step", "temperature", "metric", "value"]
    )
    figures = _plot(config, run_dir, rows, points, oracle_reference)
    summary_rows = _summary_rows(config, variants, points)
    summary = {
        "oracle": {
            "kind": config.oracle,
            "vocab_size": config.vocab_size,
            "lengths": [config.min_length, config.max_length],
            **oracle_reference,
        },
        "variants": summary_rows,
        "equal_quality": equal_quality,
        "models": models,
        "seconds": elapsed,
        "train_seconds": train_seconds,
        "files": {"metrics": csv_path.name, **{k: Path(v).name for k, v in figures.items()}},
    }
    run_dir.write_summary(summary)
    print(f"\nMLE vs IRL-SFT on a {config.oracle} oracle ({config.seeds} seeds, {config.steps} steps, T = 1 samples)")
    print(format_table(summary_rows))
    print("\nDiversity at the quality of MLE at T = 1 (interpolated along the temperature curve):")
    print(format_table(equal_quality))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _final_evaluation(config, lm_config, oracle, params, key, train_tokens, heldout, heldout_scores):
    temperatures = jnp.asarray(config.temperatures, dtype=jnp.float32)
    _, apply = lm.network(lm_config)
    heldout_mask = token_mdp.sequence_mask(heldout)

    def per_model(params, key):
        def per_temperature(temperature, key):
            samples = lm.sample_sequences(lm_config, params, key, config.final_samples, temperature)
            scores = token_mdp.score(oracle, samples.tokens)
            return samples.tokens, scores.step_log_probs, samples.entropy, samples.mask

        keys = jax.random.split(key, len(config.temperatures))
        sampled = jax.vmap(per_temperature)(temperatures, keys)
        logits = lm.model_logits(apply, params, heldout, lm_config.bos)
        reward = lm_losses.recovered_reward(logits, heldout, heldout_mask, discount=config.discount)
        nll = lm_losses.mle_loss(logits, heldout, heldout_mask)
        return sampled, reward, nll

    V, S = jax.tree.leaves(params)[0].shape[:2]
    keys = jax.random.split(key, V * S).reshape(V, S)
    fn = jax.jit(jax.vmap(jax.vmap(per_model)))
    (tokens, oracle_lp, entropy, mask), reward, nll = jax.device_get(fn(params, keys))
    results = {}
    bar = tqdm(total=V * S, desc="lm-irl: diversity metrics", disable=not config.progress, leave=False)
    train_sets = [{tuple(s) for s in token_mdp.strip(np.asarray(train_tokens[s]))} for s in range(S)]
    for v in range(V):
        for s in range(S):
            per_t = []
            for i, temperature in enumerate(config.temperatures):
                m = mask[v, s, i]
                sequences = token_mdp.strip(tokens[v, s, i])
                per_t.append(
                    {
                        "temperature": float(temperature),
                        "quality": float((oracle_lp[v, s, i] * m).sum() / m.sum()),
                        "entropy": float((entropy[v, s, i] * m).sum() / m.sum()),
                        "self_bleu": lm_metrics.self_bleu(sequences, config.bleu_order),
                        "distinct_2": lm_metrics.distinct_n(sequences, 2),
                        "distinct_3": lm_metrics.distinct_n(sequences, 3),
                        "copy_rate": float(np.mean([tuple(x) in train_sets[s] for x in sequences])),
                    }
                )
            correlation = lm_metrics.reward_correlation(
                reward[v, s], np.asarray(heldout_scores.step_log_probs), np.asarray(heldout_mask)
            )
            results[(v, s)] = {"per_temperature": per_t, "reward_spearman": correlation, "heldout_nll": float(nll[v, s])}
            bar.update(1)
    bar.close()
    return results


def _tidy(config, variants, curves, final):
    rows, points = [], []
    steps = np.arange(1, curves["loss"].shape[-1] + 1) * config.eval_every
    for v, (n, lam) in enumerate(variants):
        name = _variant(n, lam)
        for s in range(config.seeds):
            base = {"variant": name, "data_size": n, "lam": lam, "seed": s}
            for metric, values in curves.items():
                for step, value in zip(steps, values[v, s]):
                    temperature = 1.0 if metric.startswith("sample") else ""
                    rows.append({**base, "step": int(step), "temperature": temperature, "metric": metric, "value": float(value)})
            result = final[(v, s)]
            # (the final held-out NLL is the last point of the heldout_nll curve)
            rows.append(
                {**base, "step": config.steps, "temperature": "", "metric": "reward_spearman", "value": result["reward_spearman"]}
            )
            for point in result["per_temperature"]:
                for metric, value in point.items():
                    if metric != "temperature":
                        rows.append(
                            {**base, "step": config.steps, "temperature": point["temperature"], "metric": metric, "value": value}
                        )
                points.append(
                    {**base, **point, "reward_spearman": result["reward_spearman"], "heldout_nll": result["heldout_nll"]}
                )
    return rows, points


def _oracle_reference(config, oracle, heldout, heldout_scores) -> dict:
    mask = np.asarray(heldout_scores.mask)
    sequences = token_mdp.strip(np.asarray(heldout))[: config.final_samples]
    return {
        "quality": float(np.asarray(heldout_scores.step_log_probs).sum() / mask.sum()),
        "entropy": float(np.asarray(heldout_scores.entropy).sum() / mask.sum()),
        "self_bleu": lm_metrics.self_bleu(sequences, config.bleu_order),
        "distinct_2": lm_metrics.distinct_n(sequences, 2),
        "distinct_3": lm_metrics.distinct_n(sequences, 3),
        "mean_length": float(np.mean([len(s) for s in token_mdp.strip(np.asarray(heldout))])),
    }


def _mean_se(values) -> tuple[float, float]:
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else 0.0
    return float(values.mean()), se


def _summary_rows(config, variants, points) -> list[dict]:
    rows = []
    for n, lam in variants:
        at_one = [p for p in points if p["data_size"] == n and p["lam"] == lam and p["temperature"] == 1.0]
        row = {"variant": _variant(n, lam), "N": n, "lambda": lam}
        for metric in ("quality", "heldout_nll", "entropy", "self_bleu", "distinct_2", "copy_rate", "reward_spearman"):
            mean, se = _mean_se([p[metric] for p in at_one])
            row[metric] = mean
            row[f"{metric}_se"] = se
        rows.append(row)
    return rows


def _interpolate_at_quality(points, target: float, metric: str) -> float:
    """The metric on one model's temperature curve where its quality equals ``target`` (NaN outside)."""
    quality = np.asarray([p["quality"] for p in points])
    values = np.asarray([p[metric] for p in points])
    order = np.argsort(quality)
    quality, values = quality[order], values[order]
    if target < quality[0] or target > quality[-1]:
        return math.nan
    return float(np.interp(target, quality, values))


def _equal_quality(config, variants, points) -> list[dict]:
    rows = []
    for n in config.data_sizes:
        mle_at_one = [p["quality"] for p in points if p["data_size"] == n and p["lam"] == 0.0 and p["temperature"] == 1.0]
        if not mle_at_one:
            continue
        target = float(np.mean(mle_at_one))
        for lam in config.lambdas:
            row = {"N": n, "lambda": lam, "target_quality": target}
            for metric in DIVERSITY_METRICS:
                per_seed = []
                for s in range(config.seeds):
                    curve = [p for p in points if p["data_size"] == n and p["lam"] == lam and p["seed"] == s]
                    per_seed.append(_interpolate_at_quality(curve, target, metric))
                mean, se = _mean_se(per_seed)
                row[metric] = mean
                row[f"{metric}_se"] = se
                row[f"{metric}_seeds_in_range"] = int(np.sum(np.isfinite(per_seed)))
            rows.append(row)
    return rows


def _plot(config, run_dir, rows, points, oracle_reference) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    frame = pd.DataFrame(points)
    frame["lambda"] = frame["lam"].map(lambda x: "MLE (0)" if x == 0 else f"{x:g}")
    hue_order = ["MLE (0)"] + [f"{x:g}" for x in config.lambdas if x != 0]
    mean = frame.groupby(["data_size", "lambda", "temperature"], as_index=False)[
        ["quality", "entropy", "self_bleu", "distinct_2"]
    ].mean()
    sizes = list(config.data_sizes)
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.6 * len(sizes), 7.2), squeeze=False, sharey=True)
    for col, n in enumerate(sizes):
        for row, (metric, label) in enumerate(
            (("self_bleu", "Self-BLEU-4 (lower = more diverse)"), ("entropy", "per-token entropy (nats)"))
        ):
            ax = axes[row, col]
            data = mean[mean.data_size == n]
            sns.scatterplot(
                data=frame[frame.data_size == n],
                x=metric,
                y="quality",
                hue="lambda",
                hue_order=hue_order,
                ax=ax,
                alpha=0.25,
                s=14,
                legend=False,
            )
            sns.lineplot(
                data=data,
                x=metric,
                y="quality",
                hue="lambda",
                hue_order=hue_order,
                sort=False,
                marker="o",
                ax=ax,
                legend=(row == 0 and col == len(sizes) - 1),
                estimator=None,
            )
            ax.scatter(
                [oracle_reference[metric]],
                [oracle_reference["quality"]],
                marker="*",
                s=160,
                color="black",
                zorder=5,
                label="oracle",
            )
            ax.set_xlabel(label)
            ax.set_ylabel("oracle log-lik / token of samples")
            ax.set_title(f"N = {n} training sequences")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    if axes[0, -1].get_legend() is not None:
        axes[0, -1].get_legend().remove()
    fig.legend(handles, labels, title="lambda", loc="center right")
    fig.suptitle("Quality vs diversity (temperatures " + ", ".join(f"{t:g}" for t in config.temperatures) + "; star = oracle)")
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    qd_path = run_dir.file("quality_diversity.png")
    fig.savefig(qd_path, dpi=100)
    plt.close(fig)

    curve_frame = pd.DataFrame(
        [r for r in rows if r["metric"] in ("heldout_nll", "sample_quality", "td_squared") and r["step"] <= config.steps]
    )
    curve_frame["lambda"] = curve_frame["lam"].map(lambda x: "MLE (0)" if x == 0 else f"{x:g}")
    titles = {
        "heldout_nll": "held-out NLL / token",
        "sample_quality": "oracle log-lik / token (T = 1)",
        "td_squared": "mean squared implicit reward",
    }
    fig, axes = plt.subplots(len(sizes), 3, figsize=(13, 3.4 * len(sizes)), squeeze=False)
    for r, n in enumerate(sizes):
        for c, metric in enumerate(titles):
            ax = axes[r, c]
            data = curve_frame[(curve_frame.data_size == n) & (curve_frame.metric == metric)]
            data = data[data.step <= config.steps]
            sns.lineplot(
                data=data,
                x="step",
                y="value",
                hue="lambda",
                hue_order=hue_order,
                errorbar=("ci", 95),
                ax=ax,
                legend=(r == 0 and c == 2),
                seed=0,
                n_boot=200,
            )
            if metric == "heldout_nll":
                ax.axhline(-oracle_reference["quality"], ls="--", color="grey", lw=1)
            if metric == "sample_quality":
                ax.axhline(oracle_reference["quality"], ls="--", color="grey", lw=1)
            if metric == "td_squared":
                ax.set_yscale("log")
            ax.set_title(f"{titles[metric]}, N = {n}")
            ax.set_ylabel("")
    fig.tight_layout()
    curves_path = run_dir.file("training_curves.png")
    fig.savefig(curves_path, dpi=90)
    plt.close(fig)
    return {"quality_diversity": qd_path, "training_curves": curves_path}


def demo_section(out: Path):
    """The language-model part of ``mdvi-lab demo``: MLE vs IRL-SFT, short runs."""
    from experiments.demo import DemoSection

    config = LMIRLConfig(
        out=out / "lm_irl",
        overwrite=True,
        data_sizes=(256,),
        lambdas=(0.0, 1.0),
        seeds=2,
        steps=200,
        chunk=200,
        eval_every=100,
        curve_samples=32,
        heldout_size=256,
        final_samples=128,
        temperatures=(0.85, 1.0, 1.15),
        progress=False,
    )
    summary = run(config)
    table = format_table(
        [
            {k: row[k] for k in ("variant", "quality", "heldout_nll", "entropy", "self_bleu", "reward_spearman")}
            for row in summary["variants"]
        ]
    )
    text = (
        f"A 2-layer transformer trained for {config.steps} steps on {config.data_sizes[0]} sequences of a sparse "
        f"HMM oracle (vocabulary {config.vocab_size} + EOS, lengths {config.min_length}-{config.max_length}), "
        f"with MLE and with IRL-SFT (lambda = 1), {config.seeds} vmapped seeds. Quality is the oracle's exact "
        "log-likelihood per token of the model's samples (oracle: "
        f"{summary['oracle']['quality']:.3f}); reward_spearman correlates the recovered reward "
        "Q(s,a) - V(s') with the oracle's log-probabilities on held-out data. The full run is "
        "`mdvi-lab lm-irl`.\n\n" + table
    )
    return DemoSection(
        title="Language models: MLE vs IRL-SFT on an exact oracle",
        text=text,
        figures=[config.out / "quality_diversity.png", config.out / "training_curves.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
