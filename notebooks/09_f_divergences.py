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
# # 9. f-divergences: the f-softargmax, sparse policies and Fenchel-Young losses
#
# Every greedy step in this course so far was a softmax: the maximiser of
# $\langle p, q\rangle - t\,\mathrm{KL}(p\,\|\,r)$ over the simplex. Roulet, Liu, Vieillard,
# Sander and Blondel (2025, arXiv 2501.18537) replace the KL by any f-divergence
# $D_f(p\,\|\,r) = \sum_j r_j f(p_j / r_j)$ ($f$ convex, $f(1) = 0$):
# $$\text{f-softargmax}(x; r) = \arg\max_{p \in \Delta} \langle p, x\rangle - D_f(p\,\|\,r),
# \qquad \Omega^*(x) = \max_{p \in \Delta} \langle p, x\rangle - D_f(p\,\|\,r),$$
# with $x = q / t$ for a temperature $t$. This notebook derives the solution, checks the lab's
# solver (`mdvi.f_softargmax`, the one behind MDVI, M-DQN and the LM losses) against independent
# root finding, shows when the output is **sparse**, derives the margin of the Fenchel-Young
# losses built on it, and runs sparse (Tsallis) value iteration on a garnet.

# %%
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy import optimize

from envs.tabular import garnet
from experiments.plotting import pyplot
from mdvi import Regularization
from mdvi import f_softargmax as fs
from mdvi import tabular as solvers
from mdvi.divergences import get_divergence
from mdvi.f_divergences import AlphaDivergence, KullbackLeibler
from mdvi.fenchel_young import fenchel_young_loss

START = time.perf_counter()
plt = pyplot()
jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The solution: a threshold on the inverse derivative
#
# > **Proposition.** Let $g = (f')^{-1}$, extended by $g(s) = 0$ for $s \le f'(0^+)$. Then
# > $p_j = r_j\, g(x_j - \tau)$, where $\tau$ is the unique root of
# > $\varphi(\tau) = \sum_j r_j\, g(x_j - \tau) = 1$.
#
# *Derivation.* The Lagrangian of $\max_p \langle p, x\rangle - \sum_j r_j f(p_j/r_j)$ with
# multiplier $\tau$ for $\sum_j p_j = 1$ and $\mu_j \ge 0$ for $p_j \ge 0$ is stationary when
# $x_j - f'(p_j / r_j) - \tau + \mu_j / r_j = 0$. Where $p_j > 0$, $\mu_j = 0$ and
# $p_j = r_j g(x_j - \tau)$; where $p_j = 0$, $x_j - \tau = f'(0^+) - \mu_j/r_j \le f'(0^+)$,
# which is $g(x_j - \tau) = 0$ by the extension. $g$ is non-decreasing, so $\varphi$ is
# non-increasing and the normalisation picks one $\tau$.
#
# Two consequences. **KL** ($f(u) = u\log u$, $f'(u) = \log u + 1$, $g(s) = e^{s-1}$) gives
# $p \propto r\,e^{x}$: the softmax of $x + \log r$. **Sparsity**: if $f'(0^+) > -\infty$, entries
# with $x_j \le \tau + f'(0^+)$ get exactly zero mass. For the alpha family
# $f(u) = \frac{u^\alpha - 1 - \alpha(u-1)}{\alpha(\alpha-1)}$, $f'(u) = \frac{u^{\alpha-1}-1}{\alpha-1}$ and
# $f'(0^+) = -\frac{1}{\alpha-1}$ is finite for every $\alpha > 1$:
# $g(s) = [1 + (\alpha-1)s]_+^{1/(\alpha-1)}$. At the unit reference $\alpha = 2$ is sparsemax
# and $\alpha = 1.5$ is 1.5-entmax.
#
# The check below solves $\varphi(\tau) = 1$ with scipy's `brentq`, using $g$ written out here by
# hand, and compares with the lab's solver for KL, alpha = 1.5, 2, 3 and chi-squared
# ($f(u) = (u-1)^2$, $g(s) = [1 + s/2]_+$), on logits with a random reference that excludes some
# actions ($\log r = -\infty$).

# %%
def g_by_hand(name, s):
    if name == "kl":
        return np.exp(s - 1.0)
    if name == "chi2":
        return np.maximum(1.0 + s / 2.0, 0.0)
    alpha = float(name.split(":")[1])
    return np.maximum(1.0 + (alpha - 1.0) * s, 0.0) ** (1.0 / (alpha - 1.0))


