"""Deep MDVI with a generative model: the "oracle" loop of Kitamura et al. (2023, Sec. 7.2.1).

Each outer iteration ``k`` (arXiv 2305.13185, the Maze experiment):

1. refresh the targets: ``Qbar_{k-1} <- Qbar_k``, ``Qbar_k <- Q`` (and, with DVW, freeze the
   variance network);
2. draw ``M`` next states ``y_m ~ P(. | s, a)`` for every pair and average the targets

       y(s, a) = r(s, a) + b(s, a) + gamma (1/M) sum_m V(Qbar_k)(y_m),

   with ``V = max`` and ``b = 0`` (DQN-style, value iteration) or ``V`` the soft value at
   temperature ``tau_M = tau + kappa`` and ``b = alpha_M clip(tau_M log pibar(a|s), l0, 0)``
   (M-DQN-style, Vieillard et al. 2020, Eq. 4; the MDVI step with KL weight ``tau`` and entropy
   weight ``kappa``);
3. take ``inner_steps`` full-batch Adam steps on the weighted regression
   ``mean_{s,a} f(s, a) (Q(s, a) - y(s, a))^2``.

Regression weights ``f``: ``1``; the oracle ``f* = H / (Var_P V* + H)`` (the paper's oracle
weight, computed exactly); or Deep Variance Weighting in the paper's maze variant,
``f = max(eta / (sigma^2(s, a) + b + eps_w), f_min)`` with a log-variance network ``sigma^2``
fitted (Huber) to ``mean_m (y^{k-1}_m(s, a) - Qbar_k(s, a))^2`` (the per-sample targets built
from ``Qbar_{k-1}``), a learned scale ``eta`` that normalises the mean weight to 1 and a
learned floor ``b -> sqrt(max sigma^2)`` that plays the role of the ``+H`` in ``f*``.

The Q-network is an MLP (two hidden layers of 128 by default) on the state's feature vector,
last layer initialised at zero. :func:`make_train` returns ``train(problem, key)``: pure,
jittable and ``vmap``-able over mazes (``problem``) and seeds (``key``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from envs import generative
from envs.tabular import TabularModel
from mdvi.regularized import Regularization, scaled_log_policy, soft_value
from mdvi.sweep import nested_vmap
from mdvi.tabular import as_model, expected_next, greedy_policy, optimal_values, policy_evaluation

Array = jax.Array

WEIGHTINGS = ("uniform", "oracle", "dvw")
TARGETS = ("dqn", "mdqn")


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


class Hyperparameters(NamedTuple):
    """A variant's traced settings (stack several to ``vmap`` over variants in one program)."""

    temperature: Array  # tau_M = tau + kappa of the greedy step (0: hard max, DQN)
    munchausen_alpha: Array  # alpha_M = tau / (tau + kappa) (0 for DQN: no bonus)
    oracle: Array  # 1: regress with f*, 0: with f = 1 (ignored by DVW)


