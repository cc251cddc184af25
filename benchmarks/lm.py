"""Benchmark: training tokens per second of IRL-SFT against MLE, same model, same run.

A 2-layer, width-64 transformer (the lab's default) on sequences of the default HMM oracle
(vocabulary 32 + EOS, lengths 16-32), batch 32, float32, full training steps (forward, backward,
Adam) inside one jitted ``lax.scan``. Tokens are the real (unpadded) target tokens. The
measurements of the objectives are interleaved and each is the median of several repeats.
Target: an IRL-SFT step costs at most 1.15x an MLE step. The RLOO step (8 prompts of 8 oracle
tokens x k = 4 completions = the MLE step's 32 sequences; KV-cache sampling, the reference's
log-probabilities, a token-count reward, the policy-gradient step) targets at most 4x the MLE
step.
Distillation records (same run): a 1-layer, width-32 student distils the 2-layer, width-64
teacher on prompted sequences (prompt 4 tokens). An offline GKD step (lambda = 0, fixed teacher
completions, teacher forward pass inside the step) against the student's MLE step plus one
teacher forward pass on the batch (targets: <= 1.5x), and an on-policy GKD step (lambda = 1,
student completions sampled through the KV cache every step) against the offline one (<= 3x).
Usage:

    python benchmarks/lm.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents import lm  # noqa: E402
from agents.lm import objectives as lm_objectives  # noqa: E402
from agents.lm import rl  # noqa: E402
from benchmarks.common import record, write  # noqa: E402
from envs import token_mdp  # noqa: E402


def main(quick: bool = False):
    steps = 20 if quick else 100
    repeats = 3 if quick else 7
    oracle_config = token_mdp.OracleConfig()
    oracle = oracle_config.build()
    data = token_mdp.sample(oracle, jax.random.key(0), 2048)
    tokens_per_sequence = float(np.asarray(token_mdp.sequence_mask(data)).sum(-1).mean())
    k = 4
    lm_objectives.register(
        rl.rloo_objective("rloo_benchmark", lambda _, tokens: jnp.sum(tokens == 1, -1).astype(jnp.float32), 8, k), replace=True
    )
    objectives = {"mle": {}, "irl_sft": {"lam": 0.1}, "iq_chi2": {}, "online_irl_sft": {"lam": 0.1}, "rloo_benchmark": {}}
    runners = {}
    for objective, extra in objectives.items():
        batch_size = 32 // k if objective == "rloo_benchmark" else 32
        config = lm.LMConfig(objective=objective, steps=steps, eval_every=steps, batch_size=batch_size, **extra)
        trainer = lm.make_trainer(config, oracle_config.space)
        state = trainer.init(jax.random.key(1), data)
        if objective == "rloo_benchmark":  # the reference is the initial policy (same key, same params)
            state = trainer.init(jax.random.key(1), data, {"reference": state.params})
        hyper = {**config.hyperparameters(), "beta": 0.05}
        run = jax.jit(trainer.run, static_argnums=4)

        def go(run=run, state=state, hyper=hyper):
            return jax.block_until_ready(run(state, data, hyper, data.shape[0], 1))

        go()  # compile
        runners[objective] = (go, config)
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, (go, _) in runners.items():  # interleaved: drift hits every objective alike
            start = time.perf_counter()
            go()
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    tokens = {name: steps * 32 * tokens_per_sequence for name in runners}
    records = []
    for name in runners:
        if name == "rloo_benchmark":
            continue
        records.append(record(f"training tokens/s, {name}", tokens[name] / seconds[name], "tokens/s"))
    ratio = seconds["irl_sft"] / seconds["mle"]
    records.append(record("step time IRL-SFT / MLE", ratio, "x", "<= 1.15x", ratio <= 1.15))
    records.append(record("step time chi2 IQ-Learn / MLE", seconds["iq_chi2"] / seconds["mle"], "x"))
    online = runners["online_irl_sft"][1]
    records.append(
        record(
            f"step time online IRL-SFT ({online.policy_batch_size} model samples/step) / MLE",
            seconds["online_irl_sft"] / seconds["mle"],
            "x",
        )
    )
    rloo = seconds["rloo_benchmark"] / seconds["mle"]
    records.append(
        record(
            f"step time RLOO (8 prompts x k = {k}, sampling + reference + update) / MLE (32 sequences)",
            rloo,
            "x",
            "<= 4x",
            rloo <= 4.0,
        )
    )
    records += distillation_records(data, oracle_config.space, steps, repeats)
    write("lm" if not quick else "lm-quick", records)
    return records


def distillation_records(data, space, steps: int, repeats: int) -> list[dict]:
    """Offline and on-policy GKD steps against the student's MLE step and the teacher's forward pass."""
    student_spec = lm.TransformerSpec(num_layers=1, width=32, num_heads=2)
    teacher_spec = lm.TransformerSpec()
    teacher = lm.language_model(teacher_spec, space)
    teacher_params = teacher.init_params(jax.random.key(2), data)
    common = dict(model=student_spec, steps=steps, eval_every=steps, batch_size=32, prompt_length=4, teacher=teacher_spec)
    configs = {
        "student mle": lm.LMConfig(objective="mle", **common),
        "gkd offline": lm.LMConfig(objective="gkd", lmbda=0.0, **common),
        "gkd on-policy": lm.LMConfig(objective="gkd", lmbda=1.0, **common),
    }
    runners = {}
    for name, config in configs.items():
        trainer = lm.make_trainer(config, space)
        state = trainer.init(jax.random.key(1), data, {"teacher": teacher_params})
        run = jax.jit(trainer.run, static_argnums=4)

        def go(run=run, state=state, config=config):
            return jax.block_until_ready(run(state, data, config.hyperparameters(), data.shape[0], 1))

        go()
        runners[name] = go

    @jax.jit
    def teacher_forwards(key):
        def body(total, key):
            rows = data[jax.random.randint(key, (32,), 0, data.shape[0])]
            return total + teacher.logits(teacher_params, rows).sum(), None

        return jax.lax.scan(body, 0.0, jax.random.split(key, steps))[0]

    runners["teacher forward"] = lambda: jax.block_until_ready(teacher_forwards(jax.random.key(3)))
    runners["teacher forward"]()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, go in runners.items():
            start = time.perf_counter()
            go()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(values) / steps for name, values in times.items()}
    offline_ratio = ms["gkd offline"] / (ms["student mle"] + ms["teacher forward"])
    on_policy_ratio = ms["gkd on-policy"] / ms["gkd offline"]
    records = [record(f"step time, {name}", value, "ms/step") for name, value in ms.items()]
    records.append(
        record("GKD offline step / (student MLE step + teacher forward)", offline_ratio, "x", "<= 1.5x", offline_ratio <= 1.5)
    )
    records.append(record("GKD on-policy step / GKD offline step", on_policy_ratio, "x", "<= 3x", on_policy_ratio <= 3.0))
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats: a smoke run, not the reported numbers")
    main(parser.parse_args().quick)
