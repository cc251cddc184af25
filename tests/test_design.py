"""G-optimal design: Kiefer-Wolfowitz on known cases, invariance, rank deficiency, support,
and its certificate checked against an independent (multiplicative) algorithm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from theory.design import column_space, design_weights, optimal_design


def _logdet_information(features, weights):
    information = (features * weights[:, None]).T @ features
    return np.linalg.slogdet(information)[1]


def _multiplicative_design(features, iterations):
    """Titterington's multiplicative algorithm pi_i <- pi_i w_i / d: slow but independent."""
    n, d = features.shape
    pi = np.full(n, 1.0 / n)
    for _ in range(iterations):
        information = (features * pi[:, None]).T @ features
        leverage = np.einsum("ij,jk,ik->i", features, np.linalg.inv(information), features)
        pi = pi * leverage / d
    return pi


@pytest.fixture(scope="module")
def gaussian():
    return np.random.default_rng(0).standard_normal((2000, 20))


def test_gaussian_features_are_certified_to_one_plus_1e3(gaussian):
    design = optimal_design(gaussian, tolerance=1e-3)
    assert design.converged and design.rank == 20
    assert design.g_over_d <= 1 + 1e-3
    # leverages recomputed independently with numpy's inverse
    information = (gaussian * design.weights[:, None]).T @ gaussian
    leverage = np.einsum("ij,jk,ik->i", gaussian, np.linalg.inv(information), gaussian)
    assert leverage.max() <= 20 * (1 + 1e-3) + 1e-9
    # sum_i pi_i w_i = d for every design, and support points sit at leverage ~ d
    np.testing.assert_allclose(design.weights @ leverage, 20, rtol=1e-10)
    assert leverage[design.support].min() > 20 * (1 - 0.1)
    assert len(design.support) <= 20 * 21 // 2
    assert np.isclose(design.weights.sum(), 1.0) and np.all(design.weights >= 0)
    assert design.gap_bound == pytest.approx(20 * np.log(design.g_over_d))


def test_certificate_bounds_the_log_det_gap_of_an_independent_solver():
    features = np.random.default_rng(1).standard_normal((300, 6))
    loose = optimal_design(features, tolerance=5e-2)
    tight = optimal_design(features, tolerance=1e-6)
    reference = _multiplicative_design(features, 3000)
    best = max(_logdet_information(features, reference), _logdet_information(features, tight.weights))
    for design in (loose, tight):
        gap = best - _logdet_information(features, design.weights)
        assert -1e-9 <= gap <= design.gap_bound + 1e-9, (gap, design.gap_bound)
    # the multiplicative algorithm never beats the tight design by more than its certificate
    assert _logdet_information(features, reference) <= _logdet_information(features, tight.weights) + tight.gap_bound + 1e-12


def test_one_hot_features_give_the_uniform_design_at_once():
    features = np.eye(9)[np.random.default_rng(2).permutation(9)]
    design = optimal_design(features)
    np.testing.assert_allclose(design.weights, np.full(9, 1 / 9), rtol=1e-12)
    assert design.iterations == 0
    assert design.g_over_d == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(design.leverage, 9.0, rtol=1e-12)


def test_design_is_invariant_under_invertible_linear_maps():
    rng = np.random.default_rng(3)
    features = rng.standard_normal((400, 8))
    B = rng.standard_normal((8, 8)) + 3 * np.eye(8)
    base = optimal_design(features, tolerance=1e-8)
    mapped = optimal_design(features @ B.T, tolerance=1e-8)  # phi -> B phi for every row
    np.testing.assert_allclose(mapped.leverage, base.leverage, atol=1e-6)
    np.testing.assert_allclose(mapped.weights, base.weights, atol=1e-6)
    shift = _logdet_information(features @ B.T, mapped.weights) - _logdet_information(features, base.weights)
    assert shift == pytest.approx(2 * np.linalg.slogdet(B)[1], abs=1e-6)


def test_rank_deficient_features_are_designed_in_their_column_space():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 10))  # rank 6 in R^10
    design = optimal_design(features, tolerance=1e-3)
    assert design.rank == 6 and design.dim == 10 and design.converged
    # leverages by the pseudo-inverse in R^10 (an independent computation): max ~ 6, not ~ 10
    information = (features * design.weights[:, None]).T @ features
    leverage = np.einsum("ij,jk,ik->i", features, np.linalg.pinv(information, rcond=1e-10), features)
    assert 6 <= leverage.max() <= 6 * (1 + 1e-3) + 1e-6
    np.testing.assert_allclose(design.weights @ leverage, 6.0, rtol=1e-8)
    # a ridge would hide the deficiency and break Kiefer-Wolfowitz: sum pi w < 6
    ridge = np.einsum("ij,jk,ik->i", features, np.linalg.inv(information + 1e-3 * np.eye(10)), features)
    assert design.weights @ ridge < 6 - 1e-6


