# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8. Inverse soft-Q for language models
#
# A language model's logits can be read as a **soft Q-function** of the token-level MDP
# (state: the prefix $x_{<t}$; action: the next token; deterministic transitions; the episode
# ends with EOS): the policy is $\pi = \mathrm{softmax}(Q)$ and the state value is the soft value
# $V(s) = \log\sum_a e^{Q(s,a)}$ (notebook 1, temperature 1). Inverse soft-Q learning
# (IQ-Learn, Garg et al. 2021) turns any $Q$ into the reward it is soft-optimal for,
# $r(s,a) = Q(s,a) - \gamma V(s')$, and learns $Q$ so that this reward explains the demonstrations.
# Wulfmeier et al. (2024, arXiv 2409.01369) show that its $\chi^2$-regularized offline form is
# maximum likelihood plus a TD penalty, **IRL-SFT**. This notebook proves the equivalence and
# checks it on the lab's losses (`agents/lm/losses.py`, `agents/lm/objectives.py`), checks
# that $\lambda = 0$ is MLE, recovers a true reward from a soft-optimal $Q$, and draws a small
# quality-diversity curve against an exact oracle language model (`envs/token_mdp.py`).

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from agents.lm import LMConfig, TransformerSpec, evaluation, language_model, losses, make_train
from agents.lm.objectives import Batch, get
from envs import token_mdp
from envs.tabular import TabularMDP, gridworld
from experiments.plotting import pyplot
from mdvi import soft_value
from mdvi import tabular as solvers

START = time.perf_counter()
plt = pyplot()
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"

oracle_config = token_mdp.OracleConfig(vocab_size=16, num_hidden=8, min_length=6, max_length=12, eos_hazard=0.2, seed=0)
oracle, space = oracle_config.build(), oracle_config.space
demonstrations = token_mdp.sample(oracle, jax.random.key(0), 512)
mask = token_mdp.sequence_mask(demonstrations)
lengths = f"{oracle_config.min_length}-{oracle_config.max_length}"
print(f"oracle: {space.num_actions} actions (EOS = 0), sequences of {lengths} tokens; "
      f"first demonstration {token_mdp.strip(np.asarray(demonstrations[:1]))[0]}")  # fmt: skip

# %% [markdown]
# ## 1. IRL-SFT with $\lambda$ is $\chi^2$ IQ-Learn with $\alpha = 1/(4\lambda)$
#
# Offline $\chi^2$ IQ-Learn (Garg et al. 2021, Eq. 10 with the "value_expert" estimator of the
# initial-value term) minimises, over expert transitions $(s, a, s')$,
# $$\mathcal L_{\mathrm{IQ}}(Q) = \mathbb{E}\Big[-\big(Q(s,a) - \gamma V(s')\big) + \big(V(s) - \gamma V(s')\big)
# + \tfrac{1}{4\alpha}\big(Q(s,a) - \gamma V(s')\big)^2\Big].$$
# **Derivation.** The first two terms add up to $V(s) - Q(s,a) = -\log\pi(a|s)$: the $\gamma V(s')$ cancel.
# So per token
# $$\ell_{\mathrm{IQ}} = -\log\pi(a|s) + \tfrac1{4\alpha}\,r_Q(s,a)^2
# = \ell_{\mathrm{IRL\text{-}SFT}}\ \text{ with }\ \lambda = \tfrac{1}{4\alpha},$$
# where $r_Q = Q - \gamma V'$ is the implicit reward.
#
# > **Proposition (Wulfmeier et al. 2024, Eq. 14).** IRL-SFT,
# > $\mathbb{E}[-\log\pi(a|s)] + \lambda\,\mathbb{E}[(Q(s,a) - \gamma V(s'))^2]$, is offline $\chi^2$ IQ-Learn
# > with $\alpha = 1/(4\lambda)$: maximum likelihood with a penalty that keeps the implicit rewards small,
# > i.e. pulls $V(s)$ toward $\gamma V(s')$ along the demonstrations.
#
# We check it per token on random logits, against a NumPy computation from the definitions
# (log-softmax, logsumexp, the shift to the next state, 0 after EOS), and through the registered
# objectives `irl_sft` and `iq_chi2` on a small transformer: values and gradients.

