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
# # Entropy- and KL-regularized RL on a small chain
#
# This notebook runs in seconds on a laptop CPU. It shows three facts with exact
# computations, and checks each one with an `assert`:
#
# 1. The soft value `tau * log sum_a exp(q(a) / tau)` tends to the max as `tau -> 0`, and
#    the entropy-regularized optimum is within `tau log(A) / (1 - gamma)` of the true one.
# 2. The soft-greedy policy's entropy grows with `tau`.
# 3. KL regularization *averages* past q-functions (Vieillard et al. 2020): with a noisy
#    generative model, MDVI with `alpha = gamma` beats the same update without the KL term.
#
# Set `SMOKE=1` to shrink the problem sizes (the test suite does).

# %%
import os

import jax
import jax.numpy as jnp
import numpy as np

from envs.tabular import chain
from experiments.plotting import pyplot
from mdvi import Regularization, entropy, soft_value
from mdvi import tabular as solvers

# The lab's seaborn style; in a Jupyter kernel the inline backend stays, so figures show.
plt = pyplot()

jax.config.update("jax_enable_x64", True)  # exact arithmetic for the checks below
SMOKE = os.environ.get("SMOKE") == "1"
mdp = chain(8, slip=0.1, discount=0.9)
model = mdp.model()
optimum = solvers.optimal_values(model)
print("V* =", np.round(np.asarray(optimum.v), 3))

# %% [markdown]
# ## 1. The soft value and the regularized optimum

# %%
q = jnp.array([1.0, 2.0, 1.5])
for tau in [1.0, 0.1, 0.01, 0.0]:
    print(f"tau={tau:<5} soft value={float(soft_value(q, tau)):.5f}   max={float(q.max())}")
assert abs(float(soft_value(q, 1e-4)) - 2.0) < 1e-3

taus = np.geomspace(1e-3, 1.0, 6 if SMOKE else 12)
gaps = []
for tau in taus:
    soft = solvers.soft_value_iteration(model, tau, tolerance=1e-10)
    gaps.append(float(jnp.max(soft.v - optimum.v)))
    bound = tau * np.log(mdp.num_actions) / (1 - mdp.discount)
    assert -1e-8 <= gaps[-1] <= bound + 1e-8, (tau, gaps[-1], bound)

fig, ax = plt.subplots(figsize=(5, 3))
ax.loglog(taus, gaps, "o-", label="max_s V_tau(s) - V*(s)")
ax.loglog(taus, taus * np.log(2) / (1 - mdp.discount), "--", label="tau log A / (1 - gamma)")
ax.set_xlabel("tau")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Entropy of the soft-greedy policy

# %%
entropies = [
    float(jnp.mean(entropy(solvers.soft_value_iteration(model, tau).log_policy))) for tau in taus
]
print(np.round(entropies, 3))
assert all(a <= b + 1e-9 for a, b in zip(entropies, entropies[1:]))

# %% [markdown]
# ## 3. KL regularization averages out the noise of a generative model
#
# Both runs use `beta = inf` (hard max) and M = 2 draws per state-action pair. With
# `alpha = 0` the update is sampled value iteration; with `alpha = gamma` the policy is greedy
# with respect to the discounted *sum* of past q estimates, which averages their errors.

# %%
seeds = 20 if SMOKE else 100
keys = jax.random.split(jax.random.key(0), seeds)
iterations = 40 if SMOKE else 80
curves = {}
for name, alpha in [("sampled VI (alpha=0)", 0.0), ("MDVI (alpha=gamma)", mdp.discount)]:
    reg = Regularization.from_alpha_beta(alpha, float("inf"))
    run = jax.vmap(lambda k, reg=reg: solvers.sampled_mdvi(k, model, reg, iterations, 2, v_star=optimum.v))(keys)
    curves[name] = np.asarray(run.gap).mean(0)

fig, ax = plt.subplots(figsize=(5, 3))
for name, curve in curves.items():
    ax.semilogy(np.arange(1, iterations + 1), curve, label=name)
ax.set_xlabel("iteration")
ax.set_ylabel("mean ||V* - V^pi_k||_inf")
ax.legend()
plt.show()
final = {name: curve[-10:].mean() for name, curve in curves.items()}
print(final)
assert final["MDVI (alpha=gamma)"] < final["sampled VI (alpha=0)"]