@dataclasses.dataclass(frozen=True)
class DeepMDVIConfig:
    """One variant of deep MDVI with a generative model (defaults: the paper's maze settings)."""

    target: Literal["dqn", "mdqn"] = "dqn"
    """dqn: hard-max target (tau = kappa = 0); mdqn: KL + entropy (Munchausen) target."""
    weighting: Literal["uniform", "oracle", "dvw"] = "uniform"
    """Regression weights: f = 1, the oracle f*, or DVW."""
    samples_per_pair: int = 3
    """M: generative-model draws per pair and outer iteration."""
    outer_iterations: int = 20_000
    """K: outer iterations (target refreshes)."""
    inner_steps: int = 100
    """Full-batch Adam steps per outer iteration."""
    evaluations: int = 100
    """Exact diagnostics this many times, every outer_iterations / evaluations iterations."""
    discount: float = 0.995
    """gamma of the targets (the environment's, unless deliberately changed)."""
    learning_rate: float = 1e-3
    hidden: tuple[int, ...] = (128, 128)
    entropy_weight: float = 1e-5
    """kappa of the M-DQN-style target; the KL weight is tau = gamma kappa / (1 - gamma) (alpha = gamma)."""
    log_clip_min: float = -1.0
    """l0, the lower clip of the Munchausen bonus (-inf: no clip)."""
    weight_min: float = 0.1
    """DVW: lower clip f_min of the weights."""
    weight_epsilon: float = 0.1
    """DVW: eps_w added to the variance."""
    variance_learning_rate: float = 1e-4
    scale_learning_rate: float = 5e-3
    """DVW: Adam learning rate of log eta and log b."""

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        for name in ("samples_per_pair", "outer_iterations", "inner_steps", "evaluations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.outer_iterations % self.evaluations:
            raise ValueError(
                f"outer_iterations ({self.outer_iterations}) must be a multiple of evaluations ({self.evaluations})"
            )
        if not 0.0 <= self.discount < 1.0:
            raise ValueError(f"discount must lie in [0, 1), got {self.discount}")
        if not self.entropy_weight > 0:
            raise ValueError(f"entropy_weight must be > 0, got {self.entropy_weight}")
        if not self.log_clip_min < 0:
            raise ValueError(f"log_clip_min must be < 0, got {self.log_clip_min}")

    @property
    def eval_interval(self) -> int:
        return self.outer_iterations // self.evaluations

    @property
    def static_part(self) -> DeepMDVIConfig:
        """The fields that shape the compiled program: variants with equal ``static_part`` share it.

        Only DVW changes the program; the target (DQN / M-DQN) and f = 1 vs f* enter through
        :meth:`hyperparameters`, so those four variants run as one ``vmap``.
        """
        return dataclasses.replace(self, target="dqn", weighting="dvw" if self.weighting == "dvw" else "uniform")

    def hyperparameters(self) -> Hyperparameters:
        """The traced part of the variant: ``tau_M``, ``alpha_M`` (from :meth:`regularization`) and f* or 1."""
        regularization = self.regularization()
        return Hyperparameters(
            temperature=jnp.asarray(regularization.temperature, jnp.float32),
            munchausen_alpha=jnp.asarray(regularization.munchausen_alpha, jnp.float32),
            oracle=jnp.asarray(float(self.weighting == "oracle"), jnp.float32),
        )

    def regularization(self) -> Regularization:
        """DQN: ``tau = kappa = 0`` (hard max). M-DQN: ``tau = gamma kappa / (1 - gamma)``, so ``alpha = gamma``."""
        if self.target == "dqn":
            return Regularization.from_kl_entropy(0.0, 0.0)
        kl = self.discount * self.entropy_weight / (1.0 - self.discount)
        return Regularization.from_kl_entropy(kl, self.entropy_weight)


# ---------------------------------------------------------------------------------------------
# Exact quantities of the problem
# ---------------------------------------------------------------------------------------------


class Problem(NamedTuple):
    """What one run needs of a tabular problem (a pytree: stack several to ``vmap`` over them)."""

    features: Array  # [S, d] observation of each state
    model: TabularModel  # successor lists, the environment's discount
    q_star: Array  # [S, A] Q* under the environment's discount
    oracle_weights: Array  # [S, A] f* = H / (Var_P V* + H)


def next_value_variance(model: TabularModel, values: Array) -> Array:
    """``Var_{s' ~ P(.|s, a)} v(s') = P v^2 - (P v)^2`` per pair, clipped at 0 (rounding)."""
    mean = expected_next(model, values)
    return jnp.maximum(expected_next(model, values**2) - mean**2, 0.0)


def oracle_weights(model: TabularModel, v_star: Array, horizon: float) -> Array:
    """The oracle weight of Kitamura et al. (2023), ``f* = H / (Var_P V* + H)``, per pair."""
    return horizon / (next_value_variance(model, v_star) + horizon)


def prepare_problem(mdp, features, dtype=jnp.float32) -> Problem:
    """Exact ``Q*`` (policy iteration) and ``f*`` in float64, then cast to ``dtype`` for training.

    ``H = 1 / (1 - gamma)`` with the MDP's own discount (the released code took H from the
    solver's discount, 0.99, not the environment's 0.995).
    """
    features = np.asarray(features)
    chex.assert_shape(features, (mdp.num_states, None))
    with jax.enable_x64(True):
        model64 = mdp.model("sparse", jnp.float64)
        optimum = optimal_values(model64)
        weights = oracle_weights(model64, optimum.v, mdp.horizon)
        q_star, weights = np.asarray(optimum.q), np.asarray(weights)
    return Problem(
        features=jnp.asarray(features, dtype),
        model=as_model(mdp.model("sparse", dtype)),
        q_star=jnp.asarray(q_star, dtype),
        oracle_weights=jnp.asarray(weights, dtype),
    )


def stack_problems(problems) -> Problem:
    """One pytree with a leading maze axis (all problems must have the same shapes)."""
    shapes = {jax.tree.map(lambda x: x.shape, p).__repr__() for p in problems}
    if len(shapes) != 1:
        raise ValueError(f"problems must share their shapes to be stacked, got {len(shapes)} different ones")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *problems)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def bootstrap_values(q_bar: Array, hp: Hyperparameters) -> Array:
    """``V(Qbar)[S]``: the max (``tau_M = 0``, DQN) or the soft value at ``tau_M`` (M-DQN), from the core."""
    return soft_value(q_bar, hp.temperature)