# %%
rng = np.random.default_rng(0)
logits = jnp.asarray(rng.normal(size=(*demonstrations.shape, space.num_actions)), jnp.float32)
discount = 0.95


@jax.jit
def both_losses(lam):
    irl = losses.irl_sft_loss(logits, demonstrations, mask, lam=lam, discount=discount)
    iq = losses.iq_learn_chi2_loss(logits, demonstrations, mask, alpha=1 / (4 * lam), discount=discount)
    return irl, iq


gaps = [float(jnp.max(jnp.abs(irl - iq))) for irl, iq in map(both_losses, [0.01, 0.1, 1.0, 10.0])]
print(f"max per-token |IRL-SFT - chi2 IQ-Learn| over four lambdas: {max(gaps):.1e}")
assert max(gaps) < 1e-4, gaps  # float32, per-token values of order 10

# the same per-token loss from the definitions, in float64 NumPy
L, tokens, m = np.asarray(logits, np.float64), np.asarray(demonstrations), np.asarray(mask, np.float64)
values = np.log(np.exp(L - L.max(-1, keepdims=True)).sum(-1)) + L.max(-1)
q_taken = np.take_along_axis(L, tokens[..., None], -1)[..., 0]
continues = (tokens != token_mdp.EOS) & (np.arange(tokens.shape[1]) < tokens.shape[1] - 1) & (m > 0)
next_values = np.where(continues, np.concatenate([values[:, 1:], np.zeros_like(values[:, :1])], 1), 0.0)
by_hand = (values - q_taken + 1.0 * (q_taken - discount * next_values) ** 2) * m
irl_one = np.asarray(both_losses(1.0)[0])
print(f"max |irl_sft_loss - definition| = {np.abs(irl_one - by_hand).max():.1e}")
assert np.allclose(irl_one, by_hand, rtol=1e-5, atol=1e-4)

# through the objective registry, on a small transformer: value and gradient
spec = TransformerSpec(num_layers=1, width=32, num_heads=2)
model = language_model(spec, space)
params = jax.jit(model.init_params)(jax.random.key(1), demonstrations)
batch = Batch(demonstrations[:64], mask[:64])


@jax.jit
def values_and_gradients(lam):
    """Loss values and gradients of irl_sft(lam), iq_chi2(1 / (4 lam)) and mle, in one program."""
    hyper = {"lam": lam, "chi2_alpha": 1 / (4 * lam), "discount": 1.0}
    return {name: jax.value_and_grad(lambda p, name=name: get(name).loss(p, model, batch, {}, hyper)[0])(params)
            for name in ("irl_sft", "iq_chi2", "mle")}  # fmt: skip


(v_irl, g_irl), (v_iq, g_iq) = (values_and_gradients(0.25)[name] for name in ("irl_sft", "iq_chi2"))
grad_gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(g_irl), jax.tree.leaves(g_iq)))
grad_scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g_irl))
print(f"objectives: irl_sft {float(v_irl):.6f}, iq_chi2 {float(v_iq):.6f}; "
      f"max gradient gap {grad_gap:.1e} (scale {grad_scale:.2f})")  # fmt: skip
assert abs(float(v_irl) - float(v_iq)) < 1e-5 * abs(float(v_irl)) and grad_gap < 1e-4 * grad_scale

# %% [markdown]
# ## 2. $\lambda = 0$ is maximum likelihood
#
# At $\lambda = 0$ the penalty vanishes and IRL-SFT is teacher-forced MLE, value and gradient.
# Since the loss is affine in $\lambda$,
# $\nabla\mathcal L_\lambda - \nabla\mathcal L_{\mathrm{MLE}} = \lambda\,\nabla\,\mathbb{E}[r_Q^2]$ *exactly*: the distance to
# MLE's gradient is linear in $\lambda$, a line of slope 1 on a log-log plot.

# %%
def flat(tree):
    return jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])


