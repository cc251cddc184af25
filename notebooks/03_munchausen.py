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
# # 3. Munchausen RL is MDVI
#
# Munchausen DQN (Vieillard, Pietquin & Geist 2020, "Munchausen Reinforcement Learning") adds
# one term to the soft Q-learning target: the agent's own scaled log-policy,
# $$y = r + \alpha_M\,\tau_M \log\pi(a|s) + \gamma \sum_{a'}\pi(a'|s')\big(q(s',a') - \tau_M\log\pi(a'|s')\big),
# \qquad \pi = \mathrm{softmax}(q/\tau_M).$$
# This notebook proves and checks, with the lab's single implementation of that target
# (`mdvi.munchausen_target`, the one M-DQN trains on), that the tabular version is MDVI with
# KL weight $\tau = \alpha_M\tau_M$ and entropy weight $\kappa = (1-\alpha_M)\tau_M$; it then
# shows what the log-policy clip changes, and M-DQN's fixed point on the probe MDP.

# %%
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from envs.probe import TwoStepProbe
from envs.tabular import garnet
from experiments.plotting import pyplot
from mdvi import Regularization, greedy_log_policy, munchausen_target
from mdvi import tabular as solvers
from mdvi.loop import mdvi_init, mdvi_iteration, mdvi_policy

START = time.perf_counter()
plt = pyplot()
jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"

mdp = garnet(10 if SMOKE else 20, 3, 3, discount=0.9, seed=0)
model = mdp.model("dense")
P = model.dense  # [S, A, S]

# %% [markdown]
# ## 1. The equivalence
#
# > **Algorithm (tabular Munchausen VI).** $\pi_k = \mathrm{softmax}(q^M_k/\tau_M)$;
# > $q^M_{k+1}(s,a) = \mathbb{E}_{s'\sim P(\cdot|s,a)}\, y(s, a, s')$ with the target $y$ above at $q = q^M_k$.
#
# > **Theorem (Vieillard et al. 2020b, Thm 1).** Let $q'_k = q^M_k - \alpha_M\tau_M\log\pi_{k-1}$.
# > Then $\pi_k \propto \pi_{k-1}^{\alpha_M}\exp(q'_k/\tau_M)$ and $q'_{k+1} = r + \gamma P\,
# > \big(\langle\pi_k, q'_k\rangle - \alpha_M\tau_M \mathrm{KL}(\pi_k\|\pi_{k-1}) + (1-\alpha_M)\tau_M\mathcal H(\pi_k)\big)$:
# > MDVI with $\alpha = \alpha_M$ and $\beta = 1/\tau_M$.
#
# *Derivation.* $\pi_{k-1}^{\alpha_M}\exp(q'_k/\tau_M) = \pi_{k-1}^{\alpha_M}\,\pi_{k-1}^{-\alpha_M}\exp(q^M_k/\tau_M)
# = \exp(q^M_k/\tau_M)$, so both recursions produce the same policy. For the values, the
# bootstrap term of $y$ is $\langle\pi_k, q^M_k - \tau_M\log\pi_k\rangle = \langle\pi_k, q'_k\rangle
# - \tau_M\langle\pi_k, \log\pi_k - \alpha_M\log\pi_{k-1}\rangle$, which splits into
# $-\alpha_M\tau_M\mathrm{KL}(\pi_k\|\pi_{k-1}) + (1-\alpha_M)\tau_M\mathcal H(\pi_k)$; the
# Munchausen bonus $\alpha_M\tau_M\log\pi_k$ is exactly the term subtracted to turn $q^M_{k+1}$ into $q'_{k+1}$.
#
# `Regularization.from_munchausen(tau_M, alpha_M)` is the lab's conversion. We run both from
# a uniform policy ($q^M_0 = 0$, MDVI's $q_0 = s_0 = 0$) and compare policies iterate by iterate.

# %%
def munchausen_vi_step(q, temperature, munchausen_alpha, log_clip_min):
    """``q_{k+1}(s, a) = E_{s'} y(s, a, s')``: the M-DQN target averaged over the exact ``P``."""
    S, A = q.shape

    def target(s, a, s_next):
        return munchausen_target(q[s], a, model.reward[s, a], model.discount, q[s_next],
                                 temperature, munchausen_alpha, log_clip_min)  # fmt: skip

    y = jax.vmap(jax.vmap(jax.vmap(target, (None, None, 0)), (None, 0, None)), (0, None, None))(
        jnp.arange(S), jnp.arange(A), jnp.arange(S)
    )  # [S, A, S']
    return jnp.sum(P * y, axis=-1)


