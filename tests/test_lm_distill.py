"""Distillation: token divergences against NumPy, TRL's generalized JSD convention, the GKD sampler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import log_softmax

from agents import lm
from agents.lm import distill, losses, objectives
from envs import token_mdp as tm

DIVERGENCES = ("kl", "reverse_kl", "jsd:0.1", "jsd:0.5", "jsd:0.9", "js", "jeffreys", "hellinger", "alpha:1.5", "chi2")


def _numpy_divergence(name, t, s):
    """``D(T || S)`` per row from probabilities, written from the textbook definitions."""
    kl = lambda p, q: np.sum(p * (np.log(p) - np.log(q)), -1)  # noqa: E731
    if name == "kl":
        return kl(t, s)
    if name == "reverse_kl":
        return kl(s, t)
    if name.startswith("jsd:") or name == "js":
        b = 0.5 if name == "js" else float(name[4:])
        m = b * t + (1 - b) * s
        value = b * kl(t, m) + (1 - b) * kl(s, m)
        return value if name == "js" else value / (b * (1 - b))
    if name == "jeffreys":
        return kl(t, s) + kl(s, t)
    if name == "hellinger":
        return np.sum((np.sqrt(t) - np.sqrt(s)) ** 2, -1)
    if name == "chi2":
        return np.sum((t - s) ** 2 / s, -1)
    if name == "alpha:1.5":
        a = 1.5
        u = t / s
        return np.sum(s * (u**a - 1 - a * (u - 1)) / (a * (a - 1)), -1)
    raise AssertionError(name)


def _trl_generalized_jsd(student_logits, teacher_logits, labels, beta, temperature=1.0):
    """TRL's ``GKDTrainer.generalized_jsd_loss`` convention, transcribed in NumPy from its formula:
    ``kl_div(input, target, log_target=True) = sum exp(target) (target - input)`` is KL(target || input);
    beta = 0: KL(teacher || student); beta = 1: KL(student || teacher); otherwise the mixture
    ``M = (1 - beta) student + beta teacher`` and ``beta KL(teacher || M) + (1 - beta) KL(student || M)``;
    tokens with label -100 dropped, "batchmean" = sum / number of kept tokens."""
    s = log_softmax(student_logits / temperature, axis=-1)
    t = log_softmax(teacher_logits / temperature, axis=-1)

    def kl_div(inp, target):
        return np.exp(target) * (target - inp)

    if beta == 0:
        jsd = kl_div(s, t)
    elif beta == 1:
        jsd = kl_div(t, s)
    else:
        mixture = np.logaddexp(s + np.log(1 - beta), t + np.log(beta))
        jsd = beta * kl_div(mixture, t) + (1 - beta) * kl_div(mixture, s)
    jsd = jsd.sum(-1)
    keep = labels != -100
    return jsd[keep].sum() / keep.sum()


def _logits(seed, shape=(3, 6, 5), scale=2.0):
    rng = np.random.default_rng(seed)
    teacher, student = rng.normal(size=shape) * scale, rng.normal(size=shape) * scale
    mask = (rng.random(shape[:2]) < 0.7).astype(np.float64)
    mask[0, 0] = 1.0
    return teacher, student, mask


@pytest.mark.parametrize("name", DIVERGENCES)
def test_token_divergences_are_nonnegative_zero_at_equality_and_match_numpy(x64, name):
    teacher, student, mask = _logits(0)
    per_token = np.asarray(distill.distillation_loss(jnp.asarray(teacher), jnp.asarray(student), jnp.asarray(mask), name))
    t, s = np.exp(log_softmax(teacher, -1)), np.exp(log_softmax(student, -1))
    expected = _numpy_divergence(name, t, s) * mask
    np.testing.assert_allclose(per_token, expected, rtol=1e-6, atol=1e-9)
    assert np.all(per_token >= 0) and np.all(per_token[mask == 0] == 0)
    reduced = float(losses.masked_mean(jnp.asarray(per_token), jnp.asarray(mask)))
    np.testing.assert_allclose(reduced, expected.sum() / mask.sum(), rtol=1e-6)
    same = np.asarray(distill.distillation_loss(jnp.asarray(teacher), jnp.asarray(teacher), jnp.asarray(mask), name))
    np.testing.assert_allclose(same, 0.0, atol=1e-9)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_lab_jsd_times_beta_one_minus_beta_is_trl_generalized_jsd(x64, beta):
    teacher, student, mask = _logits(1, shape=(4, 7, 6))
    labels = np.where(mask > 0, 1, -100)
    for temperature in (1.0, 0.7):
        per_token = distill.distillation_loss(
            jnp.asarray(teacher), jnp.asarray(student), jnp.asarray(mask), f"jsd:{beta}", temperature=temperature
        )
        lab = float(distill.gkd_value(f"jsd:{beta}", losses.masked_mean(per_token, jnp.asarray(mask))))
        trl = _trl_generalized_jsd(student, teacher, labels, beta, temperature)
        np.testing.assert_allclose(lab, trl, rtol=1e-6, atol=1e-12)


def test_jsd_limits_are_the_two_kls(x64):
    teacher, student, mask = (jnp.asarray(a) for a in _logits(2))

    def mean(name):
        return float(losses.masked_mean(distill.distillation_loss(teacher, student, mask, name), mask))

    forward, reverse = mean("kl"), mean("reverse_kl")
    assert abs(forward - reverse) > 1e-2  # the two limits are distinguishable
    gaps_zero, gaps_one = [], []
    for eps in (1e-2, 1e-3, 1e-4):
        jsd_small = distill.gkd_value(f"jsd:{eps}", mean(f"jsd:{eps}"))
        jsd_large = distill.gkd_value(f"jsd:{1 - eps}", mean(f"jsd:{1 - eps}"))
        gaps_zero.append(abs(jsd_small / eps - forward))
        gaps_one.append(abs(jsd_large / eps - reverse))  # 1 - beta = eps
    # First-order convergence: each tenfold step towards the end cuts the gap about tenfold.
    for gaps, limit in ((gaps_zero, forward), (gaps_one, reverse)):
        assert gaps[1] < 0.2 * gaps[0] and gaps[2] < 0.2 * gaps[1] and gaps[2] < 1e-2 * limit


# ---------------------------------------------------------------------------------------------
# The GKD sampler and objectives
# ---------------------------------------------------------------------------------------------

ORACLE = tm.OracleConfig(vocab_size=6, num_hidden=4, branching=2, emission_support=2, min_length=3, max_length=8, seed=2)
SPACE = ORACLE.space
STUDENT = lm.TransformerSpec(width=16, num_heads=2, num_layers=1)
TEACHER = lm.TransformerSpec(width=24, num_heads=2, num_layers=1)
PROMPT = 2


def _setup(lmbda, source="data", batch_size=16, data=None):
    oracle = ORACLE.build()
    if data is None:
        prompts = tm.sample_prompts(oracle, jax.random.key(0), 24, PROMPT)
        data = tm.sample_completions(oracle, jax.random.key(1), prompts)
    config = lm.LMConfig(
        model=STUDENT, objective="gkd", teacher=TEACHER, lmbda=lmbda, distill_source=source,
        prompt_length=PROMPT, batch_size=batch_size, steps=40, eval_every=20, learning_rate=3e-3,
    )  # fmt: skip
    student = lm.language_model(STUDENT, SPACE)
    teacher = lm.language_model(TEACHER, SPACE)
    params = student.init_params(jax.random.key(2), data)
    teacher_params = teacher.init_params(jax.random.key(3), data)
    # A peaked teacher (its output layer scaled up), far from the near-uniform initial student.
    head = "transformer_lm/~_head/logits"
    teacher_params = {**teacher_params, head: {**teacher_params[head], "w": 40.0 * teacher_params[head]["w"]}}

    def build(key, lmbda=lmbda):
        hyper = {**config.hyperparameters(), "lmbda": lmbda}
        ctx = objectives.BatchContext(config, student, data, data.shape[0], params, {"teacher": teacher_params}, hyper)
        return distill.gkd_batch(ctx, key)

    return config, student, teacher, params, teacher_params, data, build


def _rows(data, keys, batch_size=16):
    """The training rows every objective's batch draws with these keys (:func:`objectives.data_batch`)."""
    ctx = objectives.BatchContext(lm.LMConfig(batch_size=batch_size), None, data, data.shape[0], None, None, None)
    return jax.vmap(lambda key: objectives.data_batch(ctx, key).tokens)(keys)


