"""f-divergence families and the f-softargmax: generators, registry, solvers, derivatives, extremes."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize, special

from mdvi import f_softargmax as fs
from mdvi.divergences import KL, get_divergence
from mdvi.f_divergences import (
    AlphaDivergence,
    ChiSquared,
    GeneralizedJSD,
    Jeffreys,
    JensenShannon,
    KullbackLeibler,
    ReverseKL,
    SquaredHellinger,
)

REGISTERED = [
    "reverse_kl",
    "chi2",
    "js",
    "jeffreys",
    "hellinger",
    "alpha:1.5",
    "alpha:2",
    "alpha:0.5",
    "alpha:3",
    "jsd:0.1",
    "jsd:0.9",
]
ALL_NAMES = ["kl", *REGISTERED, "jsd:0", "jsd:1"]
SPARSE = {"chi2", "alpha:1.5", "alpha:2", "alpha:3"}


def f_div(name):
    """The f-divergence object of a registry name (``"kl"`` as the generator-carrying class)."""
    return KullbackLeibler() if name == "kl" else get_divergence(name)


def bisection(name):
    return dataclasses.replace(f_div(name), solver="bisection")


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def test_registry_parses_every_name():
    expected = {
        "reverse_kl": ReverseKL(),
        "chi2": ChiSquared(),
        "js": JensenShannon(),
        "jeffreys": Jeffreys(),
        "hellinger": SquaredHellinger(),
        "alpha:1.5": AlphaDivergence(1.5),
        "jsd:0.1": GeneralizedJSD(0.1),
    }
    for name, div in expected.items():
        assert get_divergence(name) == div
        assert get_divergence(name).name == name
    assert get_divergence("kl") is KL
    assert get_divergence(" alpha:2 ") == AlphaDivergence(2)
    for name in REGISTERED:
        assert get_divergence(get_divergence(name).name) == get_divergence(name)


@pytest.mark.parametrize(
    "name, message",
    [
        ("tsallis", "unknown divergence"),
        ("alpha", "needs a parameter"),
        ("alpha:x", "not a number"),
        ("alpha:-1", "alpha must"),
        ("alpha:inf", "alpha must"),
        ("jsd:1.5", "beta must"),
        ("chi2:3", "unknown divergence"),
    ],
)
def test_registry_rejects_bad_names(name, message):
    with pytest.raises(ValueError, match=message):
        get_divergence(name)


def test_solver_argument_is_checked():
    with pytest.raises(ValueError, match="solver"):
        AlphaDivergence(1.5, solver="newton")
    with pytest.raises(ValueError, match="no closed form"):
        ReverseKL(solver="closed_form")
    with pytest.raises(ValueError, match="beta of JensenShannon"):
        JensenShannon(beta=0.3)


def test_sparsity_domain_facts():
    for name in ALL_NAMES:
        assert f_div(name).sparse == (name in SPARSE), name
    assert AlphaDivergence(1.5).f_prime_zero == -2.0
    assert AlphaDivergence(0.5).f_prime_sup == 2.0
    assert ReverseKL().f_prime_sup == 0.0


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------

U_GRID = np.concatenate([np.logspace(-6, 6, 61), [0.3, 1.0, 2.5]])


@pytest.mark.parametrize("name", ALL_NAMES + ["alpha:1", "alpha:1.0000001", "jsd:0.5", "jsd:1e-9", "jsd:0.999999999"])
def test_generator_derivatives_and_inverse(x64, name):
    div = f_div(name)
    u = jnp.asarray(U_GRID)
    assert abs(float(div.f(jnp.asarray(1.0)))) < 1e-12
    h = 1e-5 * u
    fd_prime = (div.f(u + h) - div.f(u - h)) / (2 * h)
    np.testing.assert_allclose(div.f_prime(u), fd_prime, rtol=1e-6, atol=1e-6)
    fd_second = (div.f_prime(u + h) - div.f_prime(u - h)) / (2 * h)
    rounding = 1e-9 * (1 + jnp.abs(div.f_prime(u))) / u  # cancellation in the difference quotient
    assert np.all(np.abs(div.f_second(u) - fd_second) <= 1e-5 * np.abs(fd_second) + rounding)
    np.testing.assert_allclose(div.f_prime_of_log(jnp.log(u)), div.f_prime(u), rtol=1e-12, atol=1e-12)
    # the round trip is as accurate as f' is steep: error <= rounding of f' / f''
    conditioning = 1e-14 * (1 + jnp.abs(div.f_prime(u))) / div.f_second(u)
    assert np.all(np.abs(div.f_prime_inverse(div.f_prime(u)) - u) <= 1e-9 * u + conditioning)
    # domain facts are the limits of f' and f
    np.testing.assert_allclose(float(div.f_prime(jnp.asarray(0.0))), div.f_prime_zero)
    if math.isfinite(div.f_prime_sup):
        assert abs(float(div.f_prime(jnp.asarray(1e30))) - div.f_prime_sup) < 1e-6 * max(1.0, abs(div.f_prime_sup))
    else:
        assert float(div.f_prime(jnp.asarray(1e30))) > 30
    if math.isfinite(div.f_zero):
        assert abs(float(div.f(jnp.asarray(1e-30))) - div.f_zero) < 1e-6
        assert float(div.f(jnp.asarray(0.0))) == pytest.approx(div.f_zero)
    else:
        assert float(div.f(jnp.asarray(1e-300))) > 100


def test_jeffreys_inverse_against_wright_omega(x64):
    # (f')^{-1}(s) = 1 / W(e^(1 - s)); scipy's wrightomega(z) = W(e^z) without overflow.
    s = np.concatenate([-np.logspace(-3, 8, 200), np.logspace(-3, 2.5, 200), [0.0]])
    expected = 1.0 / special.wrightomega(1.0 - s).real
    np.testing.assert_allclose(Jeffreys().f_prime_inverse(jnp.asarray(s)), expected, rtol=1e-13)


def _dirichlet(key, shape):
    return np.asarray(jax.random.dirichlet(key, jnp.ones(shape[-1]), shape[:-1]), dtype=np.float64)


def test_divergence_values_match_textbook_formulas(x64):
    p = _dirichlet(jax.random.PRNGKey(0), (6, 9))
    r = _dirichlet(jax.random.PRNGKey(1), (6, 9))
    lp, lr = jnp.log(p), jnp.log(r)

    def kl(a, b):
        return np.sum(a * np.log(a / b), -1)

    def value(name):
        return np.asarray(f_div(name).divergence(lp, lr))

    np.testing.assert_allclose(value("kl"), kl(p, r), rtol=1e-12)
    np.testing.assert_allclose(value("reverse_kl"), kl(r, p), rtol=1e-12)
    np.testing.assert_allclose(value("chi2"), np.sum((p - r) ** 2 / r, -1), rtol=1e-12)
    np.testing.assert_allclose(value("chi2"), 2 * value("alpha:2"), rtol=1e-12)
    np.testing.assert_allclose(value("hellinger"), np.sum((np.sqrt(p) - np.sqrt(r)) ** 2, -1), rtol=1e-12)
    np.testing.assert_allclose(value("hellinger"), 0.5 * value("alpha:0.5"), rtol=1e-12)
    np.testing.assert_allclose(value("jeffreys"), kl(p, r) + kl(r, p), rtol=1e-12)
    m = 0.5 * (p + r)
    np.testing.assert_allclose(value("js"), 0.5 * kl(p, m) + 0.5 * kl(r, m), rtol=1e-12)
    assert np.all(value("js") <= math.log(2))
    for beta in (0.1, 0.5, 0.9):
        m = beta * p + (1 - beta) * r
        gkd = beta * kl(p, m) + (1 - beta) * kl(r, m)
        np.testing.assert_allclose(beta * (1 - beta) * value(f"jsd:{beta}"), gkd, rtol=1e-11)
    # the normalised JSD(beta) is continuous at both ends: KL(p || r) at 0, KL(r || p) at 1
    np.testing.assert_allclose(value("jsd:0"), kl(p, r), rtol=1e-12)
    np.testing.assert_allclose(value("jsd:1"), kl(r, p), rtol=1e-12)
    np.testing.assert_allclose(value("jsd:1e-7"), kl(p, r), rtol=1e-5)
    np.testing.assert_allclose(value("jsd:0.9999999"), kl(r, p), rtol=1e-5)
    np.testing.assert_allclose(value("alpha:1.000001"), kl(p, r), rtol=1e-5)


def test_divergence_support_conventions(x64):
    log_ref = jnp.log(jnp.asarray([0.5, 0.5, 0.0]))
    outside = jnp.log(jnp.asarray([0.5, 0.25, 0.25]))
    zero_inside = jnp.log(jnp.asarray([1.0, 0.0, 0.0]))
    for name in ALL_NAMES:
        div = f_div(name)
        assert float(div.divergence(outside, log_ref)) == math.inf, name
        expected = 0.5 * float(div.f(jnp.asarray(2.0))) + 0.5 * div.f_zero
        assert float(div.divergence(zero_inside, log_ref)) == pytest.approx(expected), name


# ---------------------------------------------------------------------------------------------
# Independent reference solutions, written here
# ---------------------------------------------------------------------------------------------


def sparsemax_np(z):
    """Sort-based sparsemax (Martins & Astudillo 2016, Alg. 1)."""
    zs = np.sort(z)[::-1]
    cums = np.cumsum(zs)
    k = np.arange(1, z.size + 1)
    size = k[1 + k * zs > cums][-1]
    tau = (cums[size - 1] - 1) / size
    return np.maximum(z - tau, 0)


def entmax15_np(z):
    """Sort-based 1.5-entmax (Peters, Niculae & Martins 2019, Alg. 2): p = [z/2 - tau]_+^2."""
    z = z / 2
    zs = np.sort(z)[::-1]
    k = np.arange(1, z.size + 1)
    mean = np.cumsum(zs) / k
    mean_sq = np.cumsum(zs**2) / k
    delta = (1 - k * (mean_sq - mean**2)) / k
    tau = mean - np.sqrt(np.maximum(delta, 0))
    size = np.sum(tau <= zs)
    return np.maximum(z - tau[size - 1], 0) ** 2


def g_np(name, s):
    """(f')^{-1} extended by 0 below f'(0+) and +inf at or above f'(+inf), by hand for each family."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(all="ignore"):
        if name == "kl":
            return np.exp(s - 1)
        if name == "reverse_kl":
            return np.where(s < 0, -1 / s, np.inf)
        if name == "chi2":
            return np.maximum(1 + s / 2, 0)
        if name == "jeffreys":
            return 1 / special.wrightomega(1 - s).real
        if name == "hellinger":
            return np.where(s < 1, 1 / (1 - s) ** 2, np.inf)
        if name.startswith("alpha:"):
            alpha = float(name.split(":")[1])
            base = 1 + (alpha - 1) * s
            if alpha > 1:
                return np.maximum(base, 0) ** (1 / (alpha - 1))
            return np.where(base > 0, np.abs(base) ** (1 / (alpha - 1)), np.inf)
        if name in ("js",) or name.startswith("jsd:"):
            beta = 0.5 if name == "js" else float(name.split(":")[1])
            gap = 1 - beta
            scaled = 4 * s if name == "js" else s  # JS = JSD(1/2) / 4
            if gap == 0:
                return np.where(scaled < 1, 1 / (1 - scaled), np.inf)
            e = np.exp(gap * scaled)  # u / (beta u + gap) = e
            return np.where(beta * e < 1, gap * e / (1 - beta * e), np.inf)
    raise AssertionError(name)


def random_problem(key, rows=6, actions=11, unit=False, holes=True):
    k1, k2, k3 = jax.random.split(key, 3)
    x = np.asarray(jax.random.normal(k1, (rows, actions)), dtype=np.float64) * 3
    log_ref = (
        np.zeros((rows, actions))
        if unit
        else np.log(np.asarray(jax.random.uniform(k2, (rows, actions), minval=0.05), dtype=np.float64))
    )
    if holes:
        hole = np.array(jax.random.bernoulli(k3, 0.25, (rows, actions)))
        hole[:, 0] = False
        log_ref = np.where(hole, -np.inf, log_ref)
    return x, log_ref


# ---------------------------------------------------------------------------------------------
# Closed forms against independent solutions
# ---------------------------------------------------------------------------------------------


def adversarial_logits():
    rows = [
        np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),  # all tied
        np.array([1e4, -1e4, 0.0, 1e4, 5.0, -3.0]),  # 1e4 spread with a tie at the top
        np.array([3.0, 3.0, 2.0, 2.0, -1.0, -1.0]),  # pairs of ties
        np.array([1e-9, 0.0, -1e-9, 2e-9, 0.0, 1e-9]),  # nearly tied
        np.array([50.0, -50.0, 49.999, 0.0, 1.0, 2.0]),
        np.array([-1e4, -1e4, -1e4, -1e4 + 1.0, -1e4, -1e4 + 2.0]),  # large offset
    ]
    return np.stack(rows)


