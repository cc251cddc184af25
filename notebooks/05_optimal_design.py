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
# # 5. G-optimal design and Kiefer-Wolfowitz
#
# LS-MDVI and VWLS-MDVI (notebook 6) estimate a linear $q$-function from samples taken at a
# few chosen state-action pairs. *Which* pairs, and how many samples each, is an
# experimental-design question: choose a distribution $\pi$ over the feature vectors
# $x_1, \dots, x_n \in \mathbb{R}^d$ so that least squares predicts well *everywhere*. This
# notebook derives the Kiefer-Wolfowitz theorem, computes designs with the lab's
# `theory.design.optimal_design`, and checks the theorem, the solver's certificate, the
# extrapolation bound and the invariance of the design numerically.

# %%
import os
import time

import jax
import numpy as np

from experiments.plotting import pyplot
from theory.design import design_weights, optimal_design

START = time.perf_counter()
plt = pyplot()
jax.config.update("jax_enable_x64", True)
SMOKE = os.environ.get("SMOKE") == "1"
SOLUTIONS = os.environ.get("SOLUTIONS") == "1"
rng = np.random.default_rng(0)


def moment(x, pi):
    """``V(pi) = sum_i pi_i x_i x_i^T``."""
    return (x * pi[:, None]).T @ x


def leverages(x, pi):
    """``w_i = x_i^T V(pi)^-1 x_i``, by a linear solve (not the solver's bookkeeping)."""
    return np.einsum("nd,nd->n", x, np.linalg.solve(moment(x, pi), x.T).T)


# %% [markdown]
# ## 1. The theorem
#
# With $V(\pi) = \sum_i \pi_i x_i x_i^\top$ and the **leverage** $w_\pi(x) = x^\top V(\pi)^{-1}x$,
# least squares with $n_i \approx \pi_i m$ noisy observations at $x_i$ predicts
# $\langle x, \theta\rangle$ with variance $\sigma^2 w_\pi(x)/m$. The G-optimal design minimises
# the worst case $g(\pi) = \max_i w_\pi(x_i)$.
#
# > **Theorem (Kiefer-Wolfowitz 1960; Lattimore & Szepesvari 2020, Thm 21.1).** For $x_i$
# > spanning $\mathbb{R}^d$ the following are equivalent: (a) $\pi$ minimises $g$; (b) $\pi$
# > maximises $\log\det V(\pi)$; (c) $g(\pi) = d$. Some optimum has at most $d(d+1)/2$ support points.
#
# *Why $d$.* For **every** $\pi$, $\sum_i \pi_i w_\pi(x_i) = \mathrm{tr}(V^{-1}\sum_i\pi_i x_i x_i^\top) = \mathrm{tr}(I_d) = d$:
# the average leverage is $d$, so the maximum is at least $d$, and the theorem says that
# the maximum $d$ is attained. Geometrically: at the optimum every $x_i$ lies inside the
# ellipsoid $\{x : x^\top V^{-1} x \le d\}$ and the support points lie *on* it.

# %%
n_points = 40 if SMOKE else 200
angle, radius = rng.uniform(0, 2 * np.pi, n_points), np.sqrt(rng.uniform(0.3, 1.0, n_points))
x = np.stack([2.0 * radius * np.cos(angle), 0.7 * radius * np.sin(angle)], 1)  # an elliptic annulus
design = optimal_design(x, tolerance=1e-9)
pi = design.weights
w = leverages(x, pi)
print(f"support {design.support.tolist()}, g/d = {design.g_over_d:.10f}, steps {design.iterations}")
assert abs(w.max() / 2 - 1) < 1e-8, w.max()  # (c): g = d, tolerance 1e-9 asked of the solver
assert np.all(np.abs(w[design.support] - 2) < 1e-8)  # support on the ellipse
assert abs(pi @ w - 2) < 1e-10  # average leverage = d, for any design (here the optimum)

angles = np.linspace(0, 2 * np.pi, 300)
circle = np.stack([np.cos(angles), np.sin(angles)])
ellipse = np.linalg.cholesky(moment(x, pi)) @ circle * np.sqrt(2)  # {L u : |u| = sqrt d} = {x'V^-1 x = d}
fig, ax = plt.subplots(figsize=(5.5, 4))
ax.scatter(*x.T, s=12, color="gray", label="features $x_i$")
ax.scatter(*x[design.support].T, s=200 * pi[design.support] / pi.max(), color="C3", label=r"support (area $\propto \pi_i$)")
ax.plot(*ellipse, color="C0", label=r"$x^\top V(\pi)^{-1} x = d$")
ax.set_aspect("equal")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# **What to notice.** Every point is inside the ellipse and the support points sit exactly on
# it: that is $g(\pi) = d$. The support is small ($\le d(d+1)/2 = 3$ in the plane) and lies on
# the *extremes* of the cloud: a design spends its samples where the features are large,
# because predictions elsewhere are interpolations of those.