def munchausen_bonus(q_bar: Array, hp: Hyperparameters, log_clip_min: float) -> Array:
    """``alpha_M clip(tau_M log pibar(a|s), l0, 0)`` for every pair (zero for DQN: ``alpha_M = 0``).

    ``tau_M log pibar = Qbar - V(Qbar)`` (the core's ``scaled_log_policy``) stays finite at ``tau_M = 0``.
    """
    scaled = scaled_log_policy(q_bar, hp.temperature)
    return hp.munchausen_alpha * jnp.clip(scaled, log_clip_min, 0.0)


def sampled_next_mean(values: Array, next_states: Array) -> Array:
    """``(1/M) sum_m v(y_m)`` from draws ``next_states[S, A, M]``."""
    return jnp.mean(values[next_states], axis=-1)


def regression_targets(
    q_bar: Array,
    reward: Array,
    discount,
    next_mean,
    hp: Hyperparameters,
    log_clip_min: float = -1.0,
) -> Array:
    """``y = r + b(Qbar) + gamma E[V(Qbar)(s')]``, the expectation given by ``next_mean(v) -> [S, A]``.

    ``next_mean`` is :func:`sampled_next_mean` on the generative-model draws, or the exact
    ``expected_next(model, .)``.
    """
    chex.assert_equal_shape([q_bar, reward])
    bonus = munchausen_bonus(q_bar, hp, log_clip_min)
    return reward + bonus + discount * next_mean(bootstrap_values(q_bar, hp))


def per_sample_targets(q_bar, reward, discount, next_states, hp: Hyperparameters, log_clip_min):
    """``y_m(s, a)`` for every draw: ``[S, A, M]`` (the DVW variance target needs them one by one)."""
    values = bootstrap_values(q_bar, hp)[next_states]
    bonus = munchausen_bonus(q_bar, hp, log_clip_min)
    return (reward + bonus)[..., None] + discount * values


# ---------------------------------------------------------------------------------------------
# Networks and DVW weights
# ---------------------------------------------------------------------------------------------


def mlp(num_outputs: int, hidden: tuple[int, ...] = (128, 128)) -> hk.Transformed:
    """ReLU MLP on features ``[B, d] -> [B, num_outputs]``; the last layer starts at zero (as in the paper)."""

    def forward(x: Array) -> Array:
        for i, width in enumerate(hidden):
            x = jax.nn.relu(hk.Linear(width, name=f"hidden_{i}")(x))
        return hk.Linear(num_outputs, w_init=jnp.zeros, b_init=jnp.zeros, name="head")(x)

    return hk.without_apply_rng(hk.transform(forward))


class DVWParams(NamedTuple):
    log_scale: Array  # log eta
    log_floor: Array  # log b


def dvw_weights(dvw: DVWParams, variance: Array, weight_epsilon, weight_min) -> Array:
    """Maze DVW weights ``max(eta / (sigma^2 + b + eps_w), f_min)`` (no gradient)."""
    eta, floor = jnp.exp(dvw.log_scale), jnp.exp(dvw.log_floor)
    return jax.lax.stop_gradient(jnp.maximum(eta / (variance + floor + weight_epsilon), weight_min))


def dvw_scale_floor_loss(dvw: DVWParams, variance: Array, weight_epsilon) -> Array:
    """``(mean eta / (sigma^2 + sg(b) + eps_w) - 1)^2 + (sqrt(max sigma^2) - b)^2``.

    The first term normalises the mean (unclipped) weight to 1; the second pulls the floor ``b``
    to the largest standard deviation, the learned analogue of ``H`` in ``f*``.
    """
    eta, floor = jnp.exp(dvw.log_scale), jnp.exp(dvw.log_floor)
    scale_loss = (jnp.mean(eta / (variance + jax.lax.stop_gradient(floor) + weight_epsilon)) - 1.0) ** 2
    floor_loss = (jnp.sqrt(jnp.max(variance)) - floor) ** 2
    return scale_loss + floor_loss


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