@pytest.mark.parametrize("solver", ["auto", "bisection"])
def test_softmax_sparsemax_entmax(x64, solver):
    x = np.concatenate([adversarial_logits(), random_problem(jax.random.PRNGKey(0), rows=20, actions=6, unit=True)[0] * 3])
    log_ref = jnp.zeros_like(x)
    for div, reference in [
        (KullbackLeibler(solver=solver), lambda z: np.asarray(jax.nn.softmax(jnp.asarray(z)))),
        (AlphaDivergence(2.0, solver=solver), sparsemax_np),
        (AlphaDivergence(1.5, solver=solver), entmax15_np),
    ]:
        p = np.exp(np.asarray(div.greedy_log_policy(jnp.asarray(x), 1.0, log_ref)))
        expected = np.stack([reference(row) for row in x])
        np.testing.assert_allclose(p, expected, atol=1e-6 if solver == "bisection" else 1e-12, err_msg=div.name)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
        if div.sparse:
            np.testing.assert_array_equal(p[expected == 0], 0.0)


@pytest.mark.parametrize("name", ["alpha:1.5", "alpha:2", "chi2"])
def test_sorted_closed_form_with_any_reference_matches_bisection(x64, name):
    x, log_ref = random_problem(jax.random.PRNGKey(3), rows=40, actions=13)
    closed = np.exp(np.asarray(f_div(name).greedy_log_policy(jnp.asarray(x), 0.7, jnp.asarray(log_ref))))
    bisected = np.exp(np.asarray(bisection(name).greedy_log_policy(jnp.asarray(x), 0.7, jnp.asarray(log_ref))))
    np.testing.assert_allclose(closed, bisected, atol=1e-10)
    assert np.sum(closed == 0) > np.sum(np.isinf(log_ref))  # sparse beyond the holes of the reference


