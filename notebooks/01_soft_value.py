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
# # 1. The soft value and the smooth Bellman operator
#
# Entropy-regularized RL replaces the hard maximum of the Bellman operator by a *soft*
# maximum. This notebook derives the four facts everything later in the course relies on and
# checks each one numerically, with an `assert`, against the lab's own functions
# (`mdvi.soft_value`, `mdvi.greedy_log_policy`, `mdvi.tabular`):
#
# 1. the soft value is the expected maximum of Gumbel-perturbed values (Monte Carlo);
# 2. it is the Fenchel conjugate of the KL divergence, attained at the softmax policy;
# 3. regularized policy evaluation is a linear solve, and its value at the soft-optimal policy
#    is the fixed point of soft value iteration;
# 4. acting with the soft-greedy policy loses at most $\tau \log A / (1-\gamma)$.
#
# `SMOKE=1` shrinks the problem sizes; `SOLUTIONS=1` runs the exercises' solutions.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.tabular import chain, gridworld
from experiments.plotting import pyplot
from mdvi import greedy_log_policy, kl_divergence, soft_value
from mdvi import tabular as solvers

START = time.perf_counter()
plt = pyplot()  # the lab's seaborn style; a Jupyter kernel keeps its inline backend
jax.config.update("jax_enable_x64", True)  # float64: the checks below are tight
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The soft value is an expected maximum
#
# For action values $q \in \mathbb{R}^A$ and a temperature $\tau > 0$ the **soft value** is
# $$V_\tau(q) = \tau \log \sum_a \exp(q_a / \tau).$$
#
# > **Lemma (Gumbel max).** Let $G_1, \dots, G_A$ be i.i.d. standard Gumbel. Then
# > $\mathbb{E}\,\max_a (q_a + \tau G_a) = V_\tau(q) + \tau\gamma_E$ (with $\gamma_E$ the
# > Euler-Mascheroni constant), and $\arg\max_a (q_a + \tau G_a)$ is distributed as
# > $\mathrm{softmax}(q/\tau)$.
#
# *Derivation.* $P(\max_a (q_a + \tau G_a) \le x) = \prod_a \exp(-e^{-(x - q_a)/\tau})
# = \exp(-e^{-(x - V_\tau(q))/\tau})$: the maximum is itself Gumbel with location
# $V_\tau(q)$ and scale $\tau$, whose mean is location $+\ \tau\gamma_E$.
#
# We check the lemma by Monte Carlo. The sample mean of $n$ draws has standard error
# $\tau\pi/\sqrt{6n}$ (the Gumbel standard deviation is $\pi/\sqrt 6$); we assert agreement
# within 5 standard errors.

# %%
q = np.array([1.0, 2.0, 1.5, -0.5])
n_draws = 20_000 if SMOKE else 400_000
for tau in [0.1, 0.5, 2.0]:
    gumbel = rng.gumbel(size=(n_draws, q.size))
    perturbed = q + tau * gumbel
    mc_mean = perturbed.max(1).mean() - tau * np.euler_gamma
    exact = float(soft_value(q, tau))
    stderr = tau * np.pi / np.sqrt(6 * n_draws)
    freq = np.bincount(perturbed.argmax(1), minlength=q.size) / n_draws
    softmax = np.exp(np.asarray(greedy_log_policy(q, tau)))
    print(f"tau={tau}: Monte Carlo {mc_mean:.4f}  soft_value {exact:.4f}  (5 s.e. = {5 * stderr:.4f})")
    assert abs(mc_mean - exact) < 5 * stderr, (tau, mc_mean, exact)
    # argmax frequencies: binomial standard error sqrt(p (1 - p) / n) per action
    assert np.all(np.abs(freq - softmax) < 5 * np.sqrt(softmax * (1 - softmax) / n_draws) + 1e-12)

# %% [markdown]
# ## 2. The Fenchel identity
#
# > **Lemma (conjugate of the KL).** For a reference distribution $\mu$ over actions,
# > $$\max_{p \in \Delta_A} \langle p, q\rangle - \tau\,\mathrm{KL}(p\,\|\,\mu)
# >   = \tau \log \sum_a \mu(a) e^{q_a/\tau},$$
# > attained uniquely at $p^\star(a) \propto \mu(a) e^{q_a/\tau}$.
#
# *Derivation.* Write $\langle p, q\rangle - \tau \mathrm{KL}(p\|\mu)
# = -\tau \mathrm{KL}(p \| p^\star) + \tau \log Z$ with $Z = \sum_a \mu(a) e^{q_a/\tau}$: expand
# $\log p^\star(a) = \log \mu(a) + q_a/\tau - \log Z$. The KL is $\ge 0$ and vanishes only at
# $p = p^\star$. With $\mu$ the counting measure (all ones) the KL becomes minus the entropy,
# and we recover $V_\tau$ of section 1.
#
# Below: the identity at $p^\star$ (to 1e-12), and 200 random $p$ all falling below it.

