"""``mdvi-lab fdiv``: Fenchel-Young f-losses against cross-entropy on an exact oracle LM.

Roulet et al. (2025, arXiv 2501.18537, Sec. 5) train language models with the Fenchel-Young loss
of an f-divergence (the alpha = 1.5 divergence: 1.5-entmax) instead of the cross-entropy, and
report sparse next-token distributions that sample fewer implausible tokens. Here the claim is
measured where ground truth is exact: a sparse hidden-Markov oracle (:mod:`envs.token_mdp`)
generates the data, the lab's small transformer (:mod:`agents.lm`) is trained with each loss in
``losses`` (``"mle"``: cross-entropy; ``"fy:<divergence>:<unit|uniform>"``: the f-loss with that
reference, :mod:`agents.lm.f_objectives`), ``seeds`` seeds vmapped per loss.

Each model is the f-softargmax of its logits; evaluation and sampling use that distribution
(softmax for cross-entropy). Metrics per model: next-token accuracy and held-out NLL per token
(``inf`` when the model gives a held-out token probability 0, so "where defined"; the rate of
such tokens is reported), and on ``samples`` model samples at temperature 1: the oracle's exact
log-likelihood per token (with each token floored at ``near_zero``, and the exact value, which is
``-inf`` as soon as one sampled token is impossible), the rate of sampled tokens the oracle gives
probability below ``near_zero``, the support size of the model's distribution per step, entropy,
distinct-2 and Self-BLEU.
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

from agents.lm import LMConfig, language_model, make_train
from agents.lm import losses as lm_losses
from agents.lm import metrics as lm_metrics
from agents.lm.f_objectives import FLoss, parse_f_loss
from agents.lm.sampling import sample
from envs import token_mdp
from experiments import stats
from experiments.plotting import figure
from experiments.results import RunDir, format_table

METRICS = (
    "accuracy", "heldout_nll", "heldout_zero_rate", "oracle_loglik", "oracle_loglik_floored",
    "impossible_rate", "support", "entropy", "distinct_2", "self_bleu",
)  # fmt: skip
PLOTTED = ("impossible_rate", "accuracy", "oracle_loglik_floored", "support")


@dataclasses.dataclass(frozen=True)
class FDivConfig:
    """Cross-entropy vs Fenchel-Young f-losses on a synthetic oracle language model."""

    oracle: token_mdp.OracleConfig = token_mdp.OracleConfig()
    """The oracle language model (envs/token_mdp.py)."""
    lm: LMConfig = LMConfig(objective="mle", batch_size=32, steps=400, eval_every=100)
    """The learner: architecture, optimizer, steps (its objective is set per loss)."""
    losses: tuple[str, ...] = ("mle", "fy:alpha:1.5:unit", "fy:alpha:1.5:uniform", "fy:chi2:unit")
    """mle (cross-entropy) and Fenchel-Young losses 'fy:<divergence>:<unit|uniform>'."""
    train_size: int = 1024
    """Training sequences per seed."""
    heldout_size: int = 256
    """Held-out oracle sequences (shared)."""
    samples: int = 256
    """Model samples per model (temperature 1)."""
    seeds: int = 3
    """Vmapped seeds per loss."""
    seed: int = 0
    """Master seed."""
    near_zero: float = 1e-4
    """A sampled token is oracle-impossible when the oracle's probability is below this. The oracle
    smooths with mass ``smoothing / vocab_size`` (3.1e-5 by default) on every regular token, so a
    token outside its sparse support has about that probability, never exactly 0."""
    bleu_order: int = 4
    out: Path = Path("results/fdiv")
    """Output folder."""
    overwrite: bool = False
    """Replace the run already in --out (otherwise such a folder is refused)."""
    progress: bool = True
    """Show progress bars."""

    def validate(self) -> list[FLoss]:
        """Check the config; returns each loss's model distribution (KL for cross-entropy)."""
        if not self.losses or len(set(self.losses)) != len(self.losses):
            raise ValueError(f"losses must be non-empty and distinct, got {self.losses}")
        if self.seeds < 1 or self.train_size < 2 or self.heldout_size < 2 or self.samples < 2:
            raise ValueError("seeds must be >= 1; train_size, heldout_size and samples >= 2")
        if not 0 < self.near_zero < 1:
            raise ValueError(f"near_zero must lie in (0, 1), got {self.near_zero}")
        return [FLoss("kl", "unit") if name == "mle" else parse_f_loss(name) for name in self.losses]


