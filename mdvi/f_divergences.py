"""f-divergences for the regularized greedy step: one frozen dataclass per family.

An f-divergence with a reference measure ``r`` (Roulet et al. 2025, arXiv 2501.18537, Sec. 2) is

    D_f(p || r) = sum_j r_j f(p_j / r_j),     f convex, f(1) = 0.

Each family carries its generator ``f``, the derivative ``f'`` (as ``f_prime`` and, for numerical
range, ``f_prime_of_log(L) = f'(e^L)``), the inverse ``(f')^{-1}`` on the range
``(f_prime_zero, f_prime_sup) = (f'(0+), f'(+inf))``, the second derivative ``f''`` and the value
``f(0+)`` (``f_zero``). The domain facts the solver needs follow from these: ``p`` can have zeros
where ``r`` has mass (sparse outputs) exactly when ``f'(0+) > -inf`` (:attr:`FDivergence.sparse`).

Every family implements the :class:`mdvi.divergences.Divergence` interface: ``greedy_log_policy``
is the f-softargmax at a temperature, ``conjugate`` its value (the f-regularized soft value) and
``divergence`` the regularizer ``D_f(p || r)``, all with the action axis last and ``log_ref = -inf``
outside the support of ``r``. The greedy step maximises over distributions on that support, so
:meth:`FDivergence.divergence` is ``+inf`` when ``p`` puts mass outside it; this is the textbook
``D_f`` when ``f`` grows superlinearly (``f'(+inf) = +inf``) and the support-restricted regularizer
otherwise (reverse KL, the JSD family, squared Hellinger and alpha < 1 have ``f'(+inf) < inf``).

Solvers: ``solver="auto"`` (default) uses the exact closed form where one exists (KL: softmax;
alpha = 2 and alpha = 1.5, for any reference: sort-based sparsemax / 1.5-entmax; chi-squared, which is
twice the alpha = 2 divergence) and the bisection of :mod:`mdvi.f_softargmax` everywhere else;
``solver="bisection"`` forces the bisection (for checks and benchmarks).
"""

from __future__ import annotations

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp

from mdvi import f_softargmax as solvers
from mdvi.divergences import KL, Divergence, KLDivergence

Array = jax.Array

SOLVERS = ("auto", "closed_form", "bisection")


def _safe_positive(u: Array) -> Array:
    """``u`` where positive, 1 elsewhere (keeps unused ``where`` branches finite)."""
    return jnp.where(u > 0, u, 1.0)


