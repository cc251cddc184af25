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
# # 2. MDVI: KL means averaging
#
# Mirror Descent Value Iteration (MDVI; Vieillard et al. 2020, "Leverage the Average";
# Kozuno et al. 2022) regularizes each greedy step by a KL divergence to the previous policy
# and by an entropy bonus:
# $$\pi_{k} = \arg\max_{\pi} \langle \pi, q_k\rangle - \tau\,\mathrm{KL}(\pi\,\|\,\pi_{k-1}) + \kappa\,\mathcal{H}(\pi),
# \qquad q_{k+1} = r + \gamma P\,\big(\langle \pi_k, q_k\rangle - \tau\mathrm{KL}(\pi_k\|\pi_{k-1})
# + \kappa\mathcal H(\pi_k)\big).$$
# This notebook shows, with exact computations and a noisy generative model, that the KL
# term makes the policy depend on an *average* of past $q$-functions, which averages their
# errors. `SMOKE=1` shrinks sizes; `SOLUTIONS=1` runs the exercises' solutions.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.tabular import chain
from experiments.plotting import pyplot
from mdvi import Regularization, mdvi_greedy_step
from mdvi import tabular as solvers
from mdvi.loop import mdvi_init, mdvi_iteration, mdvi_policy

START = time.perf_counter()
plt = pyplot()
jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"

mdp = chain(8 if SMOKE else 12, slip=0.2, discount=0.9)
model = mdp.model()
optimum = solvers.optimal_values(model)
gamma = mdp.discount

# %% [markdown]
# ## 1. The greedy step, in policy form and in sum form
#
# Setting the derivative of $\langle p, q\rangle - \tau\mathrm{KL}(p\|\pi_{k-1}) + \kappa\mathcal H(p)$
# to zero gives $(\tau+\kappa)\log p = q + \tau\log\pi_{k-1} + \text{const}$, i.e.
#
# > **Policy form.** $\pi_k \propto \pi_{k-1}^{\alpha}\, \exp(\beta q_k)$ with
# > $\alpha = \dfrac{\tau}{\tau+\kappa}$, $\beta = \dfrac{1}{\tau+\kappa}$.
#
# Unrolling from a uniform $\pi_0$:
# $\log\pi_k = \beta q_k + \alpha\beta q_{k-1} + \alpha^2\beta q_{k-2} + \dots + \text{const}$, so
#
# > **Theorem (sum form; Vieillard et al. 2020, Thm 1).** $\pi_k = \mathrm{softmax}(\beta s_k)$ with
# > $s_k = \sum_{j\le k} \alpha^{k-j} q_j = q_k + \alpha s_{k-1}$.
#
# With $\kappa = 0$ ($\alpha = 1$) $s_k$ is the plain *sum* of all past $q$'s: the policy is
# the softmax of $k$ times their **average**, at inverse temperature $k\beta$.
#
# `mdvi.tabular` runs the sum form. Below we iterate the policy form with
# `mdvi_greedy_step` on the same $q_k$ and compare, iterate by iterate.

# %%
iterations = 30 if SMOKE else 60
regularization = Regularization.from_kl_entropy(0.2, 0.05)
print(f"alpha = {regularization.alpha:.3f}, beta = {regularization.beta:.3f}")
step = solvers.exact_step(model)
state = mdvi_init(model, regularization)
log_pi = jnp.full(model.reward.shape, -np.log(mdp.num_actions))  # uniform pi_0


@jax.jit
def both_forms(state, log_pi, k):
    state, _ = mdvi_iteration(step, regularization, state, k)  # sum form
    return state, mdvi_greedy_step(state.q, log_pi, regularization)  # policy form


qs, sums, worst = [], [], 0.0
for k in range(iterations):
    state, log_pi = both_forms(state, log_pi, k)
    worst = max(worst, float(jnp.max(jnp.abs(log_pi - mdvi_policy(state, regularization)))))
    qs.append(np.asarray(state.q))
    sums.append(np.asarray(state.s))
print(f"max over {iterations} iterates of |log pi (policy form) - log pi (sum form)| = {worst:.2e}")
assert worst < 1e-9, worst

