"""f-loss objectives for the LM trainer and sampling from the f-softargmax of a model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import lm
from agents.lm import objectives
from agents.lm.f_objectives import FLoss, parse_f_loss
from envs import token_mdp as tm
from mdvi.fenchel_young import fenchel_young_loss

SPACE = tm.TokenSpace(num_actions=6, window=9, min_length=3)
SPEC = lm.TransformerSpec(width=16, num_heads=2, num_layers=2)


def _model_and_params():
    model = lm.language_model(SPEC, SPACE)
    params = jax.jit(model.init_params)(jax.random.key(1), jnp.zeros((1, 9), jnp.int32))
    # sharpen the head so that 1.5-entmax is sparse at temperature 1
    params = jax.tree.map(lambda x: 6.0 * x, params)
    return model, params


def test_registered_f_loss_is_the_fenchel_young_loss_and_kl_unit_is_mle():
    model, params = _model_and_params()
    tokens = jax.random.randint(jax.random.key(3), (4, 9), 1, 6).at[:, -1].set(tm.EOS)
    batch = objectives.Batch(tokens, tm.sequence_mask(tokens))
    kl = parse_f_loss("fy:kl:unit")
    assert objectives.get("fy:kl:unit").loss == kl.loss
    hyper = {"discount": 1.0}
    mle, _ = objectives.get("mle").loss(params, model, batch, None, hyper)
    fy, _ = objectives.get(kl.name).loss(params, model, batch, None, hyper)
    np.testing.assert_allclose(float(fy), float(mle), rtol=1e-5)
    sparse = parse_f_loss("fy:alpha:1.5:uniform")
    value, _ = objectives.get(sparse.name).loss(params, model, batch, None, hyper)
    logits = model.logits(params, tokens)
    by_hand = fenchel_young_loss(logits, tokens, "alpha:1.5", log_ref=jnp.full_like(logits, -np.log(6)), mask=batch.mask)
    np.testing.assert_allclose(float(value), float(jnp.sum(by_hand) / jnp.sum(batch.mask)), rtol=1e-5)
    with pytest.raises(ValueError, match="reference must be one of"):
        FLoss("alpha:1.5", "flat")
    with pytest.raises(ValueError, match="fy:<divergence>"):
        parse_f_loss("alpha:1.5")


def test_sparse_models_sample_from_their_f_softargmax():
    model, params = _model_and_params()
    sample = jax.jit(lm.sample, static_argnums=(0, 3), static_argnames=("divergence",))
    key = jax.random.key(2)
    # the default is KL: bit for bit the same as naming it
    a, b = sample(model.decoder, params, key, 64, 1.0), sample(model.decoder, params, key, 64, 1.0, divergence="kl")
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    f_loss = FLoss("alpha:1.5", "unit")
    samples = sample(model.decoder, params, key, 200, 1.0, divergence=f_loss.resolved)
    mask = np.asarray(samples.mask) > 0
    assert np.all(np.isfinite(np.asarray(samples.log_probs)[mask]))
    # where the length window restricts nothing (min_length <= t < window - 1) the sampler's
    # distribution is the model's 1.5-entmax: sampled tokens have its (positive) probability
    log_p = np.asarray(f_loss.log_policy(model.logits(params, samples.tokens)))
    tokens = np.asarray(samples.tokens)
    t = np.arange(tokens.shape[1])
    free = mask & (t >= SPACE.min_length) & (t < SPACE.window - 1)
    taken = np.take_along_axis(log_p, tokens[..., None], -1)[..., 0]
    # (float32 cached decoding vs the full forward pass: agreement to ~1e-5 relative)
    np.testing.assert_allclose(taken[free], np.asarray(samples.log_probs)[free], rtol=1e-4, atol=1e-4)
    support = (log_p > -np.inf).sum(-1)
    assert np.any(support[free] < SPACE.num_actions)  # sparse: some tokens had probability 0