def _evaluator(config: FDivConfig, model, oracle, heldout, f_loss: FLoss):
    """``evaluate(params, key) -> dict`` of one model (jittable, vmapped over seeds)."""
    mask = token_mdp.sequence_mask(heldout)
    log_floor = math.log(config.near_zero)

    def evaluate(params, key):
        logits = model.logits(params, heldout)
        log_p = f_loss.log_policy(logits)
        token_log_p = jnp.take_along_axis(log_p, heldout[..., None], -1)[..., 0]
        accuracy = lm_losses.masked_mean((jnp.argmax(logits, -1) == heldout).astype(logits.dtype), mask)
        zero = (token_log_p == -jnp.inf).astype(logits.dtype)
        samples = sample(
            model.decoder, params, key, config.samples,
            divergence=f_loss.resolved, log_reference=f_loss.log_reference(logits.shape[-1]),
        )  # fmt: skip
        scores = token_mdp.score(oracle, samples.tokens)
        oracle_lp = scores.step_log_probs
        support = jnp.sum(f_loss.log_policy(model.logits(params, samples.tokens)) > -jnp.inf, -1)
        m = samples.mask
        return {
            "accuracy": accuracy,
            "heldout_nll": -lm_losses.masked_mean(token_log_p, mask),
            "heldout_zero_rate": lm_losses.masked_mean(zero, mask),
            "oracle_loglik": lm_losses.masked_mean(oracle_lp, m),
            "oracle_loglik_floored": lm_losses.masked_mean(jnp.maximum(oracle_lp, log_floor), m),
            "impossible_rate": lm_losses.masked_mean((oracle_lp < log_floor).astype(logits.dtype), m),
            "support": lm_losses.masked_mean(support.astype(logits.dtype), m),
            "entropy": lm_losses.masked_mean(samples.entropy, m),
            "tokens": samples.tokens,
            "mask": m,
        }

    return evaluate


def _sequences(tokens, mask) -> list[list[int]]:
    return [list(map(int, row[m > 0])) for row, m in zip(np.asarray(tokens), np.asarray(mask))]


def _label(name: str) -> str:
    return "cross-entropy" if name == "mle" else name[3:].replace(":unit", " (unit ref)").replace(":uniform", " (uniform ref)")


def run(config: FDivConfig) -> dict:
    """Train every (loss, seed) model, evaluate, write metrics.csv, summary.json and the figure."""
    f_losses = config.validate()
    started = time.perf_counter()
    oracle, space = config.oracle.build(), config.oracle.space
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    key_data, key_heldout, key_train, key_eval = jax.random.split(jax.random.key(config.seed), 4)
    train_tokens = jax.vmap(lambda k: token_mdp.sample(oracle, k, config.train_size))(jax.random.split(key_data, config.seeds))
    heldout = token_mdp.sample(oracle, key_heldout, config.heldout_size)
    model = language_model(config.lm.model, space)
    train_keys = jax.random.split(key_train, config.seeds)
    eval_keys = jax.random.split(key_eval, config.seeds)
    results, rows = {}, []
    bar = tqdm(total=len(config.losses), desc="fdiv: losses", disable=not config.progress, leave=False)
    for name, f_loss in zip(config.losses, f_losses):
        lm = dataclasses.replace(config.lm, objective="mle" if name == "mle" else f_loss.name)
        train = make_train(lm, space)
        output = jax.jit(jax.vmap(train))(train_keys, train_tokens)  # seeds vmapped
        evaluate = _evaluator(config, model, oracle, heldout, f_loss)
        measured = jax.device_get(jax.jit(jax.vmap(evaluate))(output.params, eval_keys))
        per_seed = {metric: np.asarray(measured[metric], np.float64) for metric in METRICS[:8]}
        sequences = [_sequences(measured["tokens"][s], measured["mask"][s]) for s in range(config.seeds)]
        per_seed["distinct_2"] = np.asarray([lm_metrics.distinct_n(seqs, 2) for seqs in sequences])
        per_seed["self_bleu"] = np.asarray([lm_metrics.self_bleu(seqs, config.bleu_order) for seqs in sequences])
        results[name] = per_seed
        for metric in METRICS:
            for seed, value in enumerate(per_seed[metric]):
                rows.append({"loss": name, "seed": seed, "metric": metric, "value": float(value)})
        bar.update(1)
    bar.close()
    oracle_scores = token_mdp.score(oracle, heldout)
    oracle_mask = token_mdp.sequence_mask(heldout)
    oracle_support = jnp.sum(oracle_scores.log_probs > math.log(config.near_zero), -1)
    oracle_reference = {
        "oracle_loglik": float(lm_losses.masked_mean(oracle_scores.step_log_probs, oracle_mask)),
        "oracle_entropy": float(lm_losses.masked_mean(oracle_scores.entropy, oracle_mask)),
        "oracle_support": float(lm_losses.masked_mean(oracle_support.astype(jnp.float32), oracle_mask)),
    }
    summary_rows = []
    for name in config.losses:
        row = {"loss": name}
        for metric in METRICS:
            values = results[name][metric]
            mean, _ = stats.mean_se(values)
            low, high = stats.interval(values)
            row[metric] = mean if np.all(np.isfinite(values)) else float(values.mean())
            row[f"{metric}_ci"] = [low, high]
        summary_rows.append(row)
    comparison = _compare(config, results)
    csv_path = run_dir.write_metrics(rows, columns=["loss", "seed", "metric", "value"])
    figure_path = _plot(config, run_dir, results)
    elapsed = time.perf_counter() - started
    summary = {
        "oracle": {"kind": config.oracle.kind, "vocab_size": config.oracle.vocab_size, **oracle_reference},
        "losses": summary_rows,
        "comparison": comparison,
        "seeds": config.seeds,
        "seconds": elapsed,
        "files": {"metrics": csv_path.name, "figure": figure_path.name},
    }
    run_dir.write_summary(summary)
    table = [_shown(row, ("loss", *PLOTTED, "heldout_nll", "entropy")) for row in summary_rows]
    print(f"\nCross-entropy vs Fenchel-Young f-losses ({config.seeds} seeds, {config.lm.steps} steps, T = 1 samples)")
    print(format_table(table))
    for line in comparison:
        print(line["text"])
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _shown(row: dict, keys) -> dict:
    return {k: (f"{row[k]:.4g}" if isinstance(row[k], float) else row[k]) for k in keys}