# ---------------------------------------------------------------------------------------------
# Bisection: bracket, threshold against brentq, iteration count
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["kl", *REGISTERED])
def test_bisection_threshold_matches_brentq(x64, name):
    x, log_ref = random_problem(jax.random.PRNGKey(7), rows=8, actions=9)
    div = bisection(name)
    tau, lo, hi = (np.asarray(v)[:, 0] for v in fs.solve_threshold(div, jnp.asarray(x), jnp.asarray(log_ref)))
    support_x_max = np.max(np.where(np.isfinite(log_ref), x, -np.inf), axis=-1)
    bracket_lo, bracket_hi = (
        np.asarray(v)[:, 0] + support_x_max
        for v in fs.bisection_bracket(
            div, jnp.where(jnp.isfinite(log_ref), x - support_x_max[:, None], -jnp.inf), jnp.asarray(log_ref)
        )
    )
    for row in range(x.shape[0]):
        support = np.isfinite(log_ref[row])
        r, xs = np.exp(log_ref[row][support]), x[row][support]

        def phi(t, r=r, xs=xs):
            return np.sum(r * g_np(name, xs - t)) - 1.0

        # the derived bracket is valid
        assert phi(bracket_lo[row]) >= -1e-12 and phi(bracket_hi[row]) <= 1e-12
        if abs(phi(bracket_lo[row])) <= 1e-12:  # a single active action: the root is the bracket's end
            root = bracket_lo[row]
        else:
            root = optimize.brentq(phi, bracket_lo[row], bracket_hi[row], xtol=1e-14, rtol=4 * np.finfo(float).eps)
        assert abs(tau[row] - root) <= 1e-8, (name, row, tau[row], root)
        assert lo[row] <= root + 1e-12 and root <= hi[row] + 1e-12