def test_lambda_zero_never_samples_the_student_and_lambda_one_always_does():
    keys = jax.random.split(jax.random.key(5), 100)
    for source in ("data", "teacher"):
        _, student, teacher, params, teacher_params, data, build = _setup(0.0, source)
        batches = jax.jit(jax.vmap(lambda k, build=build: build(k, 0.0)))(keys)
        assert np.all(np.asarray(batches.on_policy) == 0.0)
        rows = _rows(data, keys)
        if source == "data":
            np.testing.assert_array_equal(np.asarray(batches.tokens), np.asarray(rows))
        else:  # fresh teacher samples of the rows' prompts, with the batch's sampling key
            draw = jax.random.split(jax.random.split(keys[7])[1])[1]
            expected = lm.sample(teacher.decoder, teacher_params, draw, 16, prompts=rows[7, :, :PROMPT]).tokens
            np.testing.assert_array_equal(np.asarray(batches.tokens[7]), np.asarray(expected))
        # The teacher's logits are those of the chosen sequences; the mask skips the prompt.
        np.testing.assert_allclose(
            batches.teacher_logits[3], teacher.logits(teacher_params, batches.tokens[3]), rtol=1e-5, atol=1e-5
        )
        assert np.all(np.asarray(batches.mask)[..., :PROMPT] == 0)
    batches = jax.jit(jax.vmap(lambda k: build(k, 1.0)))(keys)
    assert np.all(np.asarray(batches.on_policy) == 1.0)
    np.testing.assert_array_equal(np.asarray(batches.tokens)[..., :PROMPT], np.asarray(rows)[..., :PROMPT])
    draw = jax.random.split(jax.random.split(keys[4])[1])[1]
    expected = lm.sample(student.decoder, params, draw, 16, prompts=rows[4, :, :PROMPT]).tokens
    np.testing.assert_array_equal(np.asarray(batches.tokens[4]), np.asarray(expected))
    half = np.asarray(jax.jit(jax.vmap(lambda k: build(k, 0.5)))(keys).on_policy)
    assert 30 < half.sum() < 70  # Binomial(100, 1/2)