# %% [markdown]
# A second, independent check: with $\tau = \kappa = 0$ ($\alpha = 0$, $\beta = \infty$) MDVI
# must be value iteration, iterate for iterate (`solvers.value_iteration`, a separate loop).

# %%
vi = solvers.value_iteration(model, iterations)
unregularized = Regularization.from_kl_entropy(0.0, 0.0)
state = mdvi_init(model, unregularized)
vi_step = jax.jit(lambda state, k: mdvi_iteration(step, unregularized, state, k)[0])
vi_err = 0.0
for k in range(iterations):
    state = vi_step(state, k)
    vi_err = max(vi_err, float(jnp.max(jnp.abs(state.q - vi.q[k]))))
print(f"max |q_k (MDVI, tau = kappa = 0) - q_k (value iteration)| = {vi_err:.2e}")
assert vi_err < 1e-12, vi_err

# %% [markdown]
# ## 2. Noisy targets: the 2 x 2 grid
#
# Replace the exact $P v_k$ by the mean of $M = 2$ next states drawn from a generative model,
# so $q_{k+1} = r + \gamma \hat P_k v_k = (\text{exact}) + \epsilon_{k+1}$ with zero-mean
# noise. By the sum form, the KL-regularized policy sees $\sum_j \alpha^{k-j}\epsilon_j$: for
# $\alpha$ near 1 the errors are averaged rather than carried.
#
# > **Bound (Vieillard et al. 2020, Thm 1, $\kappa = 0$).** After $k$ iterations,
# > $\|V^\star - V^{\pi_k}\|_\infty \le \frac{2}{1-\gamma}\big\|\tfrac1k\sum_{j=1}^k \epsilon_j\big\|_\infty + O(1/k)$,
# > against $\frac{2\gamma}{(1-\gamma)^2}\max_j\|\epsilon_j\|_\infty$-type terms for approximate VI.
#
# Four variants, all vmapped over seeds: value iteration ($\tau = \kappa = 0$), KL only,
# entropy only, KL + entropy.

# %%
seeds = 16 if SMOKE else 64
K = 40 if SMOKE else 100
keys = jax.random.split(jax.random.key(0), seeds)
variants = {
    "VI (tau = kappa = 0)": Regularization.from_kl_entropy(0.0, 0.0),
    "KL only (tau = 0.1)": Regularization.from_kl_entropy(0.1, 0.0),
    "entropy only (kappa = 0.01)": Regularization.from_kl_entropy(0.0, 0.01),
    "KL + entropy (0.1, 0.01)": Regularization.from_kl_entropy(0.1, 0.01),
}
alphas = np.linspace(0.0, 1.0, 6 if SMOKE else 11)  # for section 3, run in the same program
all_alpha = [r.alpha for r in variants.values()] + list(alphas)
all_beta = [r.beta for r in variants.values()] + [np.inf] * len(alphas)
stacked = Regularization.from_alpha_beta(jnp.asarray(all_alpha), jnp.asarray(all_beta))
run = jax.vmap(lambda reg: jax.vmap(lambda key: solvers.sampled_mdvi(key, model, reg, K, 2, v_star=optimum.v).gap)(keys))(stacked)
gaps, sweep = np.split(np.asarray(run), [len(variants)])  # [variant or alpha, seed, iteration]

fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True, sharey=True)
steps = np.arange(1, K + 1)
for ax, (name, g) in zip(axes.ravel(), zip(variants, gaps)):
    ax.semilogy(steps, np.median(g, 0), label="median")
    ax.fill_between(steps, np.percentile(g, 10, 0), np.percentile(g, 90, 0), alpha=0.3, label="10-90% of seeds")
    ax.set_title(name, fontsize=10)
for ax in axes[1]:
    ax.set_xlabel("iteration k")
for ax in axes[:, 0]:
    ax.set_ylabel(r"$\|V^\star - V^{\pi_k}\|_\infty$")
axes[0, 0].legend(fontsize=8)
fig.tight_layout()
plt.show()
final = {name: g[:, -10:].mean() for name, g in zip(variants, gaps)}
for name, value in final.items():
    print(f"{name:30s} mean gap over the last 10 iterates: {value:.4f}")