# %%
tau = 0.3
mu = rng.dirichlet(np.ones(q.size))
log_p_star = greedy_log_policy(q, tau, mu)
lhs = float(soft_value(q, tau, mu))
rhs = float(jnp.exp(log_p_star) @ q - tau * kl_divergence(log_p_star, jnp.log(mu)))
print(f"soft value {lhs:.12f}  <p*, q> - tau KL(p*||mu) {rhs:.12f}")
assert abs(lhs - rhs) < 1e-12, (lhs, rhs)

others = rng.dirichlet(np.ones(q.size), size=200)
objective = others @ q - tau * np.asarray(kl_divergence(jnp.log(others), jnp.broadcast_to(jnp.log(mu), others.shape)))
assert np.all(objective <= lhs + 1e-12), objective.max() - lhs
# the gap is exactly tau KL(p || p*), the derivation's first line
kl_to_optimum = kl_divergence(jnp.log(others), jnp.broadcast_to(log_p_star, others.shape))
assert np.allclose(lhs - objective, tau * np.asarray(kl_to_optimum), atol=1e-12)

taus = np.geomspace(1e-2, 10, 40)
fig, ax = plt.subplots(figsize=(6, 3.4))
ax.semilogx(taus, [float(soft_value(q, t)) for t in taus], label=r"$V_\tau(q)$ (counting measure)")
ax.semilogx(taus, [float(soft_value(q, t, mu)) for t in taus], label=r"$V_\tau(q; \mu)$ ($\mu$ a distribution)")
ax.axhline(q.max(), color="k", ls=":", label=r"$\max_a q_a$")
ax.axhline(mu @ q, color="gray", ls="--", label=r"$\langle \mu, q\rangle$")
ax.set_xlabel(r"temperature $\tau$")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** Both curves tend to $\max_a q_a$ as $\tau \to 0$. With the counting
# measure the soft value grows without bound (it lies in $[\max q, \max q + \tau\log A]$:
# entropy is a bonus); with a probability $\mu$ it *falls* to the $\mu$-average
# $\langle\mu, q\rangle$ as $\tau \to \infty$, because a large KL penalty pins $p$ to $\mu$.
# This second regime is the one MDVI (notebook 2) lives in.

# %% [markdown]
# ## 3. Regularized policy evaluation is a linear solve
#
# The **smooth Bellman optimality operator** is $(T_\tau q)(s,a) = r(s,a) + \gamma \sum_{s'}
# P(s'|s,a)\, V_\tau(q(s', \cdot))$; it is a $\gamma$-contraction in the sup norm (the soft
# value is 1-Lipschitz, because its gradient is a probability vector), so soft value
# iteration converges to a unique $q_\tau^\star$, with soft-greedy policy
# $\pi_\tau = \mathrm{softmax}(q^\star_\tau/\tau)$.
#
# For any *fixed* policy $\pi$ the entropy-regularized value
# $V^\pi_\tau = \mathbb{E}^\pi \sum_t \gamma^t (r(s_t,a_t) - \tau \log \pi(a_t|s_t))$ solves
# the linear Bellman equation
# $$(I - \gamma P_\pi) V^\pi_\tau = r_\pi - \tau\,\textstyle\sum_a \pi(a|\cdot)\log\pi(a|\cdot),$$
# i.e. ordinary policy evaluation with the reward $r - \tau\log\pi$. At $\pi_\tau$ the
# Fenchel identity gives $\sum_a \pi_\tau(a|s)\,(q^\star_\tau(s,a) - \tau\log\pi_\tau(a|s)) =
# V_\tau(q^\star_\tau(s,\cdot))$, so the linear solve must return soft value iteration's fixed point.

# %%
mdp = chain(6 if SMOKE else 10, slip=0.2, discount=0.9)
model = mdp.model()
for tau in [0.05, 0.5]:
    soft = solvers.soft_value_iteration(model, tau, tolerance=1e-12)
    policy = jnp.exp(soft.log_policy)
    regularized_reward = model.reward - tau * soft.log_policy
    v_linear = solvers.policy_evaluation(model._replace(reward=regularized_reward), policy)
    err = float(jnp.max(jnp.abs(v_linear - soft.v)))
    print(f"tau={tau}: {int(soft.iterations)} soft-VI sweeps, |linear solve - soft VI| = {err:.2e}")
    # soft VI stops at a residual of 1e-12; its distance to the fixed point is <= residual / (1 - gamma)
    assert err < 1e-9, err