class TrainState(NamedTuple):
    q_params: hk.Params
    q_opt_state: optax.OptState
    target_params: hk.Params  # Qbar_k
    prev_target_params: hk.Params  # Qbar_{k-1} (DVW's variance target)
    variance_params: hk.Params  # log-variance network (DVW)
    variance_opt_state: optax.OptState
    frozen_variance_params: hk.Params  # the variance network at the last refresh (gives the weights)
    dvw: DVWParams
    dvw_opt_state: optax.OptState
    iteration: Array  # outer iterations done


class Diagnostics(NamedTuple):
    """Exact diagnostics after an outer iteration (one entry per evaluation)."""

    gap: Array  # ||q* - q^{pi_k}||_inf / max q*, pi_k greedy in Q
    regression_error: Array  # ||Q - y_exact||_inf, y_exact the target of Qbar with the exact expectation
    regression_rmse: Array  # RMS of the same over all pairs
    loss: Array  # the weighted regression loss at the last inner step
    weight_correlation: Array  # Pearson correlation of the weights f with f* over all pairs
    weight_ratio: Array  # mean over pairs of (f / mean f) / (f* / mean f*)
    weight_gap: Array  # mean |f / mean f - f* / mean f*| (the released code's WeightGap)
    dvw_scale: Array  # eta (NaN without DVW)
    dvw_floor: Array  # b (NaN without DVW)


def normalised_gap(model: TabularModel, q_star: Array, q_values: Array) -> Array:
    """``||q* - q^pi||_inf / max q*`` of the greedy policy of ``q_values``, by exact evaluation."""
    policy = greedy_policy(q_values)
    v_pi = policy_evaluation(model, policy)
    q_pi = model.reward + model.discount * expected_next(model, v_pi)
    return jnp.max(jnp.abs(q_star - q_pi)) / jnp.max(q_star)


def weight_agreement(weights: Array, oracle: Array) -> tuple[Array, Array, Array]:
    """Correlation, mean ratio and mean absolute gap of mean-normalised weights against ``f*``."""
    f, g = weights.ravel() / jnp.mean(weights), oracle.ravel() / jnp.mean(oracle)
    fc, gc = f - f.mean(), g - g.mean()
    denominator = jnp.sqrt(jnp.sum(fc**2) * jnp.sum(gc**2))
    correlation = jnp.where(denominator > 0, jnp.sum(fc * gc) / jnp.where(denominator > 0, denominator, 1.0), jnp.nan)
    return correlation, jnp.mean(f / g), jnp.mean(jnp.abs(f - g))