@dataclasses.dataclass(frozen=True)
class FDivergence(Divergence):
    """Base class of the f-divergence families (generator, domain facts, greedy step, value).

    Attributes:
      solver: ``"auto"`` (closed form where one exists, else bisection), ``"closed_form"`` (error
        if there is none) or ``"bisection"``.
    """

    solver: str = dataclasses.field(default="auto", kw_only=True)

    # -- the generator -------------------------------------------------------------------------
    f_prime_zero: float = dataclasses.field(init=False, repr=False, default=-math.inf)
    f_prime_sup: float = dataclasses.field(init=False, repr=False, default=math.inf)
    f_zero: float = dataclasses.field(init=False, repr=False, default=math.inf)
    f_prime_one: float = dataclasses.field(init=False, repr=False, default=0.0)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver == "closed_form" and not self.has_closed_form:
            raise ValueError(f"solver='closed_form' but {self.name} has no closed form; use 'auto' or 'bisection'")
        low, high, at_zero = self._domain()
        object.__setattr__(self, "f_prime_zero", float(low))
        object.__setattr__(self, "f_prime_sup", float(high))
        object.__setattr__(self, "f_zero", float(at_zero))
        with jax.ensure_compile_time_eval():
            object.__setattr__(self, "f_prime_one", float(self.f_prime_of_log(jnp.zeros(()))))

    def _domain(self) -> tuple[float, float, float]:
        """``(f'(0+), f'(+inf), f(0+))``."""
        raise NotImplementedError(f"{type(self).__name__} must define its domain facts (abstract in FDivergence)")

    def f(self, u: Array) -> Array:
        """The generator ``f(u)``, ``u >= 0`` (``f(0)`` is its right limit)."""
        raise NotImplementedError(f"{type(self).__name__} must define f (abstract in FDivergence)")

    def f_prime_of_log(self, log_u: Array) -> Array:
        """``f'(exp(log_u))``, accurate where ``exp(log_u)`` would overflow or underflow."""
        raise NotImplementedError(f"{type(self).__name__} must define f_prime_of_log (abstract in FDivergence)")

    def f_prime(self, u: Array) -> Array:
        """``f'(u)`` (``f'(0+)`` at ``u = 0``)."""
        return self.f_prime_of_log(jnp.log(u))

    def f_prime_inverse(self, s: Array) -> Array:
        """``(f')^{-1}(s)`` for ``s`` inside the range ``(f_prime_zero, f_prime_sup)``."""
        raise NotImplementedError(f"{type(self).__name__} must define f_prime_inverse (abstract in FDivergence)")

    def f_second(self, u: Array) -> Array:
        """``f''(u)`` for ``u > 0``."""
        raise NotImplementedError(f"{type(self).__name__} must define f_second (abstract in FDivergence)")

    def inverse_derivative(self, s: Array) -> Array:
        """``g(s) = (f')^{-1}(s)`` extended to the real line: 0 at or below ``f'(0+)``, ``+inf`` at or above ``f'(+inf)``."""
        return solvers.inverse_derivative(self, s)

    def curvature_weights(self, p: Array, log_p: Array, log_ref: Array) -> Array:
        """``w_j = r_j / f''(p_j / r_j)`` on ``p > 0`` (0 elsewhere): the implicit derivative's weights."""
        return solvers.curvature_weights(self, p, log_p, log_ref)

    @property
    def sparse(self) -> bool:
        """Whether the f-softargmax can put exact zeros on the reference's support (``f'(0+) > -inf``)."""
        return self.f_prime_zero > -math.inf

    # -- solvers ---------------------------------------------------------------------------------
    @property
    def has_closed_form(self) -> bool:
        return False

    @property
    def uses_closed_form(self) -> bool:
        return self.has_closed_form and self.solver != "bisection"

    def closed_form(self, x: Array, log_ref: Array) -> tuple[Array, Array]:
        """``(p, log p)`` of the unit-temperature f-softargmax in closed form."""
        raise NotImplementedError(f"{self.name} has no closed-form f-softargmax; it is solved by bisection")

    # -- the Divergence interface ----------------------------------------------------------------
    def greedy_log_policy(self, q: Array, temperature, log_ref: Array) -> Array:
        """Log f-softargmax ``argmax_p <p, q> - temperature D_f(p || ref)`` (Roulet et al. 2025)."""
        return solvers.regularized_log_policy(self, q, temperature, log_ref)

    def conjugate(self, q: Array, temperature, log_ref: Array) -> Array:
        """``max_p <p, q> - temperature D_f(p || ref)`` (the f-regularized soft value)."""
        return solvers.regularized_value(self, q, temperature, log_ref)

    def divergence(self, log_p: Array, log_ref: Array) -> Array:
        """``D_f(p || ref) = sum_j ref_j f(p_j / ref_j)``; ``+inf`` if ``p`` leaves the support of ``ref``."""
        chex.assert_equal_shape([log_p, log_ref])
        support = log_ref > -jnp.inf
        active = log_p > -jnp.inf
        safe_log_ref = jnp.where(support, log_ref, 0.0)
        u = jnp.exp(jnp.where(active, log_p, 0.0) - safe_log_ref)
        terms = jnp.where(active, self.f(u), self.f_zero)
        total = jnp.sum(jnp.where(support, jnp.exp(safe_log_ref) * terms, 0.0), axis=-1)
        outside = jnp.any(active & ~support, axis=-1)
        return jnp.where(outside, jnp.inf, total)