# %% [markdown]
# ## 4. The price of acting softly
#
# > **Lemma (performance loss).** With $V^\star$ the unregularized optimum and
# > $V^{\pi_\tau}$ the *unregularized* value of the soft-greedy policy,
# > $$0 \le V^\star - V^{\pi_\tau} \le \frac{\tau \log A}{1-\gamma}.$$
#
# *Derivation.* $V^{\pi_\tau} = V^{\pi_\tau}_\tau - \tau\,\mathbb{E}\sum_t\gamma^t
# \mathcal{H}(\pi_\tau(\cdot|s_t)) \ge V_\tau^\star - \tau\log A/(1-\gamma)$, since the
# entropy is at most $\log A$; and $V^\star_\tau \ge V^{\pi^\star}_\tau \ge V^\star$ because
# the entropy bonus is non-negative.
#
# We measure the loss on a gridworld (reward 1 per step in the bottom-right goal) over a
# sweep of $\tau$, each $V^{\pi_\tau}$ by an exact linear solve.

# %%
size = 4 if SMOKE else 6
grid = gridworld(size, slip=0.1, discount=0.9)
grid_model = grid.model()
optimum = solvers.optimal_values(grid_model)
sweep = np.geomspace(1e-3, 3.0, 8 if SMOKE else 16)
bound = sweep * np.log(grid.num_actions) / (1 - grid.discount)
losses, solutions = [], {}
for tau in sweep:
    soft = solvers.soft_value_iteration(grid_model, tau, tolerance=1e-10)
    v_pi = solvers.policy_evaluation(grid_model, jnp.exp(soft.log_policy))
    losses.append(float(jnp.max(optimum.v - v_pi)))
    solutions[tau] = soft
losses = np.array(losses)
print(np.round(losses, 4))
assert np.all(losses >= -1e-9) and np.all(losses <= bound + 1e-9), (losses, bound)

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.loglog(sweep, np.maximum(losses, 1e-12), "o-", label=r"$\max_s V^\star(s) - V^{\pi_\tau}(s)$")
ax.loglog(sweep, bound, "--", label=r"bound $\tau\log A/(1-\gamma)$")
ax.set_xlabel(r"$\tau$")
ax.legend()
plt.show()

# %% [markdown]
# **What to notice.** The bound is linear in $\tau$ and is never crossed. At small $\tau$ the
# measured loss falls much faster than linearly: once $\tau$ is small against the action gaps
# of $Q^\star$, the softmax puts exponentially small mass $\approx e^{-\text{gap}/\tau}$ on
# suboptimal actions. The bound is tight only when all actions look alike, as they do at large $\tau$.

# %%
picks = [sweep[0], sweep[len(sweep) // 2], sweep[-1]]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
rows, cols = np.divmod(np.arange(size * size), size)
for ax, tau in zip(axes, picks):
    soft = solutions[tau]
    pi = np.exp(np.asarray(soft.log_policy))  # actions: up, right, down, left
    v_pi = np.asarray(solvers.policy_evaluation(grid_model, jnp.asarray(pi)))
    image = ax.imshow(v_pi.reshape(size, size), cmap="viridis")
    ax.quiver(cols, rows, pi[:, 1] - pi[:, 3], pi[:, 0] - pi[:, 2], color="white", scale=size * 1.6)
    ax.set_title(rf"$\tau$={tau:.3g}: $V^{{\pi_\tau}}$, mean move")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# **What to notice.** Arrows are the policy's expected move. At small $\tau$ they point
# straight to the goal (bottom right) and the value map is the optimal one; at large $\tau$
# the arrows shrink (the policy is close to uniform, the moves cancel) and the values drop
# everywhere except near the goal, where even a random walk collects reward. The colour scales
# differ: compare the colour bars.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Show that $\max_a q_a \le V_\tau(q) \le \max_a q_a + \tau\log A$ and write
# `soft_value_bounds(q, tau)` returning both bounds; the check runs it on random $q$.
#
# **Exercise 2.** Show that $\nabla_q V_\tau(q) = \mathrm{softmax}(q/\tau)$ (differentiate
# $\tau\log\sum_a e^{q_a/\tau}$). Write `soft_value_gradient(q, tau)` computing the gradient
# *without* calling a softmax (e.g. by finite differences of `soft_value`).

# %% tags=["exercise"]
def soft_value_bounds(q, tau):
    raise NotImplementedError("Exercise 1: your code here")


def soft_value_gradient(q, tau):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s01_soft_value import soft_value_bounds, soft_value_gradient  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    qs = rng.normal(size=(50, 5)) * 3
    for t in [0.01, 1.0, 10.0]:
        low, high = soft_value_bounds(qs, t)
        value = np.asarray(soft_value(qs, t))
        assert np.all(low <= value + 1e-12) and np.all(value <= high + 1e-12)
    grad = np.asarray(soft_value_gradient(q, 0.7))
    assert np.allclose(grad, np.exp(np.asarray(greedy_log_policy(q, 0.7))), atol=1e-7), grad
    print("exercise solutions check out")

# %%
print(f"wall time: {time.perf_counter() - START:.1f} s (SMOKE={SMOKE})")