munchausen_vi_step = jax.jit(munchausen_vi_step)
iterations = 40 if SMOKE else 150
tau_m, alpha_m = 0.3, 0.9
regularization = Regularization.from_munchausen(tau_m, alpha_m)
print(f"KL weight {regularization.kl_weight:.3f}, entropy weight {regularization.entropy_weight:.3f}")
mdvi_step = jax.jit(lambda state, k: mdvi_iteration(solvers.exact_step(model), regularization, state, k)[0])
state, q_m = mdvi_init(model, regularization), jnp.zeros_like(model.reward)
worst = 0.0
for k in range(iterations):
    state = mdvi_step(state, k)
    q_m = munchausen_vi_step(q_m, tau_m, alpha_m, -jnp.inf)  # no clip: the exact equivalence
    worst = max(worst, float(jnp.max(jnp.abs(greedy_log_policy(q_m, tau_m) - mdvi_policy(state, regularization)))))
print(f"max over {iterations} iterates of |log pi (Munchausen VI) - log pi (MDVI)| = {worst:.2e}")
assert worst < 1e-9, worst

# %% [markdown]
# ## 2. The fixed point, in closed form
#
# At a fixed point the KL term vanishes ($\pi_k = \pi_{k-1}$), so $q'$ is the entropy-regularized
# optimum $q^\star_\kappa$ with $\kappa = (1-\alpha_M)\tau_M$, $\pi^\star_\kappa =
# \mathrm{softmax}(q^\star_\kappa/\kappa)$, and
# $$q^M_\infty = q^\star_\kappa + \alpha_M\tau_M \log\pi^\star_\kappa.$$
# We compare the iterated Munchausen VI with this closed form computed by a *different*
# solver (`soft_value_iteration` at temperature $\kappa$). The error after $k$ iterations
# contracts like $\gamma^k$; the tolerance 1e-6 is met after about 150 iterations.

# %%
kappa = (1 - alpha_m) * tau_m
soft = solvers.soft_value_iteration(model, kappa, tolerance=1e-12)
closed_form = soft.q + alpha_m * tau_m * soft.log_policy
q_m = jnp.zeros_like(model.reward)
errors = []
for _ in range(200 if SMOKE else 400):
    q_m = munchausen_vi_step(q_m, tau_m, alpha_m, -jnp.inf)
    errors.append(float(jnp.max(jnp.abs(q_m - closed_form))))
print(f"|q_M - (q*_kappa + alpha tau log pi*_kappa)| after {len(errors)} iterations: {errors[-1]:.2e}")
assert errors[-1] < 1e-6, errors[-1]

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.semilogy(errors, label=r"$\|q^M_k - q^M_\infty\|_\infty$")
ks = np.arange(len(errors))
ax.semilogy(ks, errors[0] * mdp.discount ** ks, "--", label=r"$\gamma^k$ (slope of a contraction)")
ax.set_xlabel("iteration k")
ax.legend()
plt.show()

# %% [markdown]
# **What to notice.** The error follows $\gamma^k$ exactly: for the *values*, Munchausen VI is
# a $\gamma$-contraction whatever $\alpha_M$ (the averaging of notebook 2 acts on the
# policy, through the log-policy term, not on the contraction rate). The curve flattens near
# $10^{-11}$: that is the accuracy of the closed form itself (soft value iteration stopped at a
# residual of $10^{-12}$, i.e. within $10^{-12}/(1-\gamma) = 10^{-11}$ of its fixed point).

# %% [markdown]
# ## 3. What the log-policy clip does
#
# M-DQN clips the bonus, $\alpha_M\,\mathrm{clip}(\tau_M\log\pi(a|s), \ell_0, 0)$ with
# $\ell_0 = -1$, because $\tau_M\log\pi \to -\infty$ for actions the policy abandons
# (under function approximation the targets would be unbounded). Since
# $\tau_M\log\pi(a|s) = q(s,a) - V_{\tau_M}(q(s,\cdot))$, the clip acts on actions that are
# worse than the soft value by more than $|\ell_0|$: actions with a large gap at any
# temperature, and, at large $\tau_M$, every action (the soft value then exceeds the max by up
# to $\tau_M\log A$). Where it acts the equivalence with MDVI is broken. If the unclipped
# fixed point never reaches the clip, the clipped iteration has the same fixed point; we check
# that, and measure the total-variation distance between the two fixed-point policies.