def test_bisection_iteration_count_is_derived_from_the_bracket(x64):
    # unit reference over k = 32000 actions: W = f'(1) - f'(1/k)
    k = 32000
    assert int(fs.bisection_iterations(2 * (1 - k**-0.5), np.float32)) == 21
    assert int(fs.bisection_iterations(2 * (1 - k**-0.5), np.float64)) == 41
    assert int(fs.bisection_iterations(math.log(k), np.float32)) == 24
    assert int(fs.bisection_iterations(math.log(k), np.float64)) == 44
    assert int(fs.bisection_iterations(0.0, np.float32)) == 0
    with pytest.raises(ValueError, match="dtype"):
        fs.bisection_iterations(1.0, np.int32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["alpha:1.5", "kl", "jsd:0.5"])
def test_derived_iterations_reach_the_tolerance(dtype, name):
    with jax.enable_x64(dtype == np.float64):
        x, log_ref = random_problem(jax.random.PRNGKey(11), rows=5, actions=200, unit=True, holes=False)
        x, log_ref = jnp.asarray(x, dtype), jnp.asarray(log_ref, dtype)
        div, eps = bisection(name), fs.threshold_tolerance(dtype)
        shifted = x - x.max(-1, keepdims=True)
        lo, hi = fs.bisection_bracket(div, shifted, log_ref)
        width = float(jnp.max(hi - lo))
        np.testing.assert_allclose(
            width, float(div.f_prime(jnp.asarray(1.0, dtype)) - div.f_prime(jnp.asarray(1 / 200, dtype))), rtol=1e-6
        )
        n = int(fs.bisection_iterations(width, dtype))
        assert width / 2**n <= eps < width / 2 ** (n - 1)
        _, lo_n, hi_n = fs.solve_threshold(div, x, log_ref, num_iterations=n)
        _, lo_short, hi_short = fs.solve_threshold(div, x, log_ref, num_iterations=n - 1)
        assert float(jnp.max(hi_n - lo_n)) <= eps * (1 + 1e-3) + 4 * np.finfo(dtype).eps * float(jnp.max(jnp.abs(x)))
        assert float(jnp.max(hi_short - lo_short)) > eps
        # the default run uses exactly this n and lands within eps of the float64 root
        tau_default, _, _ = fs.solve_threshold(div, x, log_ref)
        with jax.enable_x64(True):
            root, _, _ = fs.solve_threshold(
                div, jnp.asarray(np.asarray(x), jnp.float64), jnp.asarray(np.asarray(log_ref), jnp.float64)
            )
            assert float(jnp.max(jnp.abs(jnp.asarray(np.asarray(tau_default), jnp.float64) - root))) <= 2 * eps