def test_on_policy_completions_are_drawn_from_the_student():
    oracle = ORACLE.build()
    prompt = tm.sample_prompts(oracle, jax.random.key(9), 1, PROMPT)
    data = tm.sample_completions(oracle, jax.random.key(1), jnp.repeat(prompt, 8, axis=0))
    _, student, _, params, _, _, build = _setup(1.0, data=data, batch_size=32)
    batches = jax.jit(jax.vmap(build))(jax.random.split(jax.random.key(6), 250))
    tokens = np.asarray(batches.tokens).reshape(-1, SPACE.window)
    logits = student.logits(params, data[:1])
    exact = np.exp(np.asarray(lm.sampling.window_log_policy(logits, SPACE)[0, PROMPT], dtype=np.float64))
    counts = np.bincount(tokens[:, PROMPT], minlength=SPACE.num_actions)
    assert counts[0] == 0 and exact[0] == 0  # EOS is outside the length window at this position
    assert stats.chisquare(counts[1:], exact[1:] / exact[1:].sum() * counts.sum()).pvalue > 1e-3
    # and the student's second completion token given the first, pooled: its exact mixture.
    second = np.asarray(lm.sampling.window_log_policy(student.logits(params, jnp.asarray(tokens[:2000])), SPACE))
    expected = np.exp(second[:, PROMPT + 1]).sum(0)
    observed = np.bincount(tokens[:2000, PROMPT + 1], minlength=SPACE.num_actions)
    keep = expected > 0
    assert stats.chisquare(observed[keep], expected[keep] / expected[keep].sum() * observed.sum()).pvalue > 1e-3


@pytest.mark.parametrize(("objective", "source"), [("gkd", "teacher"), ("seq_kd", "data")])
def test_distillation_objectives_train_the_student_towards_the_teacher(objective, source):
    config, student, teacher, _, teacher_params, _, _ = _setup(0.5, source)
    prompts = tm.sample_prompts(ORACLE.build(), jax.random.key(0), 24, PROMPT)
    data = lm.sample(teacher.decoder, teacher_params, jax.random.key(1), 24, prompts=prompts).tokens  # teacher completions
    config = lm.LMConfig(**{**config.__dict__, "objective": objective, "divergence": "jsd:0.5"})
    train = jax.jit(jax.vmap(lm.make_train(config, SPACE), in_axes=(0, None, None, None, None)))
    out = train(jax.random.split(jax.random.key(4), 2), data, None, None, {"teacher": teacher_params})
    # Exact forward KL to the teacher on fresh teacher completions, before and after.
    probe = lm.sample(teacher.decoder, teacher_params, jax.random.key(8), 64, prompts=jnp.tile(data[:, :PROMPT], (3, 1))[:64])
    mask = probe.mask

    def kl(params):
        return losses.masked_mean(
            distill.distillation_loss(
                teacher.logits(teacher_params, probe.tokens), student.logits(params, probe.tokens), mask, "kl", space=SPACE
            ),
            mask,
        )

    start = student.init_params(jax.random.split(jax.random.key(4), 2)[0], data)
    after = jax.vmap(kl)(out.params)
    assert np.all(np.isfinite(np.asarray(out.curves["loss"])))
    assert np.all(np.asarray(after) < 0.7 * float(kl(start)))
    assert out.curves["on_policy"].shape == (2, 2)


def test_distillation_needs_a_teacher_and_valid_settings():
    _, _, _, _, _, data, _ = _setup(0.0)
    with pytest.raises(ValueError, match="teacher's parameters"):
        lm.make_train(lm.LMConfig(model=STUDENT, objective="gkd", teacher=TEACHER, steps=2, eval_every=1), SPACE)(
            jax.random.key(0), data
        )
    with pytest.raises(ValueError, match="set LMConfig.teacher"):
        lm.make_train(lm.LMConfig(model=STUDENT, objective="gkd", steps=2, eval_every=1), SPACE)(
            jax.random.key(0), data, extra={"teacher": {}}
        )
    with pytest.raises(ValueError, match="unknown divergence 'kl2'"):
        lm.LMConfig(objective="gkd", divergence="kl2")
    with pytest.raises(ValueError, match="lmbda must lie in"):
        lm.LMConfig(objective="gkd", lmbda=1.5)
    with pytest.raises(ValueError, match="distill_source"):
        lm.LMConfig(objective="gkd", distill_source="oracle")