at_zero = values_and_gradients(0.0)
(mle_value, g_mle), (zero_value, g_zero) = at_zero["mle"], at_zero["irl_sft"]
g_mle, g_zero, mle_value, zero_value = flat(g_mle), flat(g_zero), float(mle_value), float(zero_value)
lams = np.geomspace(1e-3, 10, 5 if SMOKE else 9)
distance = np.array([float(jnp.linalg.norm(flat(values_and_gradients(lam)["irl_sft"][1]) - g_mle)) for lam in lams])
zero_grad_gap = float(jnp.max(jnp.abs(g_zero - g_mle)))
print(f"lambda = 0: |loss - MLE| = {abs(zero_value - mle_value):.1e}, |grad - MLE grad| = {zero_grad_gap:.1e}")
print("||grad_lambda - grad_MLE|| / lambda =", (distance / lams).round(4))
# exact in exact arithmetic (lambda * penalty = 0); allow float32 summation-order noise
assert abs(zero_value - mle_value) <= 1e-6 * abs(mle_value) and zero_grad_gap <= 1e-6 * float(jnp.max(jnp.abs(g_mle)))
assert np.allclose(distance / lams, distance[-1] / lams[-1], rtol=2e-3), distance / lams

fig, ax = plt.subplots(figsize=(5.5, 3.4))
ax.loglog(lams, distance, "o-", label=r"$\|\nabla\mathcal{L}_\lambda - \nabla\mathcal{L}_{\mathrm{MLE}}\|$")
ax.loglog(lams, distance[-1] * lams / lams[-1], "k--", lw=1, label="slope 1")
ax.set_xlabel(r"$\lambda$  ($\chi^2$ IQ-Learn's $\alpha = 1/(4\lambda)$)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** The points sit on the slope-1 line over four decades: there is no
# threshold below which IRL-SFT "becomes" MLE, the TD penalty's pull is proportional to
# $\lambda$ (to $1/\alpha$ in IQ-Learn's terms), and at $\lambda = 0$ the two are the same function.

# %% [markdown]
# ## 3. The recovered reward of a soft-optimal $Q$ is the true reward
#
# > **Inverse soft Bellman operator (Garg et al. 2021, Lemma 3.2).** For fixed dynamics, the map
# > $r \mapsto Q^\star_r$ (the soft-optimal $Q$ of reward $r$) is a bijection, with inverse
# > $(\mathcal T^{-1}Q)(s,a) = Q(s,a) - \gamma\,\mathbb{E}_{s'}V_Q(s')$, $V_Q(s) = \log\sum_a e^{Q(s,a)}$.
#
# *Proof.* $Q^\star_r$ is the fixed point of $Q = r + \gamma P V_Q$; solve for $r$. Conversely,
# $\mathcal T^{-1}Q$ defines a reward of which $Q$ is the fixed point.
#
# We take a 5x5 gridworld with 10% slip, a reward $r(s,a)$ with a goal, two pits and a cost on
# moving up, solve it with soft value iteration (`mdvi.tabular.soft_value_iteration`, temperature
# 1), and apply $\mathcal T^{-1}$. On the token MDP the oracle is soft-optimal for
# $r = \log p(a|s)$ with $V = 0$ everywhere, so the lab's `recovered_reward` applied to the
# oracle's log-probabilities must return them.

# %%
size = 5
grid = gridworld(size, slip=0.1, discount=0.9)
true_reward = np.zeros((size * size, 4))
true_reward[size * size - 1] = 1.0  # the goal
true_reward[[7, 13]] = -1.0  # two pits
true_reward[:, 0] -= 0.1  # moving up costs
mdp = TabularMDP(grid.transitions, true_reward, grid.discount, grid.initial, name="grid-rewards")
with jax.enable_x64(True):
    soft = solvers.soft_value_iteration(mdp.model("dense"), 1.0, tolerance=1e-12)
    q_soft = np.asarray(soft.q)
    recovered = q_soft - mdp.discount * np.einsum("san,n->sa", mdp.transitions, np.asarray(soft_value(soft.q, 1.0)))
grid_error = np.abs(recovered - true_reward).max()
print(f"gridworld: max |T^-1 Q* - r| = {grid_error:.1e} (soft VI stopped at a residual of 1e-12)")
assert grid_error < 1e-9

oracle_logits = token_mdp.oracle_log_policy(oracle, demonstrations)  # [N, T, A], -inf where impossible
oracle_reward = losses.recovered_reward(oracle_logits, demonstrations, mask)
step_log_probs = token_mdp.score(oracle, demonstrations).step_log_probs
token_error = float(jnp.max(jnp.abs(jnp.where(mask > 0, oracle_reward - step_log_probs, 0.0))))
print(f"token MDP: max |recovered reward of the oracle - log p(a|s)| = {token_error:.1e}")
assert token_error < 1e-5

fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
panels = [(true_reward, "true r(s, up)", None), (recovered, r"recovered $Q^\star - \gamma P V$ (up)", None),
          (np.log10(np.abs(recovered - true_reward) + 1e-18), r"$\log_{10}$ |error| (up)", (-16, -8))]  # fmt: skip
for ax, (table, title, limits) in zip(axes, panels):
    scale = {} if limits is None else dict(vmin=limits[0], vmax=limits[1])
    image = ax.imshow(table[:, 0].reshape(size, size), cmap="viridis", **scale)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(image, ax=ax, fraction=0.046)
for s in range(size * size):
    r_, c_ = divmod(s, size)
    axes[0].text(c_, r_, f"{q_soft[s].max():.1f}", ha="center", va="center", fontsize=6, color="w")
plt.tight_layout()
plt.show()

# %% [markdown]
# **What to notice.** The first two panels are the same picture; the error panel is at the
# level of the solver's tolerance. The numbers on the left panel are $\max_a Q^\star$: the soft
# values are smooth over the grid (they carry the future), yet $\mathcal T^{-1}$ strips the future
# off exactly and returns the reward of the "up" action: the cost $-0.1$ everywhere, $-1.1$ in the
# pits, $0.9$ at the goal. A learned $Q$ that is *not* soft-optimal for anything simple yields a reward that is only
# equal to the true one up to potential shaping, which is why the lab's `lm-irl` experiment
# reports the shaping-invariant EPIC distance besides the per-token correlation.

# %% [markdown]
# ## 4. A small quality-diversity curve
#
# We train a one-layer transformer on the 512 demonstrations with MLE ($\lambda = 0$) and with
# IRL-SFT ($\lambda = 1$), both in one vmapped program, then sample from each at temperatures
# $T \in [0.7, 1.3]$. **Quality** is the oracle's exact log-likelihood per token of the samples,
# **diversity** the model's own entropy per token along them (nats); the oracle itself sits at
# quality $= -$entropy. *Gibbs' inequality* gives a closed-form check of the training: a model's
# cross-entropy on oracle data is at least the oracle's own, $\mathbb{E}_p[-\log q] \ge \mathbb{E}_p[-\log p]$,
# which we test on 256 held-out sequences (paired, 3 standard errors).

# %%
steps = 100 if SMOKE else 300
temperatures = np.array([0.7, 0.85, 1.0, 1.15, 1.3])
num_samples = 128 if SMOKE else 256
config = LMConfig(model=spec, objective="irl_sft", batch_size=32, steps=steps, eval_every=steps,
                  learning_rate=3e-3, warmup_steps=20)  # fmt: skip
train = make_train(config, space)
lambdas = jnp.array([0.0, 1.0])
trained = jax.jit(jax.vmap(lambda lam: train(jax.random.key(2), demonstrations, {"lam": lam})))(lambdas)
heldout = token_mdp.sample(oracle, jax.random.key(3), 256)
evaluate = evaluation.final_evaluator(model, oracle, heldout, temperatures, num_samples)
final = jax.jit(jax.vmap(evaluate, in_axes=(0, None)))(trained.params, jax.random.key(4))
sets = final.samples
per_token = lambda x: np.asarray((x * sets.mask).sum((-1, -2)) / sets.mask.sum((-1, -2)))  # noqa: E731
quality, entropy = per_token(sets.oracle_log_probs), per_token(sets.entropy)  # [lambda, temperature]
heldout_scores = token_mdp.score(oracle, heldout)
oracle_quality = float(heldout_scores.step_log_probs.sum() / heldout_scores.mask.sum())
oracle_entropy = float(heldout_scores.entropy.sum() / heldout_scores.mask.sum())
for i, lam in enumerate(np.asarray(lambdas)):
    print(f"lambda = {lam:g}: quality {quality[i].round(3)}, entropy {entropy[i].round(3)}, "
          f"held-out NLL {float(final.heldout_nll[i]):.3f}")  # fmt: skip
print(f"oracle: quality {oracle_quality:.3f}, entropy {oracle_entropy:.3f} (per token, held-out data)")

# Gibbs: per-sequence NLL of each model minus the oracle's, paired over held-out sequences
heldout_mask = token_mdp.sequence_mask(heldout)
oracle_nll = -np.asarray(heldout_scores.step_log_probs.sum(-1))
sequence_nll = jax.jit(jax.vmap(lambda p: losses.mle_loss(model.logits(p, heldout), heldout, heldout_mask).sum(-1)))
for i, model_nll in enumerate(np.asarray(sequence_nll(trained.params))):
    excess = model_nll - oracle_nll
    standard_error = excess.std() / np.sqrt(len(excess))
    print(f"lambda = {float(lambdas[i]):g}: excess NLL per sequence {excess.mean():.3f} +- {standard_error:.3f}")
    assert excess.mean() > -3 * standard_error, excess.mean()
# higher temperature: more diverse, lower quality (end points, for both models)
assert np.all(entropy[:, -1] > entropy[:, 0]) and np.all(quality[:, -1] < quality[:, 0]), (quality, entropy)

fig, ax = plt.subplots(figsize=(6, 4))
for i, label in enumerate(["MLE ($\\lambda$ = 0)", "IRL-SFT ($\\lambda$ = 1)"]):
    ax.plot(entropy[i], quality[i], "o-", label=label)
    for t, x_, y_ in zip(temperatures, entropy[i], quality[i]):
        ax.annotate(f"T={t:g}", (x_, y_), fontsize=7, xytext=(3, 3), textcoords="offset points")
ax.plot([oracle_entropy], [oracle_quality], "k*", ms=12, label="oracle")
ax.set_xlabel("diversity: model entropy per token (nats)")
ax.set_ylabel("quality: oracle log-likelihood per token")
ax.set_title(f"one-layer transformer, {steps} steps, 512 demonstrations", fontsize=10)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** Each curve trades quality for diversity as $T$ grows; a method is better
# where its curve lies above the other at equal diversity. The oracle star marks the best
# attainable point at $T = 1$. This tiny run (one layer, a few hundred steps) is far from the
# oracle and the two curves are close; the lab's `mdvi-lab lm-irl` experiment (larger data,
# longer training, seeds, Self-BLEU and distinct-n, reward recovery by EPIC distance) is where
# the comparison of Wulfmeier et al. is measured, and the README reports it.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `iq_alpha(lam)` and `irl_lambda(alpha)`, the two directions of the
# correspondence of section 1. The check runs `iq_learn_chi2_loss` at `iq_alpha(lam)` and compares it with `irl_sft_loss`.
#
# **Exercise 2.** Write `inverse_soft_bellman(q, transitions, discount)`: the reward of which
# `q [S, A]` is the soft-optimal Q (temperature 1). The check applies it to the gridworld.

# %% tags=["exercise"]
def iq_alpha(lam):
    raise NotImplementedError("Exercise 1: your code here")


def irl_lambda(alpha):
    raise NotImplementedError("Exercise 1: your code here")


def inverse_soft_bellman(q, transitions, discount):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s08_inverse_soft_q_lm import inverse_soft_bellman, iq_alpha, irl_lambda  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    for lam in [0.05, 2.0]:
        assert abs(irl_lambda(iq_alpha(lam)) - lam) < 1e-12
        iq = losses.iq_learn_chi2_loss(logits, demonstrations, mask, alpha=iq_alpha(lam), discount=discount)
        irl = losses.irl_sft_loss(logits, demonstrations, mask, lam=lam, discount=discount)
        assert float(jnp.max(jnp.abs(iq - irl))) < 1e-4
    assert np.abs(inverse_soft_bellman(q_soft, mdp.transitions, mdp.discount) - true_reward).max() < 1e-9
    print("exercise solutions check out")

# %%
load = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"  # the machine may be shared
print(f"wall time: {time.perf_counter() - START:.1f} s, CPU time {time.process_time():.1f} s (SMOKE={SMOKE}; {load})")