# %%
temperatures = np.geomspace(0.01, 3.0, 6 if SMOKE else 12)
clips = [-0.5, -1.0, -3.0, -100.0]  # -100: below every scaled log-policy here, so it never binds


@jax.jit
def fixed_point(temperature, clip):
    return jax.lax.fori_loop(0, 300, lambda _, q: munchausen_vi_step(q, temperature, alpha_m, clip), jnp.zeros_like(model.reward))


distances, unchanged_checked = {clip: [] for clip in clips}, 0
for t in temperatures:
    q_free = fixed_point(t, -jnp.inf)
    scaled_log_pi = q_free - t * jax.nn.logsumexp(q_free / t, axis=-1, keepdims=True)
    for clip in clips:
        q_clipped = fixed_point(t, clip)
        tv = 0.5 * jnp.sum(jnp.abs(jnp.exp(greedy_log_policy(q_free, t)) - jnp.exp(greedy_log_policy(q_clipped, t))), -1)
        distances[clip].append(float(jnp.max(tv)))
        if float(jnp.min(scaled_log_pi)) > clip:  # the clip never binds at the unclipped fixed point
            assert float(jnp.max(jnp.abs(q_clipped - q_free))) < 1e-9, (t, clip)
            unchanged_checked += 1
print(f"{unchanged_checked} (temperature, clip) pairs where the clip never binds: fixed points equal to 1e-9")
fig, ax = plt.subplots(figsize=(6, 3.4))
for clip in clips:
    ax.loglog(temperatures, np.maximum(distances[clip], 1e-16), "o-", label=rf"$\ell_0 = {clip}$")
ax.set_xlabel(r"$\tau_M$")
ax.set_ylabel(r"$\max_s \mathrm{TV}(\pi_{\mathrm{free}}, \pi_{\mathrm{clipped}})$")
ax.legend()
plt.show()
assert unchanged_checked >= 1
# a looser clip moves the policy less (summed over the temperatures; 1e-12 slack for rounding)
totals = [sum(distances[c]) for c in sorted(clips, reverse=True)]  # -0.5, -1, -3, -100
assert all(a >= b - 1e-12 for a, b in zip(totals, totals[1:])), totals

# %% [markdown]
# **What to notice.** Points at the bottom of the plot ($10^{-16}$) are temperatures where the
# clip changes nothing. The distance grows with $\tau_M$ (more actions fall below $\ell_0$
# once the soft value carries the $\tau_M\log A$ entropy bonus) and shrinks as $|\ell_0|$
# grows: a looser clip keeps the equivalence with MDVI up to larger temperatures, at the
# price of larger targets. At small $\tau_M$ the policy is almost greedy and a clip on the
# abandoned actions barely moves it.

# %% [markdown]
# ## 4. DQN and M-DQN on the probe MDP
#
# The two-step probe (`envs.probe.TwoStepProbe`) has $Q^\star(s_1) = (1, 0)$ and
# $Q^\star(s_0) = (\gamma, 0.5+\gamma)$: DQN's target $r + \gamma\max_{a'} q(s',a')$ has this
# fixed point. M-DQN's target has the fixed point of section 2 with the probe's terminal
# step. Its **action gap** is larger: the log-ratio of two actions' probabilities under
# $\pi^\star_\kappa$ is their gap over $\kappa$, so
# $$q^M(s,a_1) - q^M(s,a_2) = \Big(1 + \frac{\alpha_M\tau_M}{\kappa}\Big)\big(q^\star_\kappa(s,a_1) - q^\star_\kappa(s,a_2)\big)
# = \frac{q^\star_\kappa(s,a_1) - q^\star_\kappa(s,a_2)}{1-\alpha_M}.$$
# Larger gaps make the greedy action robust to estimation error (Vieillard et al. 2020b, Sec. 4).
# Training the deep agents on this probe is notebook 7; here we iterate their *targets* exactly.

# %%
probe_rewards, probe_next, probe_terminal = TwoStepProbe().transitions()
probe_rewards = jnp.asarray(probe_rewards)
gamma_probe = 0.9


probe_discount = jnp.where(jnp.asarray(probe_terminal), 0.0, gamma_probe)