# ---------------------------------------------------------------------------------------------
# Properties of the output
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_are_distributions_on_the_support(name, dtype):
    with jax.enable_x64(dtype == np.float64):
        x, log_ref = random_problem(jax.random.PRNGKey(5), rows=16, actions=10)
        temperature = jnp.linspace(0.0, 3.0, 16, dtype=dtype)  # broadcast over the leading axis, t = 0 included
        log_p = f_div(name).greedy_log_policy(jnp.asarray(x, dtype), temperature, jnp.asarray(log_ref, dtype))
        assert log_p.dtype == dtype
        p = np.asarray(jnp.exp(log_p))
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=10 * np.finfo(dtype).eps * 10)
        assert np.all(p[np.isinf(log_ref)] == 0)
        hard = np.where(np.isfinite(log_ref), x, -np.inf).argmax(-1)
        assert p[0, hard[0]] == 1.0  # temperature 0: the max over the support


def test_alpha_to_one_approaches_softmax(x64):
    x, log_ref = random_problem(jax.random.PRNGKey(2), rows=10, actions=12)
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    softmax = jnp.exp(KL.greedy_log_policy(x, 1.0, log_ref))
    errors = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4):
        for alpha in (1 - delta, 1 + delta):
            errors.append(float(jnp.max(jnp.abs(jnp.exp(AlphaDivergence(alpha).greedy_log_policy(x, 1.0, log_ref)) - softmax))))
        assert errors[-1] <= 5 * delta and errors[-2] <= 5 * delta
    assert errors[-1] < errors[0] / 100
    np.testing.assert_allclose(jnp.exp(AlphaDivergence(1.0).greedy_log_policy(x, 1.0, log_ref)), softmax, atol=1e-10)


def test_jit_and_vmap_agree_with_the_batched_call():
    x, log_ref = random_problem(jax.random.PRNGKey(4), rows=6, actions=7)
    x, log_ref = jnp.asarray(x, jnp.float32), jnp.asarray(log_ref, jnp.float32)
    for name in ("alpha:1.5", "jsd:0.3", "reverse_kl"):
        div = bisection(name)
        batched = div.greedy_log_policy(x, 0.5, log_ref)
        mapped = jax.vmap(lambda q, lr, d=div: d.greedy_log_policy(q, 0.5, lr))(x, log_ref)
        jitted = jax.jit(lambda q, lr, d=div: d.greedy_log_policy(q, 0.5, lr))(x, log_ref)
        temps = jnp.full((6,), 0.5, jnp.float32)
        per_row_t = jax.vmap(lambda q, t, lr, d=div: d.conjugate(q, t, lr))(x, temps, log_ref)
        np.testing.assert_allclose(jnp.exp(mapped), jnp.exp(batched), atol=2e-6)
        np.testing.assert_allclose(jnp.exp(jitted), jnp.exp(batched), atol=2e-6)
        np.testing.assert_allclose(per_row_t, div.conjugate(x, 0.5, log_ref), rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Conjugate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_NAMES)
def test_conjugate_is_the_maximum(x64, name):
    x, log_ref = random_problem(jax.random.PRNGKey(9), rows=6, actions=8)
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    div = f_div(name)
    value = div.conjugate(x, 0.8, log_ref)
    log_p = div.greedy_log_policy(x, 0.8, log_ref)
    attained = jnp.sum(jnp.where(log_p > -jnp.inf, jnp.exp(log_p) * x, 0.0), -1) - 0.8 * div.divergence(log_p, log_ref)
    np.testing.assert_allclose(value, attained, rtol=1e-10)
    for seed in range(20):  # any other distribution on the support does no better
        other = jax.random.dirichlet(jax.random.PRNGKey(seed), jnp.ones(8), (6,))
        other = jnp.where(log_ref > -jnp.inf, other, 0.0)
        other = other / other.sum(-1, keepdims=True)
        log_other = jnp.log(other)
        candidate = jnp.sum(jnp.where(other > 0, other * x, 0.0), -1) - 0.8 * div.divergence(log_other, log_ref)
        assert np.all(np.asarray(candidate) <= np.asarray(value) + 1e-10)
    np.testing.assert_allclose(div.conjugate(x, 0.0, log_ref), jnp.max(jnp.where(log_ref > -jnp.inf, x, -jnp.inf), -1))


def test_bisection_conjugate_of_kl_is_log_sum_exp(x64):
    x, log_ref = random_problem(jax.random.PRNGKey(12), rows=6, actions=8)
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    np.testing.assert_allclose(bisection("kl").conjugate(x, 0.6, log_ref), KL.conjugate(x, 0.6, log_ref), rtol=1e-11)


# ---------------------------------------------------------------------------------------------
# Derivatives (implicit) against central finite differences
# ---------------------------------------------------------------------------------------------