class DeepMDVI:
    """The loop's pieces for one program (:attr:`DeepMDVIConfig.static_part`).

    Every method that depends on the variant takes its :class:`Hyperparameters` ``hp``, so
    variants that share the program ``vmap`` over a stack of them.
    """

    def __init__(self, config: DeepMDVIConfig):
        self.config = config
        self.dvw = config.weighting == "dvw"
        self.q_optimizer = optax.adam(config.learning_rate)
        self.variance_optimizer = optax.adam(config.variance_learning_rate)
        self.scale_optimizer = optax.adam(config.scale_learning_rate)

    def network(self, num_actions: int) -> hk.Transformed:
        return mlp(num_actions, self.config.hidden)

    # -- state ------------------------------------------------------------------------------
    def init(self, problem: Problem, key: Array) -> TrainState:
        num_actions = problem.q_star.shape[-1]
        net = self.network(num_actions)
        q_key, variance_key = jax.random.split(key)
        q_params = net.init(q_key, problem.features[:1])
        variance_params = net.init(variance_key, problem.features[:1])
        dvw = DVWParams(log_scale=jnp.ones(()), log_floor=jnp.ones(()))  # the released code's init
        return TrainState(
            q_params=q_params,
            q_opt_state=self.q_optimizer.init(q_params),
            target_params=q_params,
            prev_target_params=q_params,
            variance_params=variance_params,
            variance_opt_state=self.variance_optimizer.init(variance_params),
            frozen_variance_params=variance_params,
            dvw=dvw,
            dvw_opt_state=self.scale_optimizer.init(dvw),
            iteration=jnp.zeros((), jnp.int32),
        )

    # -- pieces -----------------------------------------------------------------------------
    def targets(self, q_bar: Array, problem: Problem, next_mean, hp: Hyperparameters) -> Array:
        c = self.config
        return regression_targets(q_bar, problem.model.reward, c.discount, next_mean, hp, c.log_clip_min)

    def exact_targets(self, q_bar: Array, problem: Problem, hp: Hyperparameters) -> Array:
        """The target with the exact expectation ``P V(Qbar)`` in place of the sample mean."""
        return self.targets(q_bar, problem, lambda v: expected_next(problem.model, v), hp)

    def weights(self, state: TrainState, problem: Problem, variance: Array | None, hp: Hyperparameters) -> Array:
        c = self.config
        if self.dvw:
            return dvw_weights(state.dvw, variance, c.weight_epsilon, c.weight_min)
        return jnp.where(hp.oracle > 0, problem.oracle_weights, jnp.ones_like(problem.oracle_weights))

    def regression_step(self, state: TrainState, problem: Problem, targets: Array, weights: Array):
        """One full-batch Adam step on ``mean f (Q - y)^2`` (``rlax.l2_loss`` is half the square)."""
        net = self.network(targets.shape[-1])

        def loss_fn(params):
            residual = net.apply(params, problem.features) - targets
            return jnp.mean(weights * rlax.l2_loss(residual))

        loss, grads = jax.value_and_grad(loss_fn)(state.q_params)
        updates, opt_state = self.q_optimizer.update(grads, state.q_opt_state, state.q_params)
        return state._replace(q_params=optax.apply_updates(state.q_params, updates), q_opt_state=opt_state), loss

    def dvw_step(self, state: TrainState, problem: Problem, variance_target: Array, frozen_variance: Array):
        """DVW's inner step before the Q step: variance network (Huber on ``exp(log-variance)``), then eta and b."""
        c = self.config
        net = self.network(variance_target.shape[-1])

        def variance_loss(params):
            predicted = jnp.exp(net.apply(params, problem.features))
            return jnp.mean(rlax.huber_loss(predicted - variance_target, 1.0))

        grads = jax.grad(variance_loss)(state.variance_params)
        updates, variance_opt = self.variance_optimizer.update(grads, state.variance_opt_state, state.variance_params)
        variance_params = optax.apply_updates(state.variance_params, updates)
        dvw_grads = jax.grad(dvw_scale_floor_loss)(state.dvw, frozen_variance, c.weight_epsilon)
        dvw_updates, dvw_opt = self.scale_optimizer.update(dvw_grads, state.dvw_opt_state, state.dvw)
        return state._replace(
            variance_params=variance_params,
            variance_opt_state=variance_opt,
            dvw=optax.apply_updates(state.dvw, dvw_updates),
            dvw_opt_state=dvw_opt,
        )

    def outer_iteration(self, state: TrainState, problem: Problem, key: Array, hp: Hyperparameters, next_mean=None):
        """Refresh, draw ``M`` next states per pair, regress ``inner_steps`` times. Returns ``(state, loss)``.

        ``next_mean`` replaces the sample mean (tests pass the exact expectation).
        """
        c = self.config
        net = self.network(problem.q_star.shape[-1])
        state = state._replace(
            frozen_variance_params=state.variance_params,
            prev_target_params=state.target_params,
            target_params=state.q_params,
        )
        next_states = generative.sample_next_states(key, problem.model, c.samples_per_pair)
        if next_mean is None:
            next_mean = lambda v: sampled_next_mean(v, next_states)  # noqa: E731
        q_bar = net.apply(state.target_params, problem.features)
        targets = self.targets(q_bar, problem, next_mean, hp)
        variance_target = frozen_variance = None
        if self.dvw:
            q_prev = net.apply(state.prev_target_params, problem.features)
            samples = per_sample_targets(q_prev, problem.model.reward, c.discount, next_states, hp, c.log_clip_min)
            variance_target = jnp.mean((samples - q_bar[..., None]) ** 2, axis=-1)
            frozen_variance = jnp.exp(net.apply(state.frozen_variance_params, problem.features))

        def inner(_, carry):
            state, _ = carry
            if self.dvw:
                state = self.dvw_step(state, problem, variance_target, frozen_variance)
            return self.regression_step(state, problem, targets, self.weights(state, problem, frozen_variance, hp))

        state, loss = jax.lax.fori_loop(0, c.inner_steps, inner, (state, jnp.zeros(())))
        return state._replace(iteration=state.iteration + 1), loss

    def diagnose(self, state: TrainState, problem: Problem, loss: Array, hp: Hyperparameters) -> Diagnostics:
        net = self.network(problem.q_star.shape[-1])
        q = net.apply(state.q_params, problem.features)
        q_bar = net.apply(state.target_params, problem.features)
        error = q - self.exact_targets(q_bar, problem, hp)
        variance = None
        if self.dvw:
            variance = jnp.exp(net.apply(state.frozen_variance_params, problem.features))
            scale, floor = jnp.exp(state.dvw.log_scale), jnp.exp(state.dvw.log_floor)
        else:
            scale = floor = jnp.array(jnp.nan, q.dtype)
        correlation, ratio, weight_gap = weight_agreement(self.weights(state, problem, variance, hp), problem.oracle_weights)
        return Diagnostics(
            gap=normalised_gap(problem.model, problem.q_star, q),
            regression_error=jnp.max(jnp.abs(error)),
            regression_rmse=jnp.sqrt(jnp.mean(error**2)),
            loss=loss,
            weight_correlation=correlation,
            weight_ratio=ratio,
            weight_gap=weight_gap,
            dvw_scale=scale,
            dvw_floor=floor,
        )

    def run_evaluations(self, state: TrainState, problem: Problem, key: Array, hp: Hyperparameters, num_evaluations: int):
        """``num_evaluations`` blocks of ``eval_interval`` outer iterations, diagnosed after each.

        Iteration ``k`` draws with ``fold_in(key, k)``, so chunked calls equal one long call.
        """

        def block(state, _):
            def one(_, carry):
                state, _ = carry
                return self.outer_iteration(state, problem, jax.random.fold_in(key, state.iteration), hp)

            state, loss = jax.lax.fori_loop(0, self.config.eval_interval, one, (state, jnp.zeros(())))
            return state, self.diagnose(state, problem, loss, hp)

        return jax.lax.scan(block, state, None, length=num_evaluations)