# ---------------------------------------------------------------------------------------------
# Families
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KullbackLeibler(FDivergence):
    """KL as an f-divergence, ``f(u) = u log u``: ``D_f(p || r) = sum_j p_j log(p_j / r_j)``.

    The same divergence as :class:`mdvi.divergences.KLDivergence`, whose closed forms (softmax,
    log-sum-exp) it uses unless ``solver="bisection"``; it adds the generator the bisection needs.
    """

    @property
    def name(self) -> str:
        return "kl"

    def _domain(self):
        return -math.inf, math.inf, 0.0

    def f(self, u):
        return jax.scipy.special.xlogy(u, u)

    def f_prime_of_log(self, log_u):
        return log_u + 1.0

    def f_prime_inverse(self, s):
        return jnp.exp(s - 1.0)

    def f_second(self, u):
        return 1.0 / u

    def curvature_weights(self, p, log_p, log_ref):
        return p  # r / f''(p / r) = p

    @property
    def has_closed_form(self) -> bool:
        return True

    def closed_form(self, x, log_ref):
        log_p = KL.greedy_log_policy(x, 1.0, log_ref)
        return jnp.exp(log_p), log_p

    def greedy_log_policy(self, q, temperature, log_ref):
        if self.uses_closed_form:
            return KL.greedy_log_policy(q, temperature, log_ref)
        return super().greedy_log_policy(q, temperature, log_ref)

    def conjugate(self, q, temperature, log_ref):
        if self.uses_closed_form:
            return KL.conjugate(q, temperature, log_ref)
        return super().conjugate(q, temperature, log_ref)


@dataclasses.dataclass(frozen=True)
class ReverseKL(FDivergence):
    """Reverse KL, ``f(u) = -log u``: ``D_f(p || r) = sum_j r_j log(r_j / p_j)`` (``KL(r || p)``)."""

    @property
    def name(self) -> str:
        return "reverse_kl"

    def _domain(self):
        return -math.inf, 0.0, math.inf

    def f(self, u):
        return -jnp.log(u)

    def f_prime_of_log(self, log_u):
        return -jnp.exp(-log_u)

    def f_prime_inverse(self, s):
        return -1.0 / s

    def f_second(self, u):
        return 1.0 / u**2


@dataclasses.dataclass(frozen=True)
class ChiSquared(FDivergence):
    """Pearson chi-squared, ``f(u) = (u - 1)^2``: ``sum_j (p_j - r_j)^2 / r_j``; sparse outputs.

    Twice the alpha = 2 divergence, so its f-softargmax is the (reference-weighted) sparsemax of
    ``x / 2``, solved exactly by sorting.
    """

    @property
    def name(self) -> str:
        return "chi2"

    def _domain(self):
        return -2.0, math.inf, 1.0

    def f(self, u):
        return (u - 1.0) ** 2

    def f_prime_of_log(self, log_u):
        return 2.0 * jnp.expm1(log_u)

    def f_prime_inverse(self, s):
        return 1.0 + 0.5 * s

    def f_second(self, u):
        return jnp.full_like(u, 2.0)

    @property
    def has_closed_form(self) -> bool:
        return True

    def closed_form(self, x, log_ref):
        return solvers.sorted_alpha_solution(2.0, 0.5 * x, log_ref)


def _expm1_over(z: Array, a: float) -> Array:
    """``(exp(a z) - 1) / a``, equal to ``z`` at ``a = 0`` and accurate near it."""
    return z if a == 0.0 else jnp.expm1(a * z) / a