# %% [markdown]
# ## 2. An independent solver, and the certificate along the Frank-Wolfe steps
#
# The lab's solver is Frank-Wolfe (Fedorov-Wynn) with away steps and exact line search. As an
# independent check we run the classical **multiplicative algorithm** (Titterington 1976),
# $\pi_i \leftarrow \pi_i\, w_\pi(x_i)/d$, which increases $\log\det V$ monotonically and keeps
# $\sum_i\pi_i = 1$ by the identity above.
#
# > **Certificate.** For any $\pi$, $\log\det V^\star - \log\det V(\pi) \le d\log(g(\pi)/d)$.
# > *Proof:* by AM-GM on the eigenvalues of $V^{-1}V^\star$, $\log\det(V^{-1}V^\star) \le d \log(\mathrm{tr}(V^{-1}V^\star)/d)$,
# > and $\mathrm{tr}(V^{-1}V^\star) = \sum_i\pi^\star_i w_\pi(x_i) \le g(\pi)$.

# %%
multiplicative = np.full(n_points, 1.0 / n_points)
for _ in range(2000 if SMOKE else 5000):
    multiplicative *= leverages(x, multiplicative) / 2
logdet_fw = np.linalg.slogdet(moment(x, pi))[1]
logdet_mult = np.linalg.slogdet(moment(x, multiplicative))[1]
g_mult = leverages(x, multiplicative).max()
print(f"log det: Frank-Wolfe {logdet_fw:.10f}, multiplicative {logdet_mult:.10f} (its g/d = {g_mult / 2:.6f})")
# each solver's certificate bounds how far the other can be above it
assert logdet_mult <= logdet_fw + design.gap_bound + 1e-12
assert logdet_fw <= logdet_mult + 2 * np.log(g_mult / 2) + 1e-12

steps = np.unique(np.geomspace(1, 200, 16).astype(int))
frank_wolfe = jax.jit(design_weights)  # max_iterations is traced: one compilation for every k
trace = [frank_wolfe(x, 0.0, int(k)) for k in steps]
g_over_d = np.array([float(t.g_over_d) for t in trace])
true_gap = np.array([logdet_fw - np.linalg.slogdet(moment(x, np.asarray(t.weights)))[1] for t in trace])
certificate = 2 * np.log(g_over_d)
assert np.all(true_gap <= certificate + 1e-9), (true_gap - certificate).max()

fig, ax = plt.subplots(figsize=(6, 3.4))
ax.loglog(steps, g_over_d - 1, "o-", label=r"$g(\pi_k)/d - 1$")
ax.loglog(steps, certificate, "s-", label=r"certificate $d\log(g/d)$")
ax.loglog(steps, np.maximum(true_gap, 1e-16), "^-", label=r"true gap $\log\det V^\star - \log\det V(\pi_k)$")
ax.set_xlabel("Frank-Wolfe steps k")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** The certificate (squares) is always above the true gap (triangles), and
# both fall together; the certificate is computable *without* knowing $V^\star$, which is why
# the solver can stop on it. The true gap falls monotonically (each Frank-Wolfe step is an
# exact line search on $\log\det$), while $g/d$ does not: a step toward the point of largest
# leverage can raise another point's leverage. Near the optimum the true gap is a fraction of
# the certificate.

# %% [markdown]
# ## 3. Extrapolation under adversarial noise
#
# Misspecified models are the reason designs matter for RL with function approximation: if each
# observation is off by at most $\varepsilon$ (in the worst, adversarial way), how wrong can
# least squares be at an arbitrary feature $x$?
#
# > **Lemma (Lattimore, Szepesvari & Weisz 2020, "Learning with good feature representations").**
# > With $n_i = \lceil \pi_i m\rceil$ samples at the support of a G-optimal $\pi$ and any
# > noise $|\eta_j| \le \varepsilon$, the least-squares estimate satisfies, for every $x$ in the set,
# > $|\langle x, \hat\theta - \theta\rangle| \le \varepsilon\sqrt{d\,n/m}$ with $n = \sum_i n_i \le m + |\mathrm{supp}\,\pi|$.
#
# *Derivation.* With $V_n = \sum_i n_i x_i x_i^\top \succeq m V(\pi)$,
# $\langle x, \hat\theta - \theta\rangle = \sum_j \eta_j\, x^\top V_n^{-1}x_{i(j)}$, so by Cauchy-Schwarz
# the error is at most $\varepsilon\sqrt{n \sum_j (x^\top V_n^{-1}x_{i(j)})^2} = \varepsilon\sqrt{n\,x^\top V_n^{-1}x}
# \le \varepsilon\sqrt{n\, d/m}$. The adversary attains the first sum exactly with
# $\eta_j = \varepsilon\,\mathrm{sign}(x^\top V_n^{-1}x_{i(j)})$; we compute that worst case per target $x$.