def make_train(config: DeepMDVIConfig):
    """``train(problem, key) -> (final TrainState, Diagnostics [evaluations])``: jittable, vmappable."""
    agent = DeepMDVI(config.static_part)
    hp = config.hyperparameters()

    def train(problem: Problem, key: Array):
        init_key, loop_key = jax.random.split(key)
        state = agent.init(problem, init_key)
        return agent.run_evaluations(state, problem, loop_key, hp, config.evaluations)

    return train


def make_sweep(configs, num_evaluations: int | None = None):
    """One program for variants that share a :attr:`~DeepMDVIConfig.static_part`.

    Returns ``(init, run, hps)``: ``init(problems[mazes], keys[seeds]) -> states[mazes, seeds]``;
    ``run(states[variants, mazes, seeds], problems, keys, hps) -> (states, Diagnostics)`` with
    every leaf ``[variants, mazes, seeds, ...]``; ``hps`` the variants' stacked hyperparameters.
    All variants start from the same networks and see the same draws (common random numbers).
    """
    configs = list(configs)
    statics = {c.static_part for c in configs}
    if len(statics) != 1:
        raise ValueError(f"configs must share their static part (all DVW or none, same sizes), got {len(statics)}")
    agent = DeepMDVI(statics.pop())
    n = configs[0].evaluations if num_evaluations is None else num_evaluations
    hps = jax.tree.map(lambda *xs: jnp.stack(xs), *[c.hyperparameters() for c in configs])
    init = nested_vmap(agent.init, (0, None), (None, 0))
    run = nested_vmap(
        lambda state, problem, key, hp: agent.run_evaluations(state, problem, key, hp, n),
        (0, None, None, 0),  # variants
        (0, 0, None, None),  # mazes
        (0, None, 0, None),  # seeds
    )
    return init, run, hps


def final_window_mean(values, window: int) -> float:
    """Mean over the last ``window`` evaluations (the paper's table averages the last 10)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return float(np.mean(values[..., -window:])) if values.size else math.nan