@dataclasses.dataclass(frozen=True)
class AlphaDivergence(FDivergence):
    """Alpha divergence, ``f(u) = (u^alpha - 1 - alpha (u - 1)) / (alpha (alpha - 1))``, ``alpha > 0``.

    Roulet et al. (2025, Sec. 3) recommend ``alpha = 1.5``. With the unit reference its
    f-softargmax is alpha-entmax (Peters et al. 2019): sparsemax at 2, 1.5-entmax at 1.5. Outputs
    are sparse for ``alpha > 1``. ``alpha = 1`` is the limit ``f(u) = u log u - u + 1`` (KL, whose
    greedy step is the softmax); every formula is written with ``expm1``/``log1p`` so that values
    near 1 approach it continuously.
    """

    alpha: float

    def __post_init__(self):
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
        object.__setattr__(self, "alpha", float(alpha))
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"alpha:{self.alpha:g}"

    def _domain(self):
        a = self.alpha - 1.0
        low = -1.0 / a if a > 0 else -math.inf
        high = math.inf if a >= 0 else -1.0 / a
        return low, high, 1.0 / self.alpha

    def f(self, u):
        a = self.alpha - 1.0
        safe = _safe_positive(u)
        value = (safe * _expm1_over(jnp.log(safe), a) - (safe - 1.0)) / self.alpha
        return jnp.where(u > 0, value, 1.0 / self.alpha)

    def f_prime_of_log(self, log_u):
        return _expm1_over(log_u, self.alpha - 1.0)

    def f_prime_inverse(self, s):
        a = self.alpha - 1.0
        # for alpha > 1 each form is 0 exactly at and below f'(0+) = -1 / a (the max is a no-op
        # inside the range), which extends (f')^{-1} to the line without comparisons
        if a == 1.0:
            return jnp.maximum(1.0 + s, 0.0)
        if a == 0.5:
            return jnp.maximum(1.0 + 0.5 * s, 0.0) ** 2
        if a == 0.0:
            return jnp.exp(s)
        return jnp.exp(jnp.log1p(jnp.maximum(a * s, -1.0)) / a)

    def f_second(self, u):
        return jnp.ones_like(u) if self.alpha == 2.0 else u ** (self.alpha - 2.0)

    def inverse_derivative(self, s):
        # alpha > 1: f_prime_inverse is already 0 at and below f'(0+), by a max rather than the
        # comparisons and selects of the generic extension (XLA:CPU does not vectorize those in
        # row reductions). Not by clamping s at f'(0+): (alpha - 1) * fl(-1 / (alpha - 1)) need not
        # round to -1, and a score far below the line would then get (1e-16)^(1 / (alpha - 1))
        # (up to 4e-10 at alpha = 2.7) instead of 0.
        if self.alpha <= 1.0:
            return super().inverse_derivative(s)
        return self.f_prime_inverse(s)

    def curvature_weights(self, p, log_p, log_ref):
        # r (p / r)^(2 - alpha), without transcendental functions where the power allows it, and
        # without comparisons (sign(p) is 1 on the active set, 0 off it): these weights feed row
        # sums, which XLA:CPU vectorizes only over arithmetic
        if self.alpha == 2.0:
            return jnp.sign(p) * jnp.exp(log_ref)
        if self.alpha == 1.5:
            return jnp.sqrt(p * jnp.exp(log_ref))  # 0 where p = 0
        return super().curvature_weights(p, log_p, log_ref)

    @property
    def has_closed_form(self) -> bool:
        return self.alpha in (1.5, 2.0)

    def closed_form(self, x, log_ref):
        if not self.has_closed_form:
            return super().closed_form(x, log_ref)
        return solvers.sorted_alpha_solution(self.alpha, x, log_ref)


