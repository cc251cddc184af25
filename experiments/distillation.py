"""The three-model distillation pipeline shared by ``mdvi-lab gkd`` and ``mdvi-lab teacher-hacking``.

Oracle -> teacher -> student (Tiapkin et al. 2025, arXiv 2502.02671, Sec. 3): a random sparse
hidden-Markov oracle (:mod:`envs.token_mdp`) is the ground truth; a lab transformer trained by MLE
on a limited number of oracle sequences for a limited number of steps is the teacher, measurably
imperfect (its exact per-token KL to the oracle is reported); a smaller transformer is the
student, distilled from the teacher on prompted completions. Prompts are oracle prefixes; train
and held-out prompts are disjoint. The golden and proxy metrics are those of
:func:`agents.lm.evaluation.distillation_evaluator`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import numpy as np

from agents.lm import LMConfig, TransformerSpec, evaluation, language_model, make_train, sample
from envs import token_mdp
from experiments import stats

SMALL_ORACLE = token_mdp.OracleConfig(
    vocab_size=16, num_hidden=12, branching=3, emission_support=4, min_length=8, max_length=16, eos_hazard=0.2
)


@dataclasses.dataclass(frozen=True)
class DistillTask:
    """The oracle, the prompts and the teacher of a distillation study."""

    oracle: token_mdp.OracleConfig = SMALL_ORACLE
    """The oracle language model (ground truth)."""
    prompt_length: int = 4
    """Prompt tokens (an oracle prefix; at most oracle.min_length; 0 = unprompted)."""
    train_prompts: int = 256
    """Distinct-from-held-out training prompts available to the students."""
    heldout_prompts: int = 256
    """Held-out prompts of the golden and proxy metrics (one oracle and one teacher completion each)."""
    teacher: LMConfig = LMConfig(
        model=TransformerSpec(num_layers=2, width=64, num_heads=4), objective="mle", batch_size=32,
        steps=300, eval_every=300, learning_rate=3e-3, warmup_steps=30,
    )  # fmt: skip
    """The teacher and its (deliberately limited) MLE training on oracle sequences."""
    teacher_data: int = 512
    """Oracle sequences the teacher is trained on."""

    def validate(self) -> None:
        token_mdp.check_prompt_length(self.oracle.build(), self.prompt_length)
        for name in ("train_prompts", "heldout_prompts", "teacher_data"):
            if getattr(self, name) < 2:
                raise ValueError(f"task.{name} must be >= 2, got {getattr(self, name)}")
        if self.teacher.objective != "mle":
            raise ValueError(
                f"the teacher is trained by MLE: task.teacher.objective must be 'mle', got {self.teacher.objective!r}"
            )


class Task(NamedTuple):
    """A built :class:`DistillTask`: everything the students and their evaluation need."""

    oracle: token_mdp.TokenOracle
    space: token_mdp.TokenSpace
    teacher: Any
    teacher_params: Any
    train_prompts: Any
    heldout_prompts: Any
    reference: evaluation.DistillationReference
    teacher_report: dict


def build_task(task: DistillTask, key: jax.Array) -> Task:
    """Draw prompts, train the teacher on oracle data, fix the held-out reference completions."""
    oracle, space = task.oracle.build(), task.oracle.space
    key_prompts, key_data, key_teacher, key_reference = jax.random.split(key, 4)
    train_prompts, heldout_prompts = token_mdp.split_prompts(
        oracle, key_prompts, task.train_prompts, task.heldout_prompts, task.prompt_length
    )
    data = token_mdp.sample(oracle, key_data, task.teacher_data)
    teacher = language_model(task.teacher.model, space)
    teacher_params = jax.jit(make_train(task.teacher, space))(key_teacher, data).params
    reference = evaluation.distillation_reference(oracle, teacher, teacher_params, heldout_prompts, key_reference)
    exact = evaluation.distillation_evaluator(teacher, oracle, teacher, teacher_params, reference)(teacher_params, key)
    oracle_entropy = token_mdp.score(oracle, reference.oracle_tokens).entropy
    report = {
        "teacher_kl_token": float(exact["golden_token"]),
        "teacher_kl_seq": float(exact["golden_seq"]),
        "oracle_entropy_token": float((oracle_entropy * reference.oracle_mask).sum() / reference.oracle_mask.sum()),
        "teacher_data": task.teacher_data,
        "teacher_steps": task.teacher.steps,
    }
    return Task(oracle, space, teacher, teacher_params, train_prompts, heldout_prompts, reference, report)


def teacher_completions(task: Task, key: jax.Array, prompts, per_prompt: int = 1):
    """``per_prompt`` teacher completions of each prompt, ``[N * per_prompt, T]`` (prompt-major)."""
    prompts = np.repeat(np.asarray(prompts), per_prompt, axis=0)
    return sample(task.teacher.decoder, task.teacher_params, key, prompts.shape[0], prompts=prompts).tokens


def diversity(tokens, prompt_length: int, bleu_order: int = 4) -> dict:
    """Distinct-2 and Self-BLEU of completions (the prompt stripped), host side."""
    from agents.lm import metrics

    sequences = token_mdp.strip(np.asarray(tokens)[:, prompt_length:])
    return {"distinct_2": metrics.distinct_n(sequences, 2), "self_bleu": metrics.self_bleu(sequences, bleu_order)}


def summarise(values) -> dict:
    """Mean, standard error and Student-t 95% interval over seeds."""
    mean, se = stats.mean_se(values)
    low, high = stats.interval(values)
    return {"mean": mean, "se": se, "ci_low": low, "ci_high": high}