def f_softargmax_by_brentq(name, x, log_r):
    """``p_j = r_j g(x_j - tau)`` with ``sum_j p_j = 1``, by scipy's root finder on ``tau``."""
    support = np.isfinite(log_r)
    r, xs = np.exp(log_r[support]), x[support]

    def excess(tau):
        return np.sum(r * g_by_hand(name, xs - tau)) - 1.0

    lo, hi = xs.max() - 50.0, xs.max() + 50.0  # phi(lo) > 1 > phi(hi) for these logits
    tau = optimize.brentq(excess, lo, hi, xtol=1e-14, rtol=1e-15)
    p = np.zeros_like(x)
    p[support] = r * g_by_hand(name, xs - tau)
    return p


NAMES = ["kl", "alpha:1.5", "alpha:2", "alpha:3", "chi2"]
rows, actions = (4, 8) if SMOKE else (16, 12)
x = rng.normal(size=(rows, actions)) * 2.0
log_r = np.log(rng.uniform(0.2, 1.0, size=(rows, actions)))
log_r[rng.uniform(size=(rows, actions)) < 0.2] = -np.inf
log_r[:, 0] = np.log(0.5)  # a non-empty support
for name in NAMES:
    div = get_divergence(name)
    ours = np.exp(np.asarray(div.greedy_log_policy(jnp.asarray(x), 1.0, jnp.asarray(log_r))))
    independent = np.stack([f_softargmax_by_brentq(name, x[i], log_r[i]) for i in range(rows)])
    assert np.allclose(ours, independent, atol=1e-10), name
    assert np.all(ours[np.isinf(log_r)] == 0.0) and np.allclose(ours.sum(-1), 1.0, atol=1e-12)
    if name != "kl":  # alpha > 1 and chi-squared: f'(0+) is finite
        assert np.array_equal(ours == 0, independent == 0), name  # the same exact zeros
    print(f"{name:>10}: |lab - brentq| <= {np.abs(ours - independent).max():.1e}, "
          f"mean support {np.mean(np.sum(ours > 0, -1)):.2f} of {np.mean(np.sum(np.isfinite(log_r), -1)):.2f}")  # fmt: skip
softmax = np.asarray(jax.nn.softmax(jnp.asarray(x + log_r), axis=-1))
kl_policy = np.exp(np.asarray(get_divergence("kl").greedy_log_policy(jnp.asarray(x), 1.0, jnp.asarray(log_r))))
assert np.allclose(kl_policy, softmax, atol=1e-12)

# %% [markdown]
# The figure shows one row of logits under the unit reference: the softmax spreads mass over
# every action, alpha = 1.5 and 2 cut the tail to exact zeros. On the right, the support size
# of the alpha f-softargmax as alpha grows from 1 (the KL limit), at three temperatures.

# %%
z = np.sort(rng.normal(size=10) * 1.5)[::-1]
unit = jnp.zeros(10)
alphas = np.linspace(1.02, 3.0, 6 if SMOKE else 40)
temperatures = [0.3, 1.0, 3.0]


def support_size(div, t):
    return int(np.sum(np.exp(np.asarray(div.greedy_log_policy(jnp.asarray(z), t, unit))) > 0))


fig, (ax_bars, ax_support) = plt.subplots(1, 2, figsize=(10, 3.4))
bar_labels = [("kl", "KL (softmax)"), ("alpha:1.5", r"$\alpha$ = 1.5 (entmax)"), ("alpha:2", r"$\alpha$ = 2 (sparsemax)")]
for k, (name, label) in enumerate(bar_labels):
    p = np.exp(np.asarray(get_divergence(name).greedy_log_policy(jnp.asarray(z), 1.0, unit)))
    ax_bars.bar(np.arange(10) + (k - 1) * 0.27, p, 0.27, label=label)
ax_bars.set_xlabel("action (logits in decreasing order)")
ax_bars.set_ylabel("probability")
ax_bars.legend(fontsize=8)
for t in temperatures:
    sizes = [support_size(AlphaDivergence(float(a)), t) for a in alphas]
    assert np.all(np.diff(sizes) <= 0), sizes  # exact zeros for every alpha: the support never grows with alpha
    ax_support.plot(alphas, sizes, marker=".", label=f"t = {t:g}")
