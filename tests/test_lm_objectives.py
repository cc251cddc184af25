"""The objective registry: a new method is one registry entry, trained by the unchanged trainer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import lm
from agents.lm import losses, objectives, weights
from envs import token_mdp as tm

SPACE = tm.TokenSpace(num_actions=6, window=9, min_length=3)
SPEC = lm.TransformerSpec(width=16, num_heads=2, num_layers=1)


def _data(n=32):
    oracle = tm.random_oracle("hmm", vocab_size=5, num_hidden=4, branching=2, emission_support=2, min_length=3, max_length=8)
    return tm.sample(oracle, jax.random.key(0), n)


def _squared_distance(a, b):
    return sum(jnp.sum(jnp.square(x - y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _anchored_mle(params, model, batch, extra, hyper):
    """MLE plus a pull towards an EMA anchor of the parameters (a WARP-like toy)."""
    nll = losses.masked_mean(losses.mle_loss(model.logits(params, batch.tokens), batch.tokens, batch.mask), batch.mask)
    distance = _squared_distance(params, extra["anchor"])
    return nll + hyper["pull"] * distance, {"nll": nll, "distance": distance}


def test_a_toy_objective_registered_here_trains_without_any_trainer_change():
    toy = objectives.Objective(
        name="toy_anchored_mle",
        loss=_anchored_mle,
        hyperparameters=("pull", "ema_rate"),
        init_extra=lambda params, given: {"anchor": params, **given},
        update_extra=lambda extra, params, hyper: {
            **extra,
            "anchor": weights.ema(params, extra["anchor"], hyper["ema_rate"]),
        },
        description="test only",
    )
    lm.register(toy)
    try:
        assert lm.OBJECTIVES["toy_anchored_mle"] is toy
        config = lm.LMConfig(model=SPEC, objective="toy_anchored_mle", steps=40, eval_every=20, batch_size=8, learning_rate=3e-3)
        train = jax.jit(lm.make_train(config, SPACE))
        data = _data()
        out = train(jax.random.key(1), data, {"pull": 1e-3, "ema_rate": 0.5})
        nll = np.asarray(out.curves["nll"])
        assert set(out.curves) == {"loss", "nll", "distance"} and nll.shape == (2,)
        assert nll[-1] < nll[0]
        initial = lm.language_model(SPEC, SPACE).init_params(jax.random.split(jax.random.key(1))[0], data)
        # The anchor moved off the initialisation and trails the final parameters.
        assert float(_squared_distance(out.extra["anchor"], initial)) > 0
        assert 0 < float(_squared_distance(out.extra["anchor"], out.params)) < float(_squared_distance(initial, out.params))
        with pytest.raises(ValueError, match="hyperparameters pull, ema_rate are missing"):
            lm.make_train(config, SPACE)(jax.random.key(1), data)
        with pytest.raises(ValueError, match="already registered"):
            lm.register(toy)
    finally:
        lm.OBJECTIVES.pop("toy_anchored_mle", None)


def test_the_lab_methods_are_registry_entries():
    assert {"mle", "irl_sft", "iq_chi2", "online_irl_sft"} <= set(lm.OBJECTIVES)
    with pytest.raises(ValueError, match="unknown objective 'dpo'"):
        objectives.get("dpo")


def test_online_batch_holds_model_samples_drawn_before_the_loss():
    config = lm.LMConfig(model=SPEC, objective="online_irl_sft", batch_size=10, policy_fraction=0.3)
    model = lm.language_model(SPEC, SPACE)
    data = _data()
    params = model.init_params(jax.random.key(0), data)
    context = objectives.BatchContext(config, model, data, data.shape[0], params, {}, config.hyperparameters())
    batch = objectives.get("online_irl_sft").make_batch(context, jax.random.key(3))
    assert batch.tokens.shape == (10, 9) and batch.samples.tokens.shape == (3, 9)
    # The data rows are the ones the offline objectives draw with the same key.
    offline = objectives.data_batch(context, jax.random.key(3))
    np.testing.assert_array_equal(np.asarray(batch.tokens), np.asarray(offline.tokens))
    lengths = np.asarray(tm.sequence_lengths(batch.samples.tokens))
    assert lengths.min() >= SPACE.min_length