def central_difference(fn, args, index, direction, h=1e-5):
    plus = list(args)
    minus = list(args)
    plus[index] = args[index] + h * direction
    minus[index] = args[index] - h * direction
    return (fn(*plus) - fn(*minus)) / (2 * h)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradients_match_finite_differences(x64, name):
    x, log_ref = random_problem(jax.random.PRNGKey(13), rows=4, actions=7)
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    temperature = jnp.asarray([0.5, 1.0, 2.0, 0.8])
    weights = jax.random.normal(jax.random.PRNGKey(14), x.shape)
    div = f_div(name)

    def policy_objective(q, t, lr):
        return jnp.sum(weights * jnp.exp(div.greedy_log_policy(q, t, lr)))

    def value_objective(q, t, lr):
        return jnp.sum(weights[:, 0] * div.conjugate(q, t, lr))

    key = jax.random.PRNGKey(15)
    for objective in (policy_objective, value_objective):
        grads = jax.grad(objective, argnums=(0, 1, 2))(x, temperature, log_ref)
        for index, (arg, grad) in enumerate(zip((x, temperature, log_ref), grads)):
            key, sub = jax.random.split(key)
            direction = jax.random.normal(sub, arg.shape)
            if index == 2:
                direction = jnp.where(jnp.isfinite(log_ref), direction, 0.0)
            predicted = float(jnp.sum(jnp.where(direction != 0, grad * direction, 0.0)))
            measured = float(central_difference(objective, (x, temperature, log_ref), index, direction))
            assert predicted == pytest.approx(measured, rel=1e-5, abs=1e-7), (objective.__name__, index)
    # the value's gradient in q is the policy (envelope theorem)
    p = jnp.exp(div.greedy_log_policy(x, temperature, log_ref))
    np.testing.assert_allclose(jax.grad(lambda q: div.conjugate(q, temperature, log_ref).sum())(x), p, atol=1e-12)


def test_jacobian_is_symmetric_and_kills_constants(x64):
    x, log_ref = random_problem(jax.random.PRNGKey(16), rows=1, actions=9, unit=True, holes=False)
    for name in ("alpha:1.5", "reverse_kl", "chi2"):
        div = f_div(name)
        jac = jax.jacobian(lambda q, d=div: jnp.exp(d.greedy_log_policy(q, 1.0, jnp.asarray(log_ref[0]))))(jnp.asarray(x[0]))
        np.testing.assert_allclose(jac, jac.T, atol=1e-12)
        np.testing.assert_allclose(jac @ np.ones(9), 0.0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Extreme inputs
# ---------------------------------------------------------------------------------------------

extreme_values = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 1e4, -1e4, 5e3, 1e4 - 1.0]),
    st.floats(-1e4, 1e4, allow_nan=False, width=32),
)
log_ref_values = st.sampled_from([0.0, 0.0, -1.0, -10.0, -np.inf, -np.inf])


def _jitted(name):
    div = f_div(name)

    def run(q, t, lr):
        log_p = div.greedy_log_policy(q, t, lr)
        value = div.conjugate(q, t, lr)
        grad = jax.grad(lambda z: jnp.sum(jnp.exp(div.greedy_log_policy(z, t, lr)) * jnp.arange(z.shape[-1])))(q)
        return log_p, value, grad

    return jax.jit(run)


JITTED = {name: _jitted(name) for name in ALL_NAMES}


@pytest.mark.parametrize("name", ALL_NAMES)
@given(
    q=hnp.arrays(np.float32, (3, 8), elements=extreme_values),
    log_ref=hnp.arrays(np.float32, (3, 8), elements=log_ref_values),
    temperature=st.sampled_from([1.0, 1e-3, 10.0]),
)
def test_extreme_logits_give_finite_distributions(name, q, log_ref, temperature):
    log_ref[:, 0] = 0.0  # a non-empty support
    log_p, value, grad = (np.asarray(v) for v in JITTED[name](jnp.asarray(q), temperature, jnp.asarray(log_ref)))
    p = np.exp(log_p)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.all(p[np.isinf(log_ref)] == 0)
    assert not np.any(np.isnan(log_p))
    div = f_div(name)
    if div.sparse:
        # p_j > 0 needs x_j - tau > f'(0) with tau >= x_max - f'(1 / r_max): beyond that gap p_j = 0 exactly.
        x = np.where(np.isinf(log_ref), -np.inf, q / temperature)
        x_max = x.max(-1, keepdims=True)
        r_top = np.max(np.where(x == x_max, np.exp(log_ref.astype(np.float64)), 0.0), -1, keepdims=True)
        gap = np.asarray(div.f_prime_of_log(jnp.asarray(-np.log(r_top))), np.float64) - div.f_prime_zero
        far = x < x_max - gap * (1 + 1e-4) - 1e-3
        assert np.all(p[far] == 0.0)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_partial_sort_agrees_with_the_full_sort(x64, alpha):
    x, log_ref = random_problem(jax.random.PRNGKey(21), rows=6, actions=300)
    x[1] = 0.0  # every action active: the partial sort is incomplete and the full sort takes over
    x[2] *= 1e-3
    x[3] *= 100.0  # a handful of active actions: the partial sort suffices
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    full, _ = fs.sorted_alpha_solution(alpha, x, log_ref, partial=None)
    for partial in (8, 64):
        p, _ = fs.sorted_alpha_solution(alpha, x, log_ref, partial=partial)
        np.testing.assert_allclose(p, full, atol=1e-14)
        p_small_row, _ = fs.sorted_alpha_solution(alpha, x[3:4], log_ref[3:4], partial=partial)  # top-k alone
        np.testing.assert_allclose(p_small_row, full[3:4], atol=1e-14)
    assert int(jnp.sum(full[1] > 0)) == int(jnp.sum(jnp.isfinite(log_ref[1])))
    assert int(jnp.sum(full[3] > 0)) < 8


