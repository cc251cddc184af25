"""The transformer LM and its trainer: causality, cached decoding, sampling window, training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agents import lm
from envs import token_mdp as tm

SPACE = tm.TokenSpace(num_actions=6, window=9, min_length=3)
SPEC = lm.TransformerSpec(width=16, num_heads=2, num_layers=2)


def _oracle():
    return tm.random_oracle("hmm", vocab_size=5, num_hidden=4, branching=2, emission_support=2, min_length=3, max_length=8)


def test_transformer_is_causal_and_cached_decoding_matches():
    model = lm.language_model(SPEC, SPACE)
    tokens = tm.sample(_oracle(), jax.random.key(0), 4)
    params = jax.jit(model.init_params)(jax.random.key(1), tokens)
    logits = jax.jit(model.logits)
    base = np.asarray(logits(params, tokens))
    assert base.shape == (4, 9, 6)
    changed = np.asarray(logits(params, tokens.at[:, 5].set(1)))
    np.testing.assert_array_equal(changed[:, :6], base[:, :6])  # positions <= 5 only see x_<t
    assert not np.allclose(changed[:, 6:], base[:, 6:])
    # Incremental decoding with the key/value cache gives the same rows.
    cache = model.decoder.empty_cache(4)
    assert cache.keys.shape == (2, 4, 9, 2, 8)
    inputs = lm.shift_right(tokens, SPACE.bos)
    step = jax.jit(model.decoder.step)
    rows = []
    for t in range(9):
        row, cache = step(params, inputs[:, t], t, cache)
        rows.append(np.asarray(row))
    np.testing.assert_allclose(np.stack(rows, 1), base, atol=1e-5)


def test_reward_model_is_a_causal_scalar_head_on_the_same_torso():
    init, apply = lm.reward_model(SPEC, SPACE)
    inputs = lm.shift_right(tm.sample(_oracle(), jax.random.key(0), 3), SPACE.bos)
    params = init(jax.random.key(1), inputs)
    values = np.asarray(apply(params, inputs))
    assert values.shape == (3, 9)
    changed = np.asarray(apply(params, inputs.at[:, 4].set(2)))
    np.testing.assert_array_equal(changed[:, :4], values[:, :4])
    assert not np.allclose(changed[:, 4:], values[:, 4:])
    lm_params = lm.language_model(SPEC, SPACE).init(jax.random.key(1), inputs)
    torso = {name for name in lm_params if not name.endswith("logits")}
    assert torso <= set(params)  # same torso parameters, another head


def test_one_sampler_serves_models_of_different_sizes():
    data = jnp.zeros((1, 9), jnp.int32)
    sample = jax.jit(lm.sample, static_argnums=(0, 3))
    for spec in (SPEC, lm.TransformerSpec(width=8, num_heads=1, num_layers=1)):
        model = lm.language_model(spec, SPACE)
        samples = sample(model.decoder, model.init_params(jax.random.key(1), data), jax.random.key(2), 50, 1.0)
        lengths = np.asarray(tm.sequence_lengths(samples.tokens))
        assert samples.tokens.shape == (50, 9) and lengths.min() >= 3 and lengths.max() <= 8


def test_sampling_respects_the_length_window_and_temperature():
    model = lm.language_model(SPEC, SPACE)
    params = jax.jit(model.init_params)(jax.random.key(1), jnp.zeros((1, 9), jnp.int32))
    sample = jax.jit(lm.sample, static_argnums=(0, 3))
    samples = sample(model.decoder, params, jax.random.key(2), 200, 1.0)
    lengths = np.asarray(tm.sequence_lengths(samples.tokens))
    assert lengths.min() >= 3 and lengths.max() <= 8
    mask = np.asarray(samples.mask) > 0
    entropy = np.asarray(samples.entropy)
    assert np.all(entropy[:, :-1][mask[:, :-1]] > 0) and np.all(entropy[~mask] == 0)
    assert np.all(entropy[:, -1] == 0)  # EOS is forced at the last position
    # Before min_length EOS is excluded: the entropy is at most log(5 regular tokens).
    assert np.all(entropy[:, :3] <= np.log(5) + 1e-5)
    cold = sample(model.decoder, params, jax.random.key(2), 200, 0.05)
    assert np.asarray(cold.entropy)[np.asarray(cold.mask) > 0].mean() < entropy[mask].mean()


def test_training_learns_and_vmapped_seeds_equal_separate_runs():
    config = lm.LMConfig(model=SPEC, objective="irl_sft", lam=0.1, steps=60, eval_every=20, batch_size=16, learning_rate=3e-3)
    data = tm.sample(_oracle(), jax.random.key(0), 64)
    train = jax.jit(lm.make_train(config, SPACE))
    keys = jax.random.split(jax.random.key(3), 2)
    batched = jax.jit(jax.vmap(lm.make_train(config, SPACE), in_axes=(0, None)))(keys, data)
    single = train(keys[1], data)
    np.testing.assert_allclose(np.asarray(batched.curves["loss"][1]), np.asarray(single.curves["loss"]), rtol=2e-4)
    nll = np.asarray(single.curves["nll"])
    assert nll.shape == (3,) and nll[-1] < nll[0] < np.log(6) + 0.2
    # Chunked training (the experiment's progress bar) equals one run.
    trainer = lm.make_trainer(config, SPACE)
    state = trainer.init(keys[1], data)
    run = jax.jit(trainer.run, static_argnums=4)
    chunks = []
    for _ in range(3):
        state, curves = run(state, data, {"lam": 0.1}, 64, 1)
        chunks.append(np.asarray(curves["loss"]))
    assert int(state.step) == 60
    np.testing.assert_allclose(np.concatenate(chunks), np.asarray(single.curves["loss"]), rtol=2e-4)


def test_bad_configs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown objective"):
        lm.LMConfig(objective="dpo")
    with pytest.raises(ValueError, match="multiple of eval_every"):
        lm.LMConfig(steps=100, eval_every=30)
    with pytest.raises(ValueError, match="lam must be finite"):
        lm.LMConfig(lam=-1.0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        lm.TransformerSpec(width=10, num_heads=4)
    with pytest.raises(ValueError, match="positions"):
        lm.TransformerSpec(positions="rotary")
    with pytest.raises(ValueError, match="min_length"):
        tm.TokenSpace(num_actions=5, window=4, min_length=4)
    train = lm.make_train(lm.LMConfig(model=SPEC, steps=20, eval_every=20), SPACE)
    with pytest.raises(ValueError, match="tokens must have shape"):
        train(jax.random.key(0), jnp.zeros((4, 5), jnp.int32))
    with pytest.raises(ValueError, match="lam must lie in"):
        train(jax.random.key(0), jnp.zeros((4, 9), jnp.int32), {"lam": -0.5})


def test_training_refuses_token_ids_outside_the_vocabulary():
    # Issue 10 item 7: an id >= num_actions (or < 0) used to train on NaN or on a wrapped id.
    train = lm.make_train(lm.LMConfig(model=SPEC, steps=20, eval_every=20), SPACE)
    tokens = np.zeros((4, 9), np.int32)
    tokens[:, :3] = [1, 2, 3]
    for bad in (6, -1):
        tokens[2, 1] = bad
        with pytest.raises(ValueError, match="token ids must be"):
            train(jax.random.key(0), jnp.asarray(tokens))
