"""``mdvi-lab warm``: weight-averaged reward models (WARM, Rame et al. 2024) on a golden preference task.

The hidden preference task of :mod:`envs.alignment` (a golden reward ``r*(x, y)``) on an oracle
language model. Per seed: an SFT policy (MLE on oracle completions of the train prompts) is the
reference and the shared initialisation; preference pairs (two oracle completions per train
prompt) are labelled by a Bradley-Terry draw on ``r*`` with a fraction of flipped labels;
``M`` Bradley-Terry reward models are fine-tuned from the SFT torso with their own data orders
and learning rates, in one vmapped program (:mod:`agents.lm.reward_models`). Compared as reward
functions: each single model, their prediction ensemble (mean score) and their weight average
(WARM, Eq. 1 of the paper), with the golden reward as the ceiling:

* accuracy on held-out pairs (ordered by ``r*``), on out-of-distribution pairs (prompts and
  completions from another oracle), and on the flipped training pairs against their flipped
  labels (memorisation of label noise);
* the Bradley-Terry loss along the straight path between two fine-tuned models (a barrier
  would mean that weight averaging leaves the basin);
* Best-of-N for N = 1 .. 256, exactly, over all completions of the held-out prompts
  (:func:`agents.lm.rl.best_of_n_log_probs`): golden reward against ``KL(BoN || SFT)``;
* RLOO against each reward (:func:`agents.lm.rl.rloo_objective`): golden reward against the
  exact ``KL(pi || SFT)`` along training, the over-optimisation curve.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agents.lm import LMConfig, TransformerSpec, language_model, reward_models, rl, weights
from agents.lm.reward_models import RewardConfig
from envs import alignment, token_mdp
from experiments import align_common, stats
from experiments.plotting import figure
from experiments.results import RunDir, format_table

MODEL = TransformerSpec(num_layers=2, width=32, num_heads=4)


@dataclasses.dataclass(frozen=True)
class WarmConfig:
    """WARM vs prediction ensembles vs single reward models on noisy preferences."""

    task: alignment.PreferenceConfig = alignment.PreferenceConfig()
    """The golden preference task (envs/alignment.py); its completions are enumerable."""
    sft: LMConfig = LMConfig(model=MODEL, objective="mle", batch_size=32, steps=400, eval_every=100, learning_rate=3e-3)
    """The reference policy (MLE on oracle completions); its model is every network's."""
    train_prompts: int = 512
    """Train prompts: each gets 2 SFT completions and one preference pair."""
    heldout_prompts: int = 32
    """Held-out prompts (exact Best-of-N and RL evaluation over all their completions)."""
    eval_pairs: int = 1024
    """Held-out (and out-of-distribution) pairs for the accuracies."""
    flip_fraction: float = 0.25
    """Fraction of training pairs whose label is flipped (label noise)."""
    label_temperature: float = 0.25
    """Bradley-Terry temperature of the labelling draw on r*."""
    reward: RewardConfig = RewardConfig(steps=400, batch_size=32, learning_rate=1e-3, warmup_steps=40)
    """Fine-tuning of each reward model (its learning rate is replaced by learning_rates)."""
    learning_rates: tuple[float, ...] = (5e-4, 1e-3, 2e-3, 4e-3)
    """One fine-tuned model per entry (M = len): WARM averages their weights."""
    path_points: int = 11
    """Points on the straight path between models 0 and 1."""
    best_of: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    rl: LMConfig = LMConfig(
        model=MODEL, objective="mle", batch_size=16, steps=300, eval_every=50, learning_rate=1e-3, warmup_steps=10
    )
    """RLOO's optimizer and steps (batch_size prompts per step; the model is the SFT's)."""
    rl_beta: float = 0.02
    """KL weight of RL (small, so that a proxy reward can be over-optimised)."""
    rl_samples: int = 4
    """k completions per prompt (the leave-one-out group)."""
    rl_chunk: int = 50
    """Steps between two exact evaluations of the RL policies."""
    seeds: int = 3
    seed: int = 0
    out: Path = Path("results/warm")
    overwrite: bool = False
    progress: bool = True

    def validate(self) -> None:
        if self.seeds < 1 or self.train_prompts < 2 or self.heldout_prompts < 1 or self.eval_pairs < 2:
            raise ValueError("seeds, heldout_prompts must be >= 1 and train_prompts, eval_pairs >= 2")
        if len(self.learning_rates) < 2 or any(not (lr > 0 and math.isfinite(lr)) for lr in self.learning_rates):
            raise ValueError(f"learning_rates needs >= 2 finite positive entries (M >= 2 models), got {self.learning_rates}")
        if not 0.0 <= self.flip_fraction < 0.5:
            raise ValueError(f"flip_fraction must lie in [0, 0.5), got {self.flip_fraction}")
        if not (self.rl_beta > 0 and math.isfinite(self.rl_beta)):
            raise ValueError(f"rl_beta must be finite and > 0, got {self.rl_beta}")
        if self.rl_samples < 2:
            raise ValueError(f"rl_samples must be >= 2 (leave-one-out), got {self.rl_samples}")
        if self.rl_chunk < 1 or self.rl_chunk % self.rl.eval_every or self.rl.steps % self.rl_chunk:
            raise ValueError(f"rl_chunk ({self.rl_chunk}) must be a multiple of rl.eval_every and divide rl.steps")
        if not self.best_of or min(self.best_of) < 1:
            raise ValueError(f"best_of must hold positive integers, got {self.best_of}")
        if self.path_points < 2:
            raise ValueError(f"path_points must be >= 2, got {self.path_points}")