def test_support_never_exceeds_d_choose_2_even_on_a_circle():
    # on the unit circle every design with V = I/2 is optimal: many points could carry weight
    angles = np.linspace(0, 2 * np.pi, 181)[:-1]
    design = optimal_design(np.c_[np.cos(angles), np.sin(angles)], tolerance=1e-6)
    assert len(design.support) <= 3 and design.converged
    for d in (3, 5):
        features = np.random.default_rng(d).standard_normal((500, d))
        design = optimal_design(features, tolerance=1e-4)
        assert len(design.support) <= d * (d + 1) // 2


def test_weighted_design_satisfies_the_weighted_kiefer_wolfowitz_identity():
    rng = np.random.default_rng(5)
    features = rng.standard_normal((200, 5))
    f = rng.uniform(0.01, 10.0, 200)
    design = optimal_design(features, f, tolerance=1e-4)
    information = np.einsum("i,ij,ik->jk", design.weights * f, features, features)
    weighted_leverage = f * np.einsum("ij,jk,ik->i", features, np.linalg.inv(information), features)
    assert weighted_leverage.max() <= 5 * (1 + 1e-4) + 1e-9
    # scaling every weight by a constant changes nothing
    scaled = optimal_design(features, 7.0 * f, tolerance=1e-4)
    np.testing.assert_allclose(scaled.weights, design.weights, atol=1e-8)


def test_counts_follow_the_lattimore_szepesvari_rule():
    design = optimal_design(np.eye(4))
    np.testing.assert_array_equal(design.counts(10), [3, 3, 3, 3])
    np.testing.assert_array_equal(design.counts(8), [2, 2, 2, 2])
    with pytest.raises(ValueError, match="total"):
        design.counts(0)


@pytest.mark.parametrize(
    "features, weights, message",
    [
        (np.ones(5), None, "shape"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), None, "NaN"),
        (np.zeros((4, 3)), None, "all zero"),
        (np.eye(3), np.array([1.0, 0.0, 1.0]), "weights must be finite and > 0"),
        (np.eye(3), np.ones(2), "weights must have shape"),
    ],
)
def test_bad_input_is_rejected(features, weights, message):
    with pytest.raises(ValueError, match=message):
        optimal_design(features, weights)


def test_jax_core_is_vmappable_and_matches_the_host_design(x64):
    rng = np.random.default_rng(6)
    batch = rng.standard_normal((3, 60, 4))
    states = jax.jit(jax.vmap(lambda x: design_weights(x, 1e-6)))(jnp.asarray(batch))
    for i in range(3):
        host = optimal_design(batch[i], tolerance=1e-6)
        np.testing.assert_allclose(np.asarray(states.weights[i]), host.weights, atol=1e-6)
        assert float(states.g_over_d[i]) <= 1 + 1e-6


def test_column_space_keeps_the_rank():
    rng = np.random.default_rng(7)
    features = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 7))
    coordinates, basis = column_space(features)
    assert coordinates.shape == (50, 3) and basis.shape == (7, 3)
    np.testing.assert_allclose(coordinates.T @ coordinates, np.eye(3), atol=1e-12)
    # the coordinates span the column space of the features (nothing is lost) ...
    np.testing.assert_allclose(coordinates @ (coordinates.T @ features), features, atol=1e-10)
    # ... and features @ basis is a full-rank parametrisation of that space
    projected = features @ basis
    assert np.linalg.matrix_rank(projected) == 3
    np.testing.assert_allclose(coordinates @ (coordinates.T @ projected), projected, atol=1e-10)


def test_column_scaling_does_not_change_the_design():
    # columns in wildly different units (1e150 and 1e-150) are the same feature set up to
    # phi -> B phi with diagonal B: same rank, same design, same leverages
    rng = np.random.default_rng(8)
    features = rng.standard_normal((120, 3))
    base = optimal_design(features, tolerance=1e-8)
    scaled = optimal_design(features * np.array([1e150, 1.0, 1e-150]), tolerance=1e-8)
    assert base.rank == scaled.rank == 3
    np.testing.assert_allclose(scaled.weights, base.weights, atol=1e-8)
    np.testing.assert_allclose(scaled.leverage, base.leverage, atol=1e-8)
    coordinates, basis = column_space(features * np.array([1e150, 1.0, 1e-150]))
    assert coordinates.shape == (120, 3) and np.all(np.isfinite(basis))


# --- design at scale: working set, Harman-Pronzato compaction, float32 working precision -------


def _independent_leverages(features, weights, f=None):
    """Leverages of every row by numpy's pseudo-inverse (float64), independently of the module."""
    x = np.asarray(features, dtype=np.float64)
    if f is not None:
        x = np.sqrt(f)[:, None] * x
    information = (x * weights[:, None]).T @ x
    return np.einsum("ij,jk,ik->i", x, np.linalg.pinv(information, rcond=1e-10), x)