# ---------------------------------------------------------------------------------------------
# Candidate pruning on long rows (the vocabulary-sized path)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alpha:1.5", "alpha:2", "alpha:3", "chi2"])
def test_pruned_solutions_on_long_rows_equal_the_unpruned_ones(x64, name):
    """Rows of 8192 entries take the block-candidate path; rows where it is not exact fall back."""
    actions = 8192
    assert fs._blocked(actions)
    x, log_ref = random_problem(jax.random.PRNGKey(5), rows=5, actions=actions)
    x[0] *= 10.0  # a few large scores: pruning is exact
    x[1] = 0.0  # every entry tied: every block is above the line, the full rows are searched
    x[2, ::7] += 40.0  # many separated winners spread over all blocks
    log_ref[3] = 0.0  # unit reference
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    div = bisection(name)
    unpruned, _ = fs.bisection_solution(div, x, log_ref, candidates=None)
    for rows in (slice(0, 5), slice(0, 1), slice(3, 4)):  # with and without a row that forces the fallback
        pruned, _ = fs.bisection_solution(div, x[rows], log_ref[rows])
        np.testing.assert_allclose(pruned, unpruned[rows], atol=1e-12)
        assert np.all(np.asarray(pruned)[np.asarray(unpruned[rows]) == 0] == 0)
    if name in ("alpha:1.5", "alpha:2"):
        alpha = float(name.split(":")[1])
        full, _ = fs.sorted_alpha_solution(alpha, x, log_ref, partial=None)
        np.testing.assert_allclose(full, unpruned, atol=1e-9)
        for rows in (slice(0, 5), slice(0, 1), slice(3, 4)):
            p, _ = fs.sorted_alpha_solution(alpha, x[rows], log_ref[rows])
            np.testing.assert_allclose(p, full[rows], atol=1e-14)
    assert int(jnp.sum(unpruned[1] > 0)) == int(jnp.sum(jnp.isfinite(log_ref[1])))


# alphas where (alpha - 1) * (-1 / (alpha - 1)) != -1 in float64
AWKWARD_ALPHAS = [float(a) for a in np.linspace(1.02, 3.0, 40)[[1, 9, 15, 27, 33]]]


@pytest.mark.parametrize("alpha", [1.3, 1.5, 2.0, 3.0, *AWKWARD_ALPHAS])
def test_arithmetic_inverse_derivative_equals_the_masked_one(x64, alpha):
    # AlphaDivergence writes g(s) = [1 + (alpha - 1) s]_+^(1 / (alpha - 1)) with max, no selects
    div = AlphaDivergence(alpha)
    low = div.f_prime_zero
    below = [-jnp.inf, -1e30, low - 1.0, np.nextafter(low, -np.inf)]
    s = jnp.asarray([*below, low, np.nextafter(low, 0.0), low / 2, 0.0, 1.0, 1e3])
    ours = np.asarray(div.inverse_derivative(s))
    masked = np.asarray(fs.inverse_derivative(div, s))
    assert np.all(np.isfinite(ours)) and np.all(ours >= 0.0)
    above = len(below) + 1
    np.testing.assert_allclose(ours[above:], masked[above:], rtol=1e-12, atol=1e-300)
    assert np.all(ours[: len(below)] == 0.0)  # exact zeros below f'(0+), whatever the rounding of -1 / (alpha - 1)
    # at the rounded f'(0+) itself g is 0 or the rounding residue of a (-1 / a) + 1
    assert ours[len(below)] <= (4 * np.finfo(np.float64).eps) ** (1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [float(a) for a in np.linspace(1.02, 3.0, 40)])