def _pairs(oracle, key, prompts, golden):
    """Two oracle completions per prompt: ``(a [N, T], b [N, T], r*(a), r*(b))``."""
    both = token_mdp.sample_completions(oracle, key, prompts, 2)
    a, b = both[0::2], both[1::2]
    return a, b, golden(a), golden(b)


def run(config: WarmConfig) -> dict:
    """Run the experiment; returns the summary that is also written to ``summary.json``."""
    config.validate()
    started = time.perf_counter()
    task = config.task.build()
    space, P, S, M = task.space, task.prompt_length, config.seeds, len(config.learning_rates)
    run_dir = RunDir(config.out, config, overwrite=config.overwrite)
    keys = jax.random.split(jax.random.key(config.seed), 8)
    train_prompts, heldout_prompts = token_mdp.split_prompts(
        task.oracle, keys[0], config.train_prompts, config.heldout_prompts, P
    )
    seed_keys = jax.random.split(keys[1], S)

    # SFT reference policy per seed, on oracle completions of the train prompts.
    sft_data = jax.vmap(lambda k: token_mdp.sample_completions(task.oracle, k, train_prompts, 2))(seed_keys)
    sft_params = jax.block_until_ready(align_common.train_sft(config.sft, space, keys[2], sft_data))
    timings = {"sft": time.perf_counter() - started}
    model = language_model(config.sft.model, space)

    # Noisy preference pairs per seed, and M reward models per seed from one shared init.
    pair_data = [_pairs(task.oracle, jax.random.fold_in(k, 1), train_prompts, task.reward) for k in seed_keys]
    label_keys = jax.random.split(keys[3], S)
    labelled = [
        reward_models.preference_labels(
            label_keys[s], pair_data[s][2], pair_data[s][3], config.flip_fraction, config.label_temperature
        )
        for s in range(S)
    ]
    chosen = jnp.stack([jnp.where(labelled[s][0][:, None], pair_data[s][0], pair_data[s][1]) for s in range(S)])
    rejected = jnp.stack([jnp.where(labelled[s][0][:, None], pair_data[s][1], pair_data[s][0]) for s in range(S)])
    flipped = jnp.stack([labelled[s][1] for s in range(S)])
    head_keys = jax.random.split(keys[4], S)
    init = jax.vmap(lambda p, k: reward_models.init_from_lm(p, config.sft.model, space, k))(sft_params, head_keys)
    train_rm = reward_models.make_reward_train(config.reward, config.sft.model, space)
    per_model = jax.vmap(train_rm, in_axes=(0, None, None, 0))
    order_keys = jax.random.split(keys[5], S * M).reshape(S, M)
    rates = jnp.asarray(config.learning_rates, jnp.float32)
    rm_params, rm_losses = jax.jit(jax.vmap(per_model, in_axes=(0, 0, 0, None)))(
        order_keys, init, {"chosen": chosen, "rejected": rejected}, rates
    )  # leaves [S, M, ...]
    warm_params = jax.vmap(lambda stacked: weights.average(reward_models.unstack(stacked, M)))(rm_params)
    apply = reward_models.reward_model(config.sft.model, space).apply
    score = jax.jit(lambda p, t: reward_models.sequence_scores(apply, p, t))
    jax.block_until_ready(rm_params)
    timings["reward_models"] = time.perf_counter() - started - sum(timings.values())

    # Reward functions: M singles, the ensemble, WARM (and the golden reward as the ceiling).
    names = [f"single {i} (lr {lr:g})" for i, lr in enumerate(config.learning_rates)] + ["ensemble", "WARM"]

    def all_scores(s, tokens):
        singles = jax.vmap(lambda p: score(p, tokens))(align_common.take(rm_params, s))  # [M, N]
        return jnp.concatenate([singles, singles.mean(0, keepdims=True), score(align_common.take(warm_params, s), tokens)[None]])

    clean_prompts = token_mdp.sample_prompts(task.oracle, jax.random.fold_in(keys[6], 0), config.eval_pairs, P)
    clean = _pairs(task.oracle, jax.random.fold_in(keys[6], 1), clean_prompts, task.reward)
    shifted_oracle = dataclasses.replace(config.task.oracle, seed=config.task.oracle.seed + 1).build()
    ood_prompts = token_mdp.sample_prompts(shifted_oracle, jax.random.fold_in(keys[7], 0), config.eval_pairs, P)
    ood = _pairs(shifted_oracle, jax.random.fold_in(keys[7], 1), ood_prompts, task.reward)
    rows, accuracy = [], []
    for s in range(S):
        for split, (a, b, ra, rb) in (("clean", clean), ("ood", ood)):
            strict = np.asarray(ra != rb)
            sa, sb = all_scores(s, a), all_scores(s, b)
            for r, name in enumerate(names):
                value = float(reward_models.pairwise_accuracy(sa[r][strict], sb[r][strict], (ra > rb)[strict]))
                accuracy.append({"reward": name, "seed": s, "split": split, "accuracy": value})
        mask = np.asarray(flipped[s])
        sa, sb = all_scores(s, chosen[s][mask]), all_scores(s, rejected[s][mask])
        for r, name in enumerate(names):
            accuracy.append(
                {
                    "reward": name,
                    "seed": s,
                    "split": "flipped train (memorisation)",
                    "accuracy": float(reward_models.pairwise_accuracy(sa[r], sb[r], jnp.ones(int(mask.sum()), bool))),
                }
            )
    rows += [
        {
            "section": "accuracy",
            "variant": a["reward"],
            "seed": a["seed"],
            "x": a["split"],
            "metric": "accuracy",
            "value": a["accuracy"],
        }
        for a in accuracy
    ]

    # Loss along the straight path between reward models 0 and 1 (golden-ordered held-out pairs).
    a, b, ra, rb = clean
    strict = np.asarray(ra != rb)
    first, second = jnp.where((ra > rb)[:, None], a, b)[strict], jnp.where((ra > rb)[:, None], b, a)[strict]
    fractions = np.linspace(0.0, 1.0, config.path_points)
    path = []
    for s in range(S):
        p0, p1 = align_common.take(rm_params, (s, 0)), align_common.take(rm_params, (s, 1))
        for fraction in fractions:
            p = weights.interpolate(p0, p1, float(fraction))
            loss = float(reward_models.bradley_terry_loss(score(p, first), score(p, second)))
            train_loss = float(reward_models.bradley_terry_loss(score(p, chosen[s]), score(p, rejected[s])))
            path.append({"seed": s, "fraction": float(fraction), "heldout_loss": loss, "train_loss": train_loss})
            rows.append(
                {
                    "section": "path",
                    "variant": "models 0-1",
                    "seed": s,
                    "x": float(fraction),
                    "metric": "heldout_bt_loss",
                    "value": loss,
                }
            )
            rows.append(
                {
                    "section": "path",
                    "variant": "models 0-1",
                    "seed": s,
                    "x": float(fraction),
                    "metric": "train_bt_loss",
                    "value": train_loss,
                }
            )

    timings["accuracy_and_path"] = time.perf_counter() - started - sum(timings.values())
    # Exact Best-of-N over all completions of the held-out prompts.
    completions = alignment.enumerate_completions(space, heldout_prompts)
    X, Mc, T = completions.shape
    flat = completions.reshape(X * Mc, T)
    golden = task.reward(flat).reshape(X, Mc)
    log_probs = align_common.policy_log_probs(model)
    log_ref = jax.jit(jax.vmap(log_probs, in_axes=(0, None)))(sft_params, completions)  # [S, X, Mc]
    proxy = jnp.stack([all_scores(s, flat).reshape(-1, X, Mc) for s in range(S)])  # [S, R, X, Mc]
    proxy = jnp.concatenate([proxy, jnp.broadcast_to(golden, (S, 1, X, Mc))], 1)
    bon_names = names + ["golden"]

    @jax.jit
    def best_of_n(log_ref, scores, n, golden):
        log_bon = rl.best_of_n_log_probs(log_ref, scores, n)
        return jnp.mean(jnp.sum(jnp.exp(log_bon) * golden, -1)), jnp.mean(rl.exact_kl(log_bon, log_ref))

    bon = []
    for s in range(S):
        for r, name in enumerate(bon_names):
            for n in config.best_of:
                value, kl = best_of_n(log_ref[s], proxy[s, r], n, golden)
                bon.append({"reward": name, "seed": s, "n": n, "golden": float(value), "kl": float(kl)})
                rows.append(
                    {"section": "best_of_n", "variant": name, "seed": s, "x": n, "metric": "golden_reward", "value": float(value)}
                )
                rows.append(
                    {"section": "best_of_n", "variant": name, "seed": s, "x": n, "metric": "kl_to_sft", "value": float(kl)}
                )

    timings["best_of_n"] = time.perf_counter() - started - sum(timings.values())
    # RLOO against single model 0, the ensemble, WARM and the golden reward (vmapped over all).
    rl_variants = [names[0], "ensemble", "WARM", "golden"]
    uniform = jnp.full((M,), 1.0 / M)
    one_hot = jnp.zeros((M,)).at[0].set(1.0)
    reward_params, rl_proxy = [], []
    for name in rl_variants:
        for s in range(S):
            stack = align_common.take(rm_params, s)
            if name == "WARM":
                stack = jax.tree.map(lambda x: jnp.broadcast_to(x, (M, *x.shape)), align_common.take(warm_params, s))
            mix = {names[0]: one_hot, "ensemble": uniform, "WARM": uniform, "golden": jnp.zeros((M,))}[name]
            reward_params.append({"stack": stack, "mix": mix, "golden": jnp.float32(name == "golden")})
            rl_proxy.append(proxy[s, bon_names.index(name)])
    reward_params = align_common.stack_trees(reward_params)
    rl_proxy = jnp.stack(rl_proxy)  # [R, X, Mc]

    def mixed_reward(params, tokens):
        singles = jax.vmap(lambda p: reward_models.sequence_scores(apply, p, tokens))(params["stack"])
        return params["golden"] * task.reward(tokens) + params["mix"] @ singles

    R = len(rl_variants) * S
    seed_of = jnp.tile(jnp.arange(S), len(rl_variants))
    sft_of = align_common.take(sft_params, seed_of)
    prompt_rows = jnp.broadcast_to(jnp.pad(train_prompts, ((0, 0), (0, T - P))), (R, config.train_prompts, T))

    def evaluate(params, index, data):
        log_pi = log_probs(params, data["completions"])
        golden = {"golden_reward": data["golden"], "proxy_reward": data["proxy"][index]}
        return align_common.exact_policy_metrics(log_pi, data["log_ref"][data["seed_of"][index]], golden)

    evaluation_data = {"completions": completions, "golden": golden, "proxy": rl_proxy, "log_ref": log_ref, "seed_of": seed_of}

    rl_config = dataclasses.replace(config.rl, model=config.sft.model)
    _, curves, evaluations = align_common.rl_runs(
        "rloo_warm", rl_config, space, mixed_reward, config.rl_samples, jax.random.fold_in(keys[7], 2), sft_of,
        {"reference": sft_of, "reward": reward_params}, prompt_rows, jnp.full((R,), config.rl_beta),
        evaluate, evaluation_data, config.rl_chunk, config.progress, "warm: RLOO",
    )  # fmt: skip
    rl_steps = np.arange(evaluations["golden_reward"].shape[-1]) * config.rl_chunk
    rl_points = []
    for i in range(R):
        name, s = rl_variants[i // S], i % S
        for j, step in enumerate(rl_steps):
            point = {"reward": name, "seed": s, "step": int(step), **{k: float(v[i, j]) for k, v in evaluations.items()}}
            rl_points.append(point)
            for metric in ("golden_reward", "proxy_reward", "kl_ref"):
                rows.append(
                    {"section": "rl", "variant": name, "seed": s, "x": int(step), "metric": metric, "value": point[metric]}
                )
        for metric, values in curves.items():
            for j, value in enumerate(values[i]):
                rows.append(
                    {
                        "section": "rl_train",
                        "variant": name,
                        "seed": s,
                        "x": (j + 1) * config.rl.eval_every,
                        "metric": metric,
                        "value": float(value),
                    }
                )
    timings["rl"] = time.perf_counter() - started - sum(timings.values())
    elapsed = time.perf_counter() - started

    csv_path = run_dir.write_metrics(rows, columns=["section", "variant", "seed", "x", "metric", "value"])
    figures = _plot(config, run_dir, accuracy, path, bon, rl_points, names, rl_variants)
    summary = {
        "task": {
            "targets": task.targets,
            "forbidden": task.forbidden,
            "completions_per_prompt": int(Mc),
            "difficulty": config.task.difficulty,
        },
        "accuracy": _accuracy_table(accuracy, names, S),
        "path": _path_table(path, fractions),
        "best_of_n": _bon_table(bon, bon_names, config.best_of),
        "rl": _rl_table(rl_points, rl_variants, config.rl.steps),
        "reward_model_final_train_loss": {
            name: stats.mean_se(np.asarray(rm_losses)[:, i, -20:].mean(-1).tolist()) for i, name in enumerate(names[:M])
        },
        "seeds": S,
        "seconds": elapsed,
        "stage_seconds": timings,
        "files": {"metrics": csv_path.name, **{k: Path(v).name for k, v in figures.items()}},
    }
    run_dir.write_summary(summary)
    print(f"\nWARM on a golden preference task ({S} seeds, M = {M}, {config.flip_fraction:.0%} flipped labels)")
    print(format_table(summary["accuracy"]))
    print(format_table(summary["best_of_n"]))
    print(format_table(summary["rl"]))
    print(f"results in {run_dir.path} ({elapsed:.1f} s)")
    return summary


def _ci(values) -> dict:
    mean, _ = stats.mean_se(values)
    low, high = stats.interval(values) if len(values) > 1 else (math.nan, math.nan)
    return {"mean": mean, "ci_low": low, "ci_high": high}


def _accuracy_table(accuracy, names, seeds) -> list[dict]:
    rows = []
    singles = [n for n in names if n.startswith("single")]
    for label, members in [("single (mean of M)", singles), ("ensemble", ["ensemble"]), ("WARM", ["WARM"])]:
        row = {"reward": label}
        for split in ("clean", "ood", "flipped train (memorisation)"):
            per_seed = [
                np.mean([a["accuracy"] for a in accuracy if a["seed"] == s and a["split"] == split and a["reward"] in members])
                for s in range(seeds)
            ]
            ci = _ci(per_seed)
            row[split] = ci["mean"]
            row[f"{split} 95% CI"] = f"[{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"
        rows.append(row)
    return rows


def _path_table(path, fractions) -> list[dict]:
    return [
        {
            "fraction": float(f),
            **{k: _ci([p[k] for p in path if p["fraction"] == f])["mean"] for k in ("heldout_loss", "train_loss")},
        }
        for f in fractions
    ]


def _bon_table(bon, names, best_of) -> list[dict]:
    rows = []
    for name in names:
        row = {"reward": name}
        for n in (best_of[0], best_of[len(best_of) // 2], best_of[-1]):
            ci = _ci([b["golden"] for b in bon if b["reward"] == name and b["n"] == n])
            row[f"golden@N={n}"] = ci["mean"]
            row[f"CI@N={n}"] = f"[{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"
        row["best N"] = int(
            max(best_of, key=lambda n: np.mean([b["golden"] for b in bon if b["reward"] == name and b["n"] == n]))
        )
        rows.append(row)
    return rows


def _rl_table(points, variants, steps) -> list[dict]:
    rows = []
    for name in variants:
        final = [p for p in points if p["reward"] == name and p["step"] == steps]
        best = {}
        for p in points:
            if p["reward"] == name:
                best[p["seed"]] = max(best.get(p["seed"], -math.inf), p["golden_reward"])
        g, kl = _ci([p["golden_reward"] for p in final]), _ci([p["kl_ref"] for p in final])
        rows.append(
            {
                "reward": name,
                "final golden": g["mean"],
                "95% CI": f"[{g['ci_low']:.3f}, {g['ci_high']:.3f}]",
                "peak golden": _ci(list(best.values()))["mean"],
                "final proxy": _ci([p["proxy_reward"] for p in final])["mean"],
                "final KL": kl["mean"],
            }
        )
    return rows


def _plot(config, run_dir, accuracy, path, bon, rl_points, names, rl_variants) -> dict:
    import pandas as pd
    import seaborn as sns

    frame = pd.DataFrame(accuracy)
    frame["reward"] = frame["reward"].map(lambda n: "single" if n.startswith("single") else n)
    accuracy_path = run_dir.file("accuracy.png")
    with figure(accuracy_path, 1, 2, figsize=(12, 4.2)) as (_, axes):
        sns.barplot(data=frame, x="split", y="accuracy", hue="reward", errorbar=("ci", 95), ax=axes[0], seed=0, n_boot=200)
        axes[0].set_ylim(0.0, 1.0)
        axes[0].axhline(1 - config.flip_fraction, ls=":", color="grey", lw=1)
        axes[0].set_title(f"pair accuracy ({config.flip_fraction:.0%} flipped training labels; 95% CI over seeds)")
        sns.lineplot(
            data=pd.DataFrame(path).melt(id_vars=["seed", "fraction"]),
            x="fraction",
            y="value",
            hue="variable",
            ax=axes[1],
            errorbar=("ci", 95),
            seed=0,
            n_boot=200,
        )
        axes[1].set_title("Bradley-Terry loss on the straight path model 0 -> model 1")
        axes[1].set_xlabel("interpolation fraction")
    bon_frame = pd.DataFrame(bon)
    bon_frame["reward"] = bon_frame["reward"].map(lambda n: "single 0" if n == names[0] else n)
    keep = ["single 0", "ensemble", "WARM", "golden"]
    overopt_path = run_dir.file("overoptimisation.png")
    with figure(overopt_path, 1, 2, figsize=(12, 4.4)) as (_, axes):
        data = bon_frame[bon_frame.reward.isin(keep)].groupby(["reward", "n"], as_index=False)[["kl", "golden"]].mean()
        sns.lineplot(
            data=data, x="kl", y="golden", hue="reward", hue_order=keep, marker="o", sort=False, estimator=None, ax=axes[0]
        )
        axes[0].set_xlabel("KL(Best-of-N || SFT), exact (nats)")
        axes[0].set_ylabel("golden reward (exact)")
        axes[0].set_title(f"Best-of-N, N = {config.best_of[0]} .. {config.best_of[-1]} (seed means; CIs in summary.json)")
        rl_frame = pd.DataFrame(rl_points)
        rl_frame["reward"] = rl_frame["reward"].map(lambda n: "single 0" if n == names[0] else n)
        sns.lineplot(
            data=rl_frame,
            x="kl_ref",
            y="golden_reward",
            hue="reward",
            hue_order=keep,
            marker="o",
            sort=False,
            errorbar=None,
            ax=axes[1],
            units="seed",
            estimator=None,
            alpha=0.6,
        )
        axes[1].set_xlabel("KL(pi || SFT), exact (nats)")
        axes[1].set_ylabel("golden reward (exact)")
        axes[1].set_title(f"RLOO, beta = {config.rl_beta:g} (one line per seed, every {config.rl_chunk} steps)")
    return {"accuracy": accuracy_path, "overoptimisation": overopt_path}


def demo_section(out: Path):
    """The WARM part of ``mdvi-lab demo``: short runs, 2 seeds."""
    from experiments.demo import DemoSection

    config = WarmConfig(
        out=out / "warm",
        overwrite=True,
        sft=dataclasses.replace(WarmConfig.sft, steps=200),
        reward=dataclasses.replace(WarmConfig.reward, steps=200),
        learning_rates=(5e-4, 2e-3, 4e-3),
        train_prompts=256,
        heldout_prompts=16,
        eval_pairs=512,
        best_of=(1, 4, 16, 64),
        rl=dataclasses.replace(WarmConfig.rl, steps=100),
        seeds=2,
        progress=False,
    )
    summary = run(config)
    text = (
        f"WARM (Rame et al. 2024) on a hidden preference over completions (golden reward exact): {len(config.learning_rates)} "
        f"Bradley-Terry reward models fine-tuned from the SFT policy on pairs with {config.flip_fraction:.0%} flipped labels, "
        "used singly, as a prediction ensemble and as their weight average. Best-of-N and RL are evaluated exactly over "
        "all completions of the held-out prompts. The full run is `mdvi-lab warm`.\n\n"
        + format_table(summary["accuracy"])
        + "\n\n"
        + format_table(summary["rl"])
    )
    return DemoSection(
        title="Reward models: WARM vs ensembles on noisy preferences",
        text=text,
        figures=[config.out / "accuracy.png", config.out / "overoptimisation.png"],
        files=[config.out / "metrics.csv", config.out / "summary.json"],
    )