def _compare(config: FDivConfig, results: dict) -> list[dict]:
    """Each f-loss against cross-entropy, per seed (same data and held-out set per seed index):
    the ratio of oracle-impossible sample rates and the accuracy difference, t intervals."""
    if "mle" not in results:
        return []
    base = results["mle"]
    out = []
    for name in config.losses:
        if name == "mle":
            continue
        ratio = results[name]["impossible_rate"] / np.maximum(base["impossible_rate"], 1e-12)
        accuracy = results[name]["accuracy"] - base["accuracy"]
        r_low, r_high = stats.interval(ratio)
        a_low, a_high = stats.interval(accuracy)
        text = (
            f"{name}: impossible-token rate x{float(np.mean(ratio)):.3g} of cross-entropy's "
            f"(95% t interval [{r_low:.3g}, {r_high:.3g}]), accuracy {float(np.mean(accuracy)):+.4f} "
            f"([{a_low:+.4f}, {a_high:+.4f}])"
        )
        out.append({
            "loss": name, "impossible_ratio": float(np.mean(ratio)), "impossible_ratio_ci": [r_low, r_high],
            "accuracy_difference": float(np.mean(accuracy)), "accuracy_difference_ci": [a_low, a_high], "text": text,
        })  # fmt: skip
    return out


def _plot(config: FDivConfig, run_dir: RunDir, results: dict) -> Path:
    path = run_dir.file("fdiv.png")
    titles = {
        "impossible_rate": f"sampled tokens with oracle p < {config.near_zero:g}",
        "accuracy": "held-out next-token accuracy",
        "oracle_loglik_floored": "oracle log-lik. per sampled token (floored)",
        "support": "model support size per step",
    }
    with figure(path, 1, len(PLOTTED), figsize=(4.0 * len(PLOTTED), 3.6)) as (_, axes):
        labels = [_label(name) for name in config.losses]
        for ax, metric in zip(axes, PLOTTED):
            for i, name in enumerate(config.losses):
                values = results[name][metric]
                low, high = stats.interval(values)
                mean = float(np.mean(values))
                ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="o", capsize=4)
                ax.scatter(np.full(values.size, i + 0.15), values, s=8, alpha=0.5, color="gray")
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
            ax.set_title(titles[metric], fontsize=9)
    return path


def demo_section(out: Path):
    """``mdvi-lab demo``: cross-entropy vs the alpha = 1.5 f-loss, a short run (~40 s)."""
    from experiments.demo import DemoSection

    config = FDivConfig(
        out=out / "fdiv", overwrite=True, progress=False, losses=("mle", "fy:alpha:1.5:unit"),
        lm=LMConfig(objective="mle", batch_size=32, steps=100, eval_every=100),
        train_size=256, heldout_size=128, samples=128, seeds=2,
    )  # fmt: skip
    summary = run(config)
    table = format_table([_shown(row, ("loss", "impossible_rate", "accuracy", "support")) for row in summary["losses"]])
    text = (
        f"The lab's transformer trained for {config.lm.steps} steps with cross-entropy and with the alpha = 1.5 "
        f"Fenchel-Young loss (1.5-entmax, Roulet et al. 2025) on {config.train_size} oracle sequences, "
        f"{config.seeds} vmapped seeds; samples drawn from each model's own distribution. "
        "The full run is `mdvi-lab fdiv`.\n\n" + table
    )
    return DemoSection(
        title="f-divergence losses on an exact oracle LM",
        text=text,
        figures=[config.out / "fdiv.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