def probe_iterate(target_fn, sweeps):
    """``sweeps`` synchronous sweeps ``q(s, a) <- target(q, s, a)`` from ``q = 0``."""
    states, actions = jnp.meshgrid(jnp.arange(2), jnp.arange(2), indexing="ij")
    sweep = jax.vmap(jax.vmap(target_fn, (None, 0, 0)), (None, 0, 0))
    return jax.jit(lambda: jax.lax.fori_loop(0, sweeps, lambda _, q: sweep(q, states, actions), jnp.zeros((2, 2))))()


def dqn_target(q, s, a):
    return probe_rewards[s, a] + probe_discount[s, a] * jnp.max(q[jnp.asarray(probe_next)[s, a]])


def mdqn_target(q, s, a, temperature=tau_m, munchausen_alpha=alpha_m):
    return munchausen_target(q[s], a, probe_rewards[s, a], probe_discount[s, a], q[jnp.asarray(probe_next)[s, a]],
                             temperature, munchausen_alpha, -jnp.inf)  # fmt: skip


q_dqn = probe_iterate(dqn_target, sweeps=3)  # two steps: exact after two sweeps
# the bonus feeds back on q(s, a) itself, a contraction of rate alpha_M: 400 sweeps leave 0.9^400 ~ 5e-19
q_mdqn = probe_iterate(mdqn_target, sweeps=400)
q_star = np.array([[gamma_probe, 0.5 + gamma_probe], [1.0, 0.0]])
assert np.allclose(q_dqn, q_star, atol=1e-12), q_dqn
# the probe's soft optimum, by hand (two steps: no iteration needed)
v1 = kappa * np.log(np.exp(1.0 / kappa) + 1.0)
q_kappa = np.array([[gamma_probe * v1, 0.5 + gamma_probe * v1], [1.0, 0.0]])
gap_m, gap_kappa = np.asarray(q_mdqn[:, 0] - q_mdqn[:, 1]), q_kappa[:, 0] - q_kappa[:, 1]
print("Q* =", q_star.round(4).tolist(), " M-DQN fixed point =", np.asarray(q_mdqn).round(4).tolist())
print("action gaps: soft optimum", gap_kappa.round(4), " M-DQN", gap_m.round(4), " ratio", (gap_m / gap_kappa).round(6))
assert np.allclose(gap_m, gap_kappa / (1 - alpha_m), rtol=1e-10), (gap_m, gap_kappa)

fig, ax = plt.subplots(figsize=(6, 3.2))
labels = ["s0: a=0", "s0: a=1", "s1: a=0", "s1: a=1"]
x = np.arange(4)
ax.bar(x - 0.2, q_star.ravel(), 0.4, label="DQN fixed point (Q*)")
ax.bar(x + 0.2, np.asarray(q_mdqn).ravel(), 0.4, label=rf"M-DQN fixed point ($\tau_M$={tau_m}, $\alpha_M$={alpha_m})")
ax.set_xticks(x, labels)
ax.axhline(0, color="k", lw=0.8)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** The M-DQN values of the *greedy* actions stay close to $Q^\star$
# (their $\log\pi$ is near 0), while the non-greedy actions are pushed far down by
# $\alpha_M\tau_M\log\pi$: the same greedy policy, with a tenfold action gap at $\alpha_M = 0.9$.

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `munchausen_action_gap(gap, alpha_M)`: the M-DQN fixed point's action
# gap given the soft optimum's gap (derive it from section 4's formula).
#
# **Exercise 2.** Write `probe_soft_q(gamma, kappa)`: the probe's entropy-regularized
# $q^\star_\kappa$ by hand (two steps, no iteration). The check compares it with
# `soft_value`-based backward induction.

# %% tags=["exercise"]
def munchausen_action_gap(gap, munchausen_alpha):
    raise NotImplementedError("Exercise 1: your code here")


def probe_soft_q(discount, kappa):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s03_munchausen import munchausen_action_gap, probe_soft_q  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    assert np.allclose(munchausen_action_gap(gap_kappa, alpha_m), gap_m, rtol=1e-10)
    from mdvi import soft_value

    for k_ in [0.05, 0.5, 2.0]:
        backward = np.array([[0.0, 0.5], [1.0, 0.0]])
        backward[0] += gamma_probe * float(soft_value(jnp.asarray(backward[1]), k_))
        assert np.allclose(probe_soft_q(gamma_probe, k_), backward, atol=1e-12)
    print("exercise solutions check out")

# %%
print(f"wall time: {time.perf_counter() - START:.1f} s (SMOKE={SMOKE})")
