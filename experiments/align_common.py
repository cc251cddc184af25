"""Pieces shared by the alignment experiments (``warm``, ``entailment-rl``): SFT of the reference
policy, exact evaluation of a policy over enumerated completions, and vmapped RLOO runs.

Every task here is enumerable (:func:`envs.alignment.enumerate_completions`), so expectations
under a policy, its KL to the reference and to the KL-regularized optimum are exact sums over
all completions of the held-out prompts, not sample estimates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from agents.lm import LMConfig, language_model, make_optimizer, make_train, make_trainer, objectives, rl


def train_sft(config: LMConfig, space, key, tokens) -> dict:
    """Maximum likelihood on ``tokens [S, N, T]``: one reference policy per seed (vmapped)."""
    if config.objective != "mle":
        raise ValueError(f"the SFT policy is trained by MLE: objective must be 'mle', got {config.objective!r}")
    train = make_train(config, space)
    keys = jax.random.split(key, tokens.shape[0])
    return jax.jit(jax.vmap(lambda k, t: train(k, t).params))(keys, tokens)


def policy_log_probs(model) -> Callable:
    """``log_probs(params, completions [X, M, T]) -> [X, M]``: exact ``log pi(y|x)`` of enumerated
    completions (an argument, not a closed-over constant: XLA would constant-fold it)."""
    prompt_length = model.space.min_length - 1
    return lambda params, completions: rl.enumerated_log_probs(model, params, completions, prompt_length)


def exact_policy_metrics(log_pi, log_ref, golden: dict) -> dict:
    """Means over prompts of ``E_pi[g]`` for each golden ``g [X, M]``, and ``KL(pi || pi_ref)``."""
    p = jnp.exp(log_pi)
    out = {name: jnp.mean(jnp.sum(p * value, -1)) for name, value in golden.items()}
    out["kl_ref"] = jnp.mean(rl.exact_kl(log_pi, log_ref))
    return out


def rl_runs(
    name: str,
    config: LMConfig,
    space,
    reward: Callable,
    num_samples: int,
    key,
    init_params,
    extra: dict,
    prompt_rows,
    betas,
    evaluate: Callable,
    evaluation_data,
    chunk: int,
    progress: bool = True,
    label: str = "RLOO",
    extra_hyper: dict | None = None,
    make_objective: Callable = rl.rloo_objective,
):
    """RLOO (:func:`agents.lm.rl.rloo_objective`) for ``R`` models at once (vmapped).

    ``init_params``, every leaf of ``extra`` (``{"reference", "reward"}``), ``prompt_rows [R, N, T]``
    (prompts in their first positions) and ``betas [R]`` carry a leading model axis.
    ``evaluate(params, index, evaluation_data) -> {name: scalar}`` runs after every ``chunk``
    steps (and at step 0) on each model, outside the training program. ``extra_hyper`` adds
    hyperparameters with a leading model axis (e.g. WARP's ``mu``); ``make_objective(name,
    reward, prompt_length, num_samples)`` builds the objective (RLOO by default). Returns ``(params, curves, evaluations)``:
    the trainer's logged means ``{name: [R, points]}`` and ``{name: [R, chunks + 1]}``.
    """
    prompt_length = space.min_length - 1
    objectives.register(make_objective(name, reward, prompt_length, num_samples), replace=True)
    config = dataclasses.replace(config, objective=name)
    trainer = make_trainer(config, space)
    optimizer = make_optimizer(config)
    count = prompt_rows.shape[0]

    def init(key, rows, params, extra):
        state = trainer.init(key, rows, extra)
        return state._replace(params=params, opt_state=optimizer.init(params))

    state = jax.jit(jax.vmap(init))(jax.random.split(key, count), prompt_rows, init_params, extra)
    varying = {"beta": jnp.asarray(betas, jnp.float32)}
    varying.update({k: jnp.asarray(v, jnp.float32) for k, v in (extra_hyper or {}).items()})
    hyper = {**config.hyperparameters(), **varying}
    axes = {k: 0 if k in varying else None for k in hyper}
    intervals = chunk // config.eval_every
    run = jax.jit(jax.vmap(lambda s, t, h: trainer.run(s, t, h, t.shape[0], intervals), in_axes=(0, 0, axes)))
    evaluate_all = jax.jit(jax.vmap(evaluate, in_axes=(0, 0, None)))
    evaluations = [jax.device_get(evaluate_all(state.params, jnp.arange(count), evaluation_data))]
    curves = []
    bar = tqdm(total=config.steps, desc=f"{label}: {count} policies (vmapped)", disable=not progress, leave=False)
    for _ in range(config.steps // chunk):
        state, logged = run(state, prompt_rows, hyper)
        curves.append(jax.device_get(logged))
        evaluations.append(jax.device_get(evaluate_all(state.params, jnp.arange(count), evaluation_data)))
        bar.update(chunk)
    bar.close()
    curves = {k: np.concatenate([c[k] for c in curves], -1) for k in curves[0]}
    evaluations = {k: np.stack([e[k] for e in evaluations], -1) for k in evaluations[0]}
    return state.params, curves, evaluations


def stack_trees(trees: list):
    """Stack pytrees of equal structure on a new leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def take(tree, index):
    """Leaf-wise ``x[index]`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[index], tree)


def reference_model(config: LMConfig, space):
    return language_model(config.model, space)