def _assert_certificate(design, features, tolerance, f=None):
    leverage = _independent_leverages(features, design.weights, f)
    r = design.rank
    assert design.converged and design.g_over_d <= 1 + tolerance
    assert leverage.max() <= r * (1 + tolerance) * (1 + 1e-9)
    np.testing.assert_allclose(design.leverage, leverage, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(design.weights @ leverage, r, rtol=1e-8)
    assert np.isclose(design.weights.sum(), 1.0) and np.all(design.weights >= 0)
    assert len(design.support) <= r * (r + 1) // 2


@pytest.mark.parametrize("kind", ["gaussian", "student_t"])
def test_compaction_never_removes_a_point_of_the_optimal_support(kind):
    rng = np.random.default_rng(10)
    # d = 20: the support at the first Harman-Pronzato pass does not yet hold the optimal one, so
    # certifying a future support point would show (in the final design or in g)
    n, d = 4000, 20
    features = rng.standard_normal((n, d)) if kind == "gaussian" else rng.standard_t(3, (n, d))
    compacted = optimal_design(features, tolerance=1e-3, compaction=True, working_set=128)
    whole = optimal_design(features, tolerance=1e-3, compaction=False)
    tight = optimal_design(features, tolerance=1e-9, compaction=False, max_iterations=200_000)
    _assert_certificate(compacted, features, 1e-3)
    _assert_certificate(whole, features, 1e-3)
    assert tight.converged
    assert abs(compacted.g_over_d - whole.g_over_d) <= 1e-3
    # compaction happened (the test is not vacuous) ...
    removed = compacted.certified
    assert removed.shape == (n,) and removed.sum() > n // 2
    # ... and no removed row carries weight at the optimum, nor reaches leverage d there
    assert not np.any(tight.weights[removed] > 0)
    assert tight.leverage[removed].max() < d
    # the certificate transfers: log det of the compacted design is within its bound of the optimum
    gap = _logdet_information(features, tight.weights) - _logdet_information(features, compacted.weights)
    assert -1e-9 <= gap <= compacted.gap_bound + 1e-9


def test_float32_working_precision_keeps_the_float64_certificate():
    rng = np.random.default_rng(11)
    features = rng.standard_t(4, (8000, 10)).astype(np.float32)
    single = optimal_design(features, tolerance=1e-3, compaction=True, working_set=256, precision="float32")
    double = optimal_design(features, tolerance=1e-3, compaction=True, working_set=256, precision="float64")
    for design in (single, double):
        _assert_certificate(design, features, 1e-3)
    assert abs(single.g_over_d - double.g_over_d) <= 1e-3
    # the certificate is float64: recomputing it from the float32 rows in float64 agrees to 1e-9
    assert single.leverage.dtype == np.float64


def test_compacted_path_handles_rank_deficiency_weights_and_column_units():
    rng = np.random.default_rng(12)
    # rank 6 in R^10 with columns in units 1e100 apart: the TSQR branch of the column map
    features = rng.standard_normal((9000, 6)) @ rng.standard_normal((6, 10))
    features *= np.logspace(-50, 50, 10)
    f = rng.uniform(0.1, 10.0, 9000)
    compacted = optimal_design(features, f, tolerance=1e-3, compaction=True, working_set=128)
    whole = optimal_design(features, f, tolerance=1e-3, compaction=False)
    assert compacted.rank == whole.rank == 6 and compacted.dim == 10
    assert compacted.converged and compacted.g_over_d <= 1 + 1e-3
    assert abs(compacted.g_over_d - whole.g_over_d) <= 1e-3
    np.testing.assert_allclose(compacted.weights @ compacted.leverage, 6.0, rtol=1e-8)
    # weighted leverages, independently, in the well-scaled coordinates of the column space
    coordinates, _ = column_space(np.sqrt(f)[:, None] * features)
    information = (coordinates * compacted.weights[:, None]).T @ coordinates
    leverage = np.einsum("ij,jk,ik->i", coordinates, np.linalg.inv(information), coordinates)
    np.testing.assert_allclose(compacted.leverage, leverage, rtol=1e-6, atol=1e-9)


def test_small_sets_keep_the_uncompacted_path_and_bad_options_are_named(gaussian):
    design = optimal_design(gaussian)  # n = 2000 <= 4 * working_set: designed at once
    assert design.certified is not None and design.certified.shape == (2000,)
    forced = optimal_design(gaussian, compaction=True, working_set=256)
    assert forced.converged and abs(forced.g_over_d - design.g_over_d) <= 1e-3
    with pytest.raises(ValueError, match="precision"):
        optimal_design(gaussian, precision="float16")
    with pytest.raises(ValueError, match="working_set"):
        optimal_design(gaussian, working_set=20)