@dataclasses.dataclass(frozen=True)
class GeneralizedJSD(FDivergence):
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2023), normalised by ``beta (1 - beta)``.

    GKD's ``JSD(beta)(p || r) = beta KL(p || m) + (1 - beta) KL(r || m)`` with
    ``m = beta p + (1 - beta) r`` is the f-divergence with
    ``f_beta(u) = beta u log u - (beta u + 1 - beta) log(beta u + 1 - beta)``. It vanishes at both
    ends of ``beta in [0, 1]``; this class uses ``f = f_beta / (beta (1 - beta))``, so that
    ``D_f = JSD(beta) / (beta (1 - beta))`` is continuous on the closed interval with the limits
    ``KL(p || r)`` at ``beta = 0`` and ``KL(r || p)`` at ``beta = 1`` (the endpoint conventions of
    GKD). GKD's value is ``beta (1 - beta) D_f``. Outputs are never sparse (``f'(0+) = -inf``).
    In closed form, with ``g = 1 - beta``:

        f'(u) = -log(1 + g (1/u - 1)) / g,     (f')^{-1}(s) = 1 / (1 + (exp(-g s) - 1) / g),
        f''(u) = 1 / (u (beta u + g)),         f'(+inf) = -log(beta) / g,   f(0) = -log(g) / beta.
    """

    beta: float

    def __post_init__(self):
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}")
        object.__setattr__(self, "beta", float(beta))
        super().__post_init__()

    @property
    def name(self) -> str:
        return f"jsd:{self.beta:g}"

    @property
    def scale(self) -> float:
        """Factor on the normalised generator (1 here; 1/4 for :class:`JensenShannon`)."""
        return 1.0

    def _domain(self):
        beta, gap = self.beta, 1.0 - self.beta
        if beta == 0.0:
            return -math.inf, math.inf, self.scale
        high = 1.0 if gap == 0.0 else -math.log(beta) / gap
        at_zero = math.inf if gap == 0.0 else -math.log1p(-beta) / beta
        return -math.inf, self.scale * high, self.scale * at_zero

    def f(self, u):
        beta, gap = self.beta, 1.0 - self.beta
        safe = _safe_positive(u)
        if beta <= 0.5:  # stable as beta -> 0
            mix = 1.0 + beta * (safe - 1.0)
            log_mix_over_beta = (safe - 1.0) if beta == 0.0 else jnp.log1p(beta * (safe - 1.0)) / beta
            value = (safe * jnp.log(safe) - mix * log_mix_over_beta) / gap
        else:  # stable as beta -> 1
            mix = safe + gap * (1.0 - safe)
            ratio = 1.0 / safe - 1.0
            log_mix_over_gap = ratio if gap == 0.0 else jnp.log1p(gap * ratio) / gap
            value = (-jnp.log(safe) - mix * log_mix_over_gap) / beta
        return self.scale * jnp.where(u > 0, value, self.f_zero / self.scale)

    def f_prime_of_log(self, log_u):
        gap = 1.0 - self.beta
        shifted = jnp.expm1(-log_u)  # 1/u - 1
        normalised = -shifted if gap == 0.0 else -jnp.log1p(gap * shifted) / gap
        return self.scale * normalised

    def f_prime_inverse(self, s):
        gap = 1.0 - self.beta
        s = s / self.scale
        return 1.0 / (1.0 - s) if gap == 0.0 else 1.0 / (1.0 + jnp.expm1(-gap * s) / gap)

    def f_second(self, u):
        return self.scale / (u * (self.beta * u + 1.0 - self.beta))


@dataclasses.dataclass(frozen=True)
class JensenShannon(GeneralizedJSD):
    """Jensen-Shannon divergence ``(KL(p || m) + KL(r || m)) / 2``, ``m = (p + r) / 2`` (values in ``[0, log 2]``).

    GKD's ``JSD(1/2)``: the generalized JSD at ``beta = 1/2`` with its textbook scale
    ``f(u) = (u log u - (u + 1) log((u + 1) / 2)) / 2``.
    """

    beta: float = 0.5

    def __post_init__(self):
        if self.beta != 0.5:
            raise ValueError(f"beta of JensenShannon is 1/2; use GeneralizedJSD(beta) for beta={self.beta!r}")
        super().__post_init__()

    @property
    def name(self) -> str:
        return "js"

    @property
    def scale(self) -> float:
        return 0.25


#: Newton steps of the Jeffreys inverse; from the starting point below they reach float64
#: round-off on the whole real line (checked in the tests).
JEFFREYS_NEWTON_STEPS = 8


@dataclasses.dataclass(frozen=True)
class Jeffreys(FDivergence):
    """Jeffreys divergence ``KL(p || r) + KL(r || p)``, ``f(u) = (u - 1) log u`` (the BOND objective's symmetric case).

    ``f'(u) = log u + 1 - 1/u`` has no elementary inverse (it is ``1 / W(e^(1 - s))`` with Lambert's
    ``W``); :meth:`f_prime_inverse` solves ``h(L) = L + 1 - e^-L = s`` for ``L = log u`` by Newton's
    method. ``h`` is increasing and concave, so Newton iterates started below the root increase
    monotonically to it; ``max(s - 1, -log(2 - s))`` is below the root since
    ``h(s - 1) = s - e^(1 - s) < s`` and ``h(-log(2 - s)) = s - 1 - log(2 - s) < s``.
    """

    @property
    def name(self) -> str:
        return "jeffreys"

    def _domain(self):
        return -math.inf, math.inf, math.inf

    def f(self, u):
        return (u - 1.0) * jnp.log(u)

    def f_prime_of_log(self, log_u):
        return log_u + 1.0 - jnp.exp(-log_u)

    def f_prime_inverse(self, s):
        below_two = s < 2.0
        start = jnp.where(below_two, -jnp.log(jnp.where(below_two, 2.0 - s, 1.0)), -jnp.inf)
        log_u = jnp.maximum(s - 1.0, start)
        for _ in range(JEFFREYS_NEWTON_STEPS):
            decay = jnp.exp(-log_u)
            log_u = log_u - (log_u + 1.0 - decay - s) / (1.0 + decay)
        return jnp.exp(log_u)

    def f_second(self, u):
        return (u + 1.0) / u**2


@dataclasses.dataclass(frozen=True)
class SquaredHellinger(FDivergence):
    """Squared Hellinger distance ``sum_j (sqrt(p_j) - sqrt(r_j))^2``, ``f(u) = (sqrt(u) - 1)^2``.

    Half the alpha = 1/2 divergence. ``f'(u) = 1 - u^(-1/2)`` has range ``(-inf, 1)``.
    """

    @property
    def name(self) -> str:
        return "hellinger"

    def _domain(self):
        return -math.inf, 1.0, 1.0

    def f(self, u):
        return (jnp.sqrt(u) - 1.0) ** 2

    def f_prime_of_log(self, log_u):
        return -jnp.expm1(-0.5 * log_u)

    def f_prime_inverse(self, s):
        return 1.0 / (1.0 - s) ** 2

    def f_second(self, u):
        return 0.5 * u ** (-1.5)


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

#: Parameter-free families by registry name.
PLAIN_FAMILIES = {
    "reverse_kl": ReverseKL,
    "chi2": ChiSquared,
    "js": JensenShannon,
    "jeffreys": Jeffreys,
    "hellinger": SquaredHellinger,
}
#: Families with one parameter, written ``"family:value"``.
PARAMETRIC_FAMILIES = {"alpha": AlphaDivergence, "jsd": GeneralizedJSD}


def parse_f_divergence(name: str) -> FDivergence:
    """``"reverse_kl"``, ``"chi2"``, ``"js"``, ``"jeffreys"``, ``"hellinger"``, ``"alpha:1.5"``, ``"jsd:0.1"``."""
    if not isinstance(name, str):
        raise ValueError(f"divergence must be a name or a Divergence, got {name!r}")
    family, sep, parameter = name.strip().partition(":")
    if not sep and family in PLAIN_FAMILIES:
        return PLAIN_FAMILIES[family]()
    if family in PARAMETRIC_FAMILIES:
        if not sep:
            raise ValueError(f"divergence {name!r} needs a parameter, e.g. '{family}:0.5'")
        try:
            value = float(parameter)
        except ValueError:
            raise ValueError(f"divergence {name!r}: parameter {parameter!r} is not a number") from None
        return PARAMETRIC_FAMILIES[family](value)
    known = ", ".join(["kl", *PLAIN_FAMILIES, *(f"{k}:<value>" for k in PARAMETRIC_FAMILIES)])
    raise ValueError(f"unknown divergence {name!r}; known divergences: {known}")


def as_f_divergence(divergence: Divergence) -> FDivergence:
    """The f-divergence form of a divergence (``KLDivergence`` becomes :class:`KullbackLeibler`)."""
    if isinstance(divergence, FDivergence):
        return divergence
    if isinstance(divergence, KLDivergence):
        return KullbackLeibler()
    raise ValueError(f"divergence {getattr(divergence, 'name', divergence)!r} is not an f-divergence")