# %% [markdown]
# **What to notice.** Without KL (left column) the gap stops falling at a noise floor set
# by each single iterate's error, and the seed band stays wide. With KL (right column) the
# gap keeps falling as $k$ grows, the $1/k$ averaging of the bound, and the band narrows. A
# small entropy bonus changes little here; it matters for the stability of the step (and for
# function approximation), not for the averaging.
#
# The assertion below compares the KL-only run with VI on the seed mean and requires a 2x
# improvement; the seed-to-seed standard error of each mean is printed so the margin can be judged.

# %%
names = list(variants)
stderr = {n: g[:, -10:].mean(1).std() / np.sqrt(seeds) for n, g in zip(names, gaps)}
print({n: round(float(s), 4) for n, s in stderr.items()})
assert final[names[1]] < 0.5 * final[names[0]], final
assert final[names[3]] < 0.5 * final[names[2]], final

# %% [markdown]
# ## 3. The alpha sweep: bias against noise
#
# Fix $\beta = \infty$ (a hard max over $s_k$) and sweep $\alpha \in [0, 1]$. The sum
# $s_k = \sum_j \alpha^{k-j} q_j$ has an effective memory of $1/(1-\alpha)$ iterations: the
# *noise* of the policy shrinks like $\sqrt{1-\alpha}$, but old (worse) $q$'s keep weight, a
# *bias* that decays only like $\alpha^k$ contraction allows. Kozuno et al. (2022) take
# $\alpha = \gamma$, for which the errors are weighted exactly as the discounting weighs them.

# %%
# (computed with the 2 x 2 grid above, in one vmapped program)
checkpoints = [K // 8, K // 4, K // 2, K]
fig, ax = plt.subplots(figsize=(6, 3.6))
for k in checkpoints:
    ax.plot(alphas, sweep[:, :, k - 1].mean(1), "o-", label=f"k = {k}")
ax.axvline(gamma, color="k", ls=":", label=r"$\alpha = \gamma$")
ax.set_yscale("log")
ax.set_xlabel(r"$\alpha$ (weight of the previous policy)")
ax.set_ylabel(r"mean $\|V^\star - V^{\pi_k}\|_\infty$")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** After 12 iterations no $\alpha$ is good yet. As $k$ grows, $\alpha = 0$
# (sampled VI) stays at its noise floor, set by a single noisy iterate, while the gap at
# $\alpha$ near $\gamma = 0.9$ keeps falling, by two orders of magnitude at $k = 100$.
# $\alpha = 1$ (a plain sum that never forgets) is worse than $\alpha = 0.9$ at every $k$
# shown, and worst relative to it at intermediate $k$: the poor early iterates keep their full
# weight, a bias that only dilutes like $1/k$. That trade-off, noise against bias, is why
# Kozuno et al. take $\alpha = \gamma$.

# %%
end_gap = sweep[:, :, -10:].mean((1, 2))
assert end_gap[-1] < end_gap[0] and end_gap[np.argmin(np.abs(alphas - 0.9))] < end_gap[0], end_gap

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `discounted_sum(qs, alpha)` returning $s_k = \sum_{j\le k}\alpha^{k-j}q_j$
# for every $k$ as the explicit sum (not the recursion); the check compares it with the
# running sums MDVI kept in section 1.
#
# **Exercise 2.** Derive the policy form and write `alpha_beta(tau, kappa)`; the check compares
# it with `Regularization.from_kl_entropy`.

# %% tags=["exercise"]
def discounted_sum(qs, alpha):
    raise NotImplementedError("Exercise 1: your code here")


def alpha_beta(tau, kappa):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s02_mdvi_averaging import alpha_beta, discounted_sum  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    closed = discounted_sum(np.stack(qs), regularization.alpha)
    assert np.allclose(closed, np.stack(sums), rtol=1e-10, atol=1e-10)
    for tau, kappa in [(0.2, 0.05), (1.0, 0.0), (0.0, 3.0)]:
        reg = Regularization.from_kl_entropy(tau, kappa)
        assert np.allclose(alpha_beta(tau, kappa), (reg.alpha, reg.beta), rtol=1e-12)
    print("exercise solutions check out")

# %%
print(f"wall time: {time.perf_counter() - START:.1f} s (SMOKE={SMOKE})")