def test_alpha_outputs_are_exactly_zero_off_the_brentq_support(x64, alpha):
    """For every alpha > 1 (not only those where -1 / (alpha - 1) rounds well), entries below the
    line get exact zeros: a score far below it once received (1e-16)^(1 / (alpha - 1))."""
    z = np.sort(np.random.default_rng(0).normal(size=10) * 1.5)[::-1]

    def g(s):
        return np.maximum(1.0 + (alpha - 1.0) * s, 0.0) ** (1.0 / (alpha - 1.0))

    for t in (0.3, 1.0, 3.0):
        x = z / t
        p = np.exp(np.asarray(AlphaDivergence(alpha).greedy_log_policy(jnp.asarray(z), t, jnp.zeros(10))))
        tau = optimize.brentq(lambda tau, x=x: g(x - tau).sum() - 1.0, x.max() - 100.0, x.max() + 100.0, xtol=1e-14)
        expected = g(x - tau)
        np.testing.assert_allclose(p, expected, atol=1e-8)
        np.testing.assert_array_equal(p > 0, expected > 0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_support_shift_and_count_without_comparisons(x64, dtype):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(5, 40)) * 1e4, dtype)
    log_r = np.log(rng.uniform(size=(5, 40)))
    log_r[rng.uniform(size=(5, 40)) < 0.4] = -np.inf
    log_r[:, 0] = -1e30  # tiny but on the support
    log_r = jnp.asarray(log_r, dtype)
    support, shifted, x_max = fs._support_shift(x, log_r)
    masked = np.where(np.asarray(support), np.asarray(x), -np.inf)
    np.testing.assert_array_equal(np.asarray(x_max)[:, 0], masked.max(-1))
    np.testing.assert_array_equal(np.asarray(shifted), np.where(np.asarray(support), np.asarray(x - x_max), -np.inf))
    log_k = fs._reference_extent(log_r)[1]
    np.testing.assert_allclose(np.exp(np.asarray(log_k))[:, 0], np.asarray(support).sum(-1), rtol=1e-6)
    # ties count as halves, so the count is never below the strict one
    v = jnp.asarray([[1.0, 2.0, 2.0, -jnp.inf, 3.0]], dtype)
    np.testing.assert_array_equal(np.asarray(fs._count_above(v, jnp.asarray([[2.0]], dtype))), [2.0])


@pytest.mark.parametrize("seed", range(3))
def test_strided_blocks_with_the_largest_maxima_hold_the_largest_entries(seed):
    # integer scores: many ties, between entries and between block maxima
    rng = np.random.default_rng(seed)
    width, kept = 40, 12
    scores = jnp.asarray(rng.integers(0, 30, size=(6, fs.BLOCK * width)).astype(np.float32))
    block_max = fs._block_maxima(lambda v: v, scores)
    expected = np.asarray(scores).reshape(6, fs.BLOCK, width).max(axis=1)
    np.testing.assert_array_equal(np.asarray(block_max), expected)
    (candidates,) = fs._top_blocks(block_max, kept, scores)
    assert candidates.shape == (6, kept * fs.BLOCK)
    top_of_candidates = np.sort(np.asarray(candidates), -1)[:, ::-1][:, :kept]
    top_of_rows = np.sort(np.asarray(scores), -1)[:, ::-1][:, :kept]
    np.testing.assert_array_equal(top_of_candidates, top_of_rows)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_sort_cascade_on_long_rows_equals_the_full_sort(x64, alpha):
    """Rows whose active sets need the first partial sort, the second one, or the full sort."""
    rng = np.random.default_rng(3)
    actions = 8192
    x = np.full((3, actions), -10.0) + rng.normal(size=(3, actions)) * 1e-2
    log_ref = np.log(rng.uniform(0.5, 1.0, size=(3, actions)))
    for row, winners in enumerate([5, 60, 500]):  # active-set sizes around these
        x[row, rng.choice(actions, winners, replace=False)] = 10.0 + rng.normal(size=winners) * 1e-2
    x, log_ref = jnp.asarray(x), jnp.asarray(log_ref)
    full, _ = fs.sorted_alpha_solution(alpha, x, log_ref, partial=None)
    support = np.asarray(jnp.sum(full > 0, -1))
    small, large = fs.PARTIAL_SORT_SIZES
    assert support[0] < small <= support[1] < large <= support[2]
    for rows in (slice(0, 1), slice(0, 2), slice(0, 3), slice(1, 2)):
        p, _ = fs.sorted_alpha_solution(alpha, x[rows], log_ref[rows])
        np.testing.assert_allclose(p, full[rows], atol=1e-14)
        np.testing.assert_array_equal(np.asarray(p) > 0, np.asarray(full[rows]) > 0)


def test_sorted_solution_is_consistent_when_its_input_is_computed_in_the_same_jit():
    # float32 scores near 1e7 (spacing 1) made by a product inside the jit: the passes that select
    # the active set and the final pass must read the same rounded scores, or p stops summing to 1
    rng = np.random.default_rng(0)
    q = jnp.asarray(1e7 + rng.normal(size=(8, 4096)) * 4.0, jnp.float32)
    scale = jnp.float32(0.37)

    @jax.jit
    def solve(q, scale):
        return fs.sorted_alpha_solution(1.5, q * scale, jnp.zeros_like(q))[0]

    p = np.asarray(solve(q, scale), np.float64)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    x = np.asarray(jax.jit(lambda q, s: q * s)(q, scale))
    reference = np.asarray(fs.sorted_alpha_solution(1.5, jnp.asarray(x), jnp.zeros_like(q), partial=None)[0])
    np.testing.assert_allclose(p, reference, atol=1e-5)
    assert np.all(np.sum(p > 0, -1) > 1)  # several active entries: a sensitive case