ax_support.set_xlabel(r"$\alpha$")
ax_support.set_ylabel("support size (of 10)")
ax_support.legend(fontsize=8)
plt.show()
sizes_by_t = {t: support_size(AlphaDivergence(2.0), t) for t in temperatures}
assert sizes_by_t[0.3] <= sizes_by_t[1.0] <= sizes_by_t[3.0], sizes_by_t  # a higher temperature keeps more actions

# %% [markdown]
# **What to notice.** The support shrinks as alpha grows and as the temperature falls: the zero
# line $x_j \le \tau + f'(0^+) = \tau - \frac{1}{\alpha - 1}$ moves up with alpha, and a lower
# temperature stretches the logits $x = q/t$ past it. Near alpha = 1 every action keeps mass
# (the KL limit).

# %% [markdown]
# ## 2. A bracket for the threshold, whatever the logits' spread
#
# > **Proposition.** Let $m$ be an index of the largest score on the support $S$ ($k = |S|$
# > actions, $r_{\max} = \max_S r_j$). Then $\tau_{lo} = x_m - f'(1/r_m)$ has $\varphi(\tau_{lo}) \ge 1$
# > and $\tau_{hi} = x_m - f'(1/(k\,r_{\max}))$ has $\varphi(\tau_{hi}) \le 1$.
#
# *Proof.* At $\tau_{lo}$ the term of $m$ alone is $r_m g(f'(1/r_m)) = 1$. At $\tau_{hi}$ every
# $x_j - \tau_{hi} \le f'(1/(k r_{\max}))$, so each term is at most $r_j/(k r_{\max}) \le 1/k$.
# The width $W = f'(1/r_m) - f'(1/(k r_{\max}))$ does not involve the scores: bisection to an
# accuracy $\varepsilon$ takes $n = \lceil\log_2(W/\varepsilon)\rceil$ halvings for any logits.
# At the unit reference with $k = 32000$ (a vocabulary), $W = \log k$ for KL and
# $W = 2(1 - k^{-1/2})$ for alpha = 1.5.

# %%
for name in NAMES:
    div = KullbackLeibler() if name == "kl" else get_divergence(name)  # the class that carries f, f', g
    for spread in (1.0, 1e3):
        scores = rng.normal(size=(rows, actions)) * spread
        on_support = np.where(np.isfinite(log_r), scores, -np.inf)
        shifted = jnp.asarray(on_support - on_support.max(-1, keepdims=True))  # top score 0, -inf off S
        tau_lo, tau_hi = fs.bisection_bracket(div, shifted, jnp.asarray(log_r))

        phi_lo, phi_hi = (np.sum(np.exp(log_r) * g_by_hand(name, np.asarray(shifted - tau)), -1) for tau in (tau_lo, tau_hi))
        assert np.all(phi_lo >= 1 - 1e-12) and np.all(phi_hi <= 1 + 1e-12), name
k = 32000
for name, width in [("KL", math.log(k)), ("alpha = 1.5", 2 * (1 - k**-0.5))]:
    n32, n64 = (math.ceil(math.log2(width / eps)) for eps in (1e-6, 1e-12))
    assert n32 == int(fs.bisection_iterations(width, np.float32)) and n64 == int(fs.bisection_iterations(width, np.float64))
    print(f"{name}: W = {width:.4f}, {n32} halvings for 1e-6 (float32), {n64} for 1e-12 (float64)")

# %% [markdown]
# ## 3. Fenchel-Young losses and their margin
#
# Blondel, Martins and Niculae (2020, "Learning with Fenchel-Young losses") build a loss from any
# regularizer $\Omega$: $L(\theta; y) = \Omega^*(\theta) + \Omega(y) - \langle\theta, y\rangle \ge 0$
# (Fenchel-Young inequality), zero exactly when $y$ is the regularized prediction, with gradient
# $\nabla_\theta L = \hat p(\theta) - y$ (Danskin). With $\Omega = \mathrm{KL}(\cdot\,\|\,\text{uniform})$
# and a label $y = e_c$ it is the cross-entropy.
#
# > **Margin.** For the alpha divergence at the unit reference and a label $c$, $L(\theta; e_c) = 0$
# > if and only if $\theta_c \ge \theta_j + \frac{1}{\alpha - 1}$ for every $j \ne c$.
#
# *Derivation.* $L = 0$ iff the f-softargmax is $e_c$. With $p = e_c$ the threshold satisfies
# $g(\theta_c - \tau) = 1$, i.e. $\tau = \theta_c - f'(1) = \theta_c$, and every other entry must
# get no mass: $\theta_j - \theta_c \le f'(0^+) = -\frac{1}{\alpha-1}$. The cross-entropy
# ($\alpha \to 1$) has no margin: it is positive for every finite $\theta$.