# %%
eps, m = 0.1, 100


def worst_case_errors(counts):
    """Per target x: max over |eta| <= eps of |<x, theta_hat - theta>| = eps sum_i n_i |x' V_n^-1 x_i|."""
    v_n = moment(x, counts.astype(float))
    coefficients = x @ np.linalg.solve(v_n, x.T)  # [target, design point]
    return eps * np.abs(coefficients) @ counts


g_counts = np.ceil(pi * m).astype(int)
uniform_counts = np.full(n_points, int(np.ceil(m / n_points)))
errors_g, errors_u = worst_case_errors(g_counts), worst_case_errors(uniform_counts)
bound = eps * np.sqrt(2 * g_counts.sum() / m)
print(f"G-optimal ({g_counts.sum()} samples): worst error {errors_g.max():.4f} <= bound {bound:.4f}")
print(f"uniform   ({uniform_counts.sum()} samples): worst error {errors_u.max():.4f}")
assert errors_g.max() <= bound + 1e-12, (errors_g.max(), bound)

fig, ax = plt.subplots(figsize=(6, 3.4))
order = np.argsort(errors_g)
ax.plot(errors_u[order], ".", label=f"uniform design ({uniform_counts.sum()} samples)")
ax.plot(errors_g[order], ".", label=f"G-optimal design ({g_counts.sum()} samples)")
ax.axhline(bound, color="k", ls="--", label=r"bound $\varepsilon\sqrt{d\,n/m}$")
ax.set_xlabel("target feature (sorted by G-optimal error)")
ax.set_ylabel("worst-case extrapolation error")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# **What to notice.** The G-optimal design's worst-case error stays under the
# dimension-only bound $\varepsilon\sqrt{d\,n/m}$ (about $\varepsilon\sqrt d$) at *every*
# target, with a handful of sample locations. The uniform design spends its samples on
# interior points, and the adversary exploits the poorly covered extremes: its error
# at the extreme targets is larger, although it uses as many or more samples.

# %% [markdown]
# ## 4. Invariance under $\phi \mapsto B\phi$
#
# For invertible $B$, $V_B(\pi) = B V(\pi) B^\top$ and $w^B_\pi(Bx) = x^\top B^\top B^{-\top} V^{-1} B^{-1} B x = w_\pi(x)$:
# leverages, hence $g$, the optimal design and the certificate, do not depend on the
# coordinates of the features. (A design that changed when a feature is measured in other
# units would be a bug.) The solver works in orthonormal coordinates of the column space,
# so it should return the same weights.

# %%
B = rng.normal(size=(2, 2)) + 3 * np.eye(2)
xb = x @ B.T
assert np.allclose(leverages(xb, pi), w, rtol=1e-9)  # the identity, for this pi
design_b = optimal_design(xb, tolerance=1e-9)
print("max |pi - pi_B| =", np.abs(design_b.weights - pi).max())
assert np.allclose(design_b.weights, pi, atol=1e-6), np.abs(design_b.weights - pi).max()

# %% [markdown]
# ## Exercises
#
# **Exercise 1.** Write `average_leverage(features, weights)` and verify that it is $d$ for
# a random design (derive why).
#
# **Exercise 2.** For $n \ge 3$ equally spaced unit vectors in the plane, show that the
# uniform design is G-optimal. Write `circle_design(n)` returning the features and the
# uniform weights; the check computes $g/d$ by an independent linear solve.

# %% tags=["exercise"]
def average_leverage(features, weights):
    raise NotImplementedError("Exercise 1: your code here")


def circle_design(n):
    raise NotImplementedError("Exercise 2: your code here")


if SOLUTIONS:
    from notebooks.solutions.s05_design import average_leverage, circle_design  # noqa: F811

# %% tags=["exercise-check"]
if SOLUTIONS:
    random_pi = rng.dirichlet(np.ones(n_points))
    assert abs(average_leverage(x, random_pi) - 2) < 1e-10
    features, uniform = circle_design(7)
    assert abs(leverages(features, uniform).max() / 2 - 1) < 1e-12
    print("exercise solutions check out")

# %%
print(f"wall time: {time.perf_counter() - START:.1f} s (SMOKE={SMOKE})")