# %%
labels = rng.integers(0, actions, size=rows)
uniform = jnp.full((rows, actions), -math.log(actions))
logits = jnp.asarray(x)
ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels))
assert np.allclose(fenchel_young_loss(logits, jnp.asarray(labels), "kl", log_ref=uniform), ce, atol=1e-12)
for name in ["kl", "alpha:1.5", "alpha:2"]:
    grad = jax.jit(jax.grad(lambda th, name=name: jnp.sum(fenchel_young_loss(th, jnp.asarray(labels), name))))(logits)
    p = jnp.exp(get_divergence(name).greedy_log_policy(logits, 1.0, jnp.zeros_like(logits)))
    assert np.allclose(grad, p - jax.nn.one_hot(labels, actions), atol=1e-10), name

margins = np.linspace(0.0, 4.0, 41 if SMOKE else 161)
curves = {}
for name in ["kl", "alpha:1.5", "alpha:2"]:
    theta = jnp.asarray(np.stack([np.r_[m, np.zeros(4)] for m in margins]))  # label 0 ahead by m
    curves[name] = np.asarray(jax.jit(lambda th, name=name: fenchel_young_loss(th, jnp.zeros(len(margins), int), name))(theta))
for alpha, name in [(1.5, "alpha:1.5"), (2.0, "alpha:2")]:
    margin = 1.0 / (alpha - 1.0)
    assert np.all(curves[name][margins >= margin] == 0.0) and np.all(curves[name][margins < margin - 1e-9] > 0.0), name
assert np.all(curves["kl"] > 0)

fig, ax = plt.subplots(figsize=(6, 3.2))
for name, label in [("kl", "cross-entropy (KL)"), ("alpha:1.5", r"$\alpha$ = 1.5"), ("alpha:2", r"$\alpha$ = 2")]:
    ax.plot(margins, curves[name], label=label)
for margin in (1.0, 2.0):
    ax.axvline(margin, color="k", lw=0.6, ls=":")
ax.set_xlabel(r"label margin $\theta_c - \max_{j \neq c}\theta_j$ (5 classes)")
ax.set_ylabel("loss")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** The sparse losses stop pushing once the label wins by $1/(\alpha-1)$
# (1 for sparsemax, 2 for 1.5-entmax, dotted lines); the cross-entropy keeps pushing the logits
# apart forever. That is the mechanism behind `mdvi-lab fdiv`: a model trained with a sparse loss
# can put exactly zero probability on tokens, and sample fewer tokens the data never contains.

# %% [markdown]
# ## 4. Sparse value iteration
#
# Replacing the KL of the greedy step by the alpha divergence (unit reference, temperature $t$)
# in value iteration gives Tsallis-regularized VI:
# $q_{k+1} = r + \gamma P\,\Omega^*_t(q_k)$, $\pi_k = $ f-softargmax$(q_k/t)$. $\Omega^*_t$ is a
# $\gamma$-contraction like the soft value, and its fixed point is a **sparse** optimal policy:
# actions far enough below the best get probability exactly zero, while near-ties share the mass.
# The lab runs it with `mdvi.tabular.exact_mdvi(..., divergence="alpha:2")` (MDVI's KL weight 0,
# $\beta = 1/t$; the general recursion of the f-regularized greedy step).

# %%
mdp = garnet(10 if SMOKE else 30, 5, 3, discount=0.9, seed=1)
model = mdp.model()
v_star = solvers.optimal_values(model).v
iterations = 250  # 0.9^250 ~ 4e-12: the fixed point to 1e-8
sweep = [0.01, 0.1, 1.0] if SMOKE else [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
support, gaps = {}, {}
VI_NAMES = ["kl", "alpha:2"] if SMOKE else ["kl", "alpha:1.5", "alpha:2"]  # one compilation each
for name in VI_NAMES:
    for t in sweep:
        reg = Regularization.from_alpha_beta(0.0, 1.0 / t)
        run = solvers.exact_mdvi(model, reg, iterations, v_star=v_star, divergence=name)
        policy = np.exp(np.asarray(solvers.mdvi_policy(run.state, reg)))
        support[name, t] = float(np.mean(np.sum(policy > 0, -1)))
        gaps[name, t] = float(np.asarray(run.gap)[-1])
        assert np.allclose(policy.sum(-1), 1.0, atol=1e-10)
        after = solvers.exact_mdvi_step(model, reg, run.state)  # a fixed point
        assert np.allclose(np.asarray(after.q), np.asarray(run.state.q), atol=1e-8), (name, t)
for name in VI_NAMES:
    print(f"{name:>10}: mean support " + ", ".join(f"{support[name, t]:.2f} (t={t:g})" for t in sweep))
assert all(support["kl", t] == 5 for t in sweep)  # the softmax never drops an action
assert support["alpha:2", sweep[0]] < 2 and support["alpha:2", sweep[-1]] > support["alpha:2", sweep[0]]
assert SMOKE or all(support["alpha:2", t] <= support["alpha:1.5", t] <= 5 for t in sweep)

fig, (ax_s, ax_g) = plt.subplots(1, 2, figsize=(10, 3.4))
for name, label in [("kl", "KL"), ("alpha:1.5", r"$\alpha$ = 1.5"), ("alpha:2", r"$\alpha$ = 2")]:
    if name not in VI_NAMES:
        continue
    ax_s.plot(sweep, [support[name, t] for t in sweep], marker="o", label=label)
    ax_g.plot(sweep, [gaps[name, t] for t in sweep], marker="o", label=label)
ax_s.set_xscale("log")
ax_s.set_xlabel("temperature t")
ax_s.set_ylabel("mean support of the policy (of 5)")
ax_g.set_xscale("log")
ax_g.set_yscale("log")
ax_g.set_xlabel("temperature t")
ax_g.set_ylabel(r"$\|V^\star - V^{\pi}\|_\infty$ at the fixed point")
ax_s.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# **What to notice.** At the same temperature the sparse policies keep only the actions that
# matter (about one per state at small $t$), where the softmax keeps all five with positive
# probability. The price of regularization, the gap to the optimal value, falls with $t$ for all
# three; for the alpha divergences it reaches zero for small enough $t$ (the policy is then the
# greedy one exactly, a single action per state, so the gap is 0 and absent from the log axis),
# while the softmax's gap only shrinks like $t \log A / (1 - \gamma)$ (notebook 1).

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `sparsemax_by_sorting(z)` for one row $z$: sort $z$ in decreasing
# order, find the largest $k$ with $1 + k z_{(k)} > \sum_{i \le k} z_{(i)}$, set
# $\tau = (\sum_{i \le k} z_{(i)} - 1)/k$ and return $[z - \tau]_+$ (Martins & Astudillo 2016).
# The check compares it with the alpha = 2 f-softargmax at the unit reference.
#
# **Exercise 2.** Write `entmax_margin(alpha)`, the margin of section 3, and check it holds for
# alpha = 1.25 and 3 too (where the lab solves by bisection, not by sorting).

# %% tags=["exercise"]
def sparsemax_by_sorting(z):
    raise NotImplementedError("Exercise 1: your code here")


def entmax_margin(alpha):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s09_f_divergences import entmax_margin, sparsemax_by_sorting  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    expected = np.exp(np.asarray(AlphaDivergence(2.0).greedy_log_policy(jnp.asarray(x), 1.0, jnp.zeros_like(x))))
    for row, p_row in zip(np.asarray(x), expected):
        assert np.allclose(sparsemax_by_sorting(row), p_row, atol=1e-12)
    for alpha in (1.25, 1.5, 2.0, 3.0):
        m = entmax_margin(alpha)
        theta = jnp.asarray([[m + 1e-3, 0.0, 0.0], [0.8 * m, 0.0, 0.0]])  # just past the margin, 20% short of it
        above, below = np.asarray(fenchel_young_loss(theta, jnp.zeros(2, int), AlphaDivergence(alpha)))
        assert above <= 1e-12 and below > 1e-8, (alpha, above, below)
    print("exercise solutions check out")

# %%
print(f"wall time: {time.perf_counter() - START:.1f} s (SMOKE={SMOKE})")
