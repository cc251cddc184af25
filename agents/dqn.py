"""DQN and Munchausen-DQN, each with or without Deep Variance Weighting (DVW).

* DQN: Mnih et al. 2015. Target ``r + gamma (1 - terminated) max_a' Qbar(s', a')`` (rlax).
* M-DQN: Vieillard et al. 2020, Eq. 4, via the core's :func:`mdvi.munchausen_target`
  (soft value bootstrap and clipped scaled-log-policy bonus; temperature ``tau_M = kl + ent``,
  scale ``alpha_M = kl / tau_M`` from :func:`mdvi.kl_entropy_to_munchausen`).
* DVW: Kitamura et al. 2023 (arXiv 2305.13185), as in the official MinAtar code: a variance
  network ``sigma^2(s, a) = exp(out) + eps_w`` is fitted (Huber, delta 1) to
  ``(y_{k-1} - Qbar_k(s, a))^2``, the squared TD error of the previous target ``Qbar_{k-1}``
  against the current one; a learned scale ``eta = exp(log_eta)`` is fitted so that
  ``mean(eta / sigma_frozen^2) = 1``; the Q loss is ``mean(w (y_k - Q(s, a))^2) / 2`` with
  ``w = max(eta / sigma_frozen^2, w_min)`` (no gradient through w), ``sigma_frozen^2`` being the
  variance network as frozen at the last target refresh.

Loop structure: one scan step is ``train_frequency`` environment steps followed by exactly one
update, so no per-step branch decides whether to train (under ``vmap`` such a branch would run
every seed's update at every step). Training advances in chunks of scan steps; the caller does
evaluation, logging and checkpointing between chunks on concrete arrays.

Speed layout: the networks trained together (Q and, with DVW, the variance network) are stacked
on a leading axis and run by one ``vmap``-ed forward/backward pass; the frozen networks (target,
and with DVW the previous target and the frozen variance network) likewise share one forward pass
over the concatenated batch ``[s; s']``. XLA:CPU cost at batch 32 is mostly per-operation
overhead, so this keeps DVW's extra networks cheap. A :class:`NetworkStack` names its members
(``params.trained["q"]``, ``params.frozen["target"]``), so no code indexes the stack by position.

The family's members (DQN, M-DQN, each with or without DVW) are the entries of one registry,
:data:`ALGORITHMS`; the agent takes its environment (any :class:`envs.base.Environment`) from
the caller.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
import rlax

from agents import networks
from agents.replay import Batch, ReplayState, replay_add, replay_init, replay_sample
from envs.base import Environment
from mdvi import kl_entropy_to_munchausen, munchausen_target
from mdvi.divergences import get_divergence


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One member of the DQN family: its name (in configs, results and run folders) and settings."""

    name: str
    munchausen: bool
    """M-DQN's Munchausen target (True) or DQN's (False)."""
    dvw: bool
    """Deep Variance Weighting."""
    dvw_network: Literal["separate", "shared"] = "separate"
    """separate: a second network of the Q-network's architecture (the official code);
    shared: a variance head on the Q-network's torso, read through a stop-gradient, frozen
    with the target network (cheaper: DVW then only adds the previous target's forward pass)."""
    label: str = ""
    """Display name for figures and tables."""

    @property
    def slug(self) -> str:
        """The name as it appears in folder names (``mdqn+dvw`` -> ``mdqn-dvw``)."""
        return self.name.replace("+", "-")


ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        Algorithm("dqn", munchausen=False, dvw=False, label="DQN"),
        Algorithm("dqn+dvw", munchausen=False, dvw=True, label="DQN+DVW"),
        Algorithm("dqn+dvw-shared", munchausen=False, dvw=True, dvw_network="shared", label="DQN+DVW (shared)"),
        Algorithm("mdqn", munchausen=True, dvw=False, label="M-DQN"),
        Algorithm("mdqn+dvw", munchausen=True, dvw=True, label="M-DQN+DVW"),
        Algorithm("mdqn+dvw-shared", munchausen=True, dvw=True, dvw_network="shared", label="M-DQN+DVW (shared)"),
    )
}
"""The one registry of the family, in display order; every other place looks names up here."""

AlgorithmName = Literal[tuple(ALGORITHMS)]  # type: ignore[valid-type]


def get_algorithm(name: str) -> Algorithm:
    if not isinstance(name, str) or name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


# name -> lowest allowed value of the integer hyperparameters
_INTEGER_BOUNDS = {
    "total_steps": 1, "buffer_size": 1, "batch_size": 1, "train_frequency": 1, "learning_starts": 0,
    "target_period": 1, "eval_episodes": 1, "hidden": 1, "conv_features": 1,
}
# name -> predicate of the valid real hyperparameters (checked only on concrete numbers)
_REAL_CHECKS = {
    "discount": lambda g: 0.0 <= g < 1.0,
    "learning_rate": lambda v: v > 0,
    "adam_eps": lambda v: v > 0,
    "epsilon_start": lambda v: 0.0 <= v <= 1.0,
    "epsilon_end": lambda v: 0.0 <= v <= 1.0,
    "eval_epsilon": lambda v: 0.0 <= v <= 1.0,
    "exploration_fraction": lambda v: 0.0 < v <= 1.0,
    "kl_weight": lambda v: v >= 0,
    "entropy_weight": lambda v: v >= 0,
    "log_clip_min": lambda v: v < 0,
    "variance_epsilon": lambda v: v > 0,
    "weight_min": lambda v: v >= 0,
    "variance_learning_rate": lambda v: v > 0,
    "scale_learning_rate": lambda v: v > 0,
    "scale_init": lambda v: True,
}


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    """DQN-family hyperparameters; defaults are the official DVW MinAtar settings (M-DQN)."""

    algorithm: AlgorithmName = "mdqn"
    """Member of the family (see ALGORITHMS): dqn or mdqn, optionally +dvw or +dvw-shared."""
    total_steps: int = 10_000_000
    """Environment steps per seed."""
    discount: float = 0.99
    """Discount gamma."""
    learning_rate: float = 2.5e-4
    """Adam step size of the Q-network."""
    adam_eps: float = 1e-8
    buffer_size: int = 100_000
    batch_size: int = 32
    train_frequency: int = 4
    """Environment steps per update."""
    learning_starts: int = 10_000
    """Environment steps collected before the first update."""
    target_period: int = 1_000
    """Environment steps between target-network refreshes."""
    epsilon_start: float = 1.0
    epsilon_end: float = 0.1
    exploration_fraction: float = 0.1
    """Fraction of total_steps over which epsilon decays linearly."""
    kl_weight: float = 0.027
    """Munchausen KL weight tau (the paper's tau)."""
    entropy_weight: float = 0.003
    """Munchausen entropy weight kappa."""
    log_clip_min: float = -1.0
    """Lower clip l0 of the scaled log-policy bonus."""
    divergence: str = "kl"
    """Regularizer of M-DQN's policy, soft bootstrap and bonus (mdvi.divergences name, e.g. alpha:1.5)."""
    variance_epsilon: float = 0.1
    """eps_w added to exp(out) in the variance network."""
    weight_min: float = 0.1
    """Floor w_min of the DVW weights."""
    variance_learning_rate: float = 2.5e-4
    scale_learning_rate: float = 1e-3
    scale_init: float = 1.0
    """Initial log eta."""
    hidden: int = 128
    conv_features: int = 16
    eval_episodes: int = 32
    """Greedy evaluation episodes (vmapped) per evaluation."""
    eval_epsilon: float = 0.0
    """Exploration during evaluation (0: greedy)."""

    def __post_init__(self):
        get_algorithm(self.algorithm)
        try:
            get_divergence(self.divergence)
        except ValueError as error:
            raise ValueError(f"divergence: {error}") from None
        for name, low in _INTEGER_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, ok in _REAL_CHECKS.items():
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not (math.isfinite(value) and ok(value)):
                raise ValueError(f"{name} has an invalid value {value!r}")
        if (
            self.munchausen
            and isinstance(self.kl_weight, (int, float))
            and isinstance(self.entropy_weight, (int, float))
            and self.kl_weight + self.entropy_weight <= 0
        ):
            raise ValueError("munchausen needs kl_weight + entropy_weight > 0")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds buffer_size {self.buffer_size}")
        if self.target_period % self.train_frequency:
            raise ValueError(
                f"target_period ({self.target_period}) must be a multiple of train_frequency ({self.train_frequency})"
            )

    @property
    def spec(self) -> Algorithm:
        return ALGORITHMS[self.algorithm]

    @property
    def munchausen(self) -> bool:
        return self.spec.munchausen

    @property
    def dvw(self) -> bool:
        return self.spec.dvw

    @property
    def shared_variance(self) -> bool:
        """DVW's variance is a head of the Q-network (``dvw_network="shared"``)."""
        return self.spec.dvw and self.spec.dvw_network == "shared"

    @property
    def separate_variance(self) -> bool:
        """DVW's variance is a second network (``dvw_network="separate"``)."""
        return self.spec.dvw and self.spec.dvw_network == "separate"

    @property
    def updates_per_period(self) -> int:
        """Updates between two target refreshes."""
        return self.target_period // self.train_frequency

    @property
    def num_periods(self) -> int:
        """Whole target periods after ``learning_starts`` (training runs whole periods)."""
        return max(0, (self.total_steps - self.learning_starts) // self.target_period)

    @property
    def num_updates(self) -> int:
        return self.num_periods * self.updates_per_period


def config_for(algorithm: str, **overrides) -> DQNConfig:
    """The official defaults for ``algorithm`` (a name of :data:`ALGORITHMS`), with overrides."""
    return DQNConfig(algorithm=get_algorithm(algorithm).name, **overrides)


@functools.partial(jax.tree_util.register_dataclass, data_fields=("stacked",), meta_fields=("names",))
@dataclasses.dataclass(frozen=True)
class NetworkStack:
    """Parameters of same-architecture networks stacked on a leading axis, addressed by name.

    One ``vmap``-ed pass runs every member (XLA:CPU cost at batch 32 is mostly per-operation
    overhead, so this keeps DVW's extra networks cheap); ``stack["target"]`` is one member.
    """

    names: tuple[str, ...]
    stacked: Any

    @classmethod
    def of(cls, **members) -> NetworkStack:
        return cls(tuple(members), jax.tree.map(lambda *xs: jnp.stack(xs), *members.values()))

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def __getitem__(self, name: str):
        i = self.names.index(name)
        return jax.tree.map(lambda x: x[i], self.stacked)

    def select(self, *names: str) -> NetworkStack:
        """The members ``names`` that are present, in this order, as a smaller stack."""
        names = tuple(n for n in names if n in self.names)
        idx = [self.names.index(n) for n in names]
        if idx == list(range(idx[0], idx[0] + len(idx))):  # contiguous: a slice, no gather
            take = lambda x: x[idx[0]:idx[0] + len(idx)]  # noqa: E731
        else:
            take = lambda x: x[jnp.asarray(idx)]  # noqa: E731
        return NetworkStack(names, jax.tree.map(take, self.stacked))


class Params(NamedTuple):
    trained: NetworkStack  # "q" and, with a separate DVW variance network, "variance"
    frozen: NetworkStack  # "target"; with DVW "previous_target"; with a separate variance network "frozen_variance"
    log_scale: jax.Array  # DVW's log eta (a scalar; unused without DVW)


class TrainState(NamedTuple):
    params: Params
    opt_state: Any
    scale_opt_state: Any
    replay: ReplayState
    env_state: Any
    obs: jax.Array
    key: jax.Array
    step: jax.Array  # environment steps taken
    updates: jax.Array  # gradient updates taken


class StepStats(NamedTuple):
    """Per-update diagnostics (averaged over a chunk by :meth:`DQNAgent.train_chunk`)."""

    loss: jax.Array
    q_taken: jax.Array
    variance_loss: jax.Array
    weight_mean: jax.Array
    weight_min: jax.Array
    weight_max: jax.Array
    scale: jax.Array
    epsilon: jax.Array
    episode_return_sum: jax.Array  # training episodes completed in the step (sum / count)
    episodes: jax.Array


def td_errors(
    q_tm1: jax.Array,
    a_tm1: jax.Array,
    r_t: jax.Array,
    discount_t: jax.Array,
    bootstrap_tm1: jax.Array,
    bootstrap_t: jax.Array,
    *,
    munchausen: bool,
    temperature=0.0,
    munchausen_alpha=0.0,
    log_clip_min: float = -1.0,
    divergence: str = "kl",
) -> jax.Array:
    """Batched TD errors ``y - q_tm1[a]`` with the target built from the ``bootstrap`` values.

    DQN: ``rlax.q_learning`` (target from ``bootstrap_t``). M-DQN: the core's Munchausen target
    (bonus from ``bootstrap_tm1``, soft bootstrap from ``bootstrap_t``). Targets carry no
    gradient.
    """
    chex.assert_rank([q_tm1, a_tm1, r_t, discount_t, bootstrap_tm1, bootstrap_t], [2, 1, 1, 1, 2, 2])
    if not munchausen:
        return jax.vmap(rlax.q_learning)(q_tm1, a_tm1, r_t, discount_t, bootstrap_t)
    target_fn = functools.partial(munchausen_target, divergence=divergence)
    target = jax.vmap(target_fn, in_axes=(0, 0, 0, 0, 0, None, None, None))(
        bootstrap_tm1, a_tm1, r_t, discount_t, bootstrap_t, temperature, munchausen_alpha, log_clip_min
    )
    q_taken = jnp.take_along_axis(q_tm1, a_tm1[:, None], axis=-1)[:, 0]
    return jax.lax.stop_gradient(target) - q_taken


def dvw_weights(log_scale: jax.Array, variance_frozen: jax.Array, weight_min) -> jax.Array:
    """``max(exp(log_eta) / sigma_frozen^2, w_min)``, with no gradient to anything."""
    return jax.lax.stop_gradient(jnp.maximum(jnp.exp(log_scale) / variance_frozen, weight_min))


def scale_loss(log_scale: jax.Array, variance_frozen: jax.Array) -> jax.Array:
    """``(mean(exp(log_eta) / sigma_frozen^2) - 1)^2``: normalises the mean weight to 1."""
    return (jnp.mean(jnp.exp(log_scale) / variance_frozen) - 1.0) ** 2


def _stacked_learning_rates(rates: jax.Array) -> optax.GradientTransformation:
    """Descent step with one learning rate per slot of the stacked (leading) axis."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: -rates.reshape((-1,) + (1,) * (u.ndim - 1)) * u, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _take(values: jax.Array, actions: jax.Array) -> jax.Array:
    """``values[i, actions[i]]`` for each row ``i``."""
    return jnp.take_along_axis(values, actions[:, None], axis=-1)[:, 0]


def epsilon_greedy(q: jax.Array, explore_key: jax.Array, action_key: jax.Array, epsilon) -> jax.Array:
    """``argmax_a q`` (over the last axis), replaced by a uniform action with probability ``epsilon``."""
    greedy = jnp.argmax(q, axis=-1)
    random_action = jax.random.randint(action_key, greedy.shape, 0, q.shape[-1])
    return jnp.where(jax.random.uniform(explore_key, greedy.shape) < epsilon, random_action, greedy)


class DQNAgent:
    """Pure functions of one seed's training; ``jax.vmap`` them over seeds.

    Args:
      config: hyperparameters.
      env: an :class:`envs.base.Environment` built by the caller (e.g. ``envs.minatar.make``).
      network: a ``hk.Transformed`` Q-network; defaults to the MinAtar conv network.
      env_params: the environment's parameters (default: ``env.default_params``).
    """

    def __init__(self, config: DQNConfig, env: Environment, network=None, env_params=None):
        if not isinstance(config, DQNConfig):
            raise ValueError(f"config must be a DQNConfig, got {type(config).__name__}")
        if not isinstance(env, Environment):
            raise ValueError(f"env must be an envs.base.Environment, got {type(env).__name__}")
        self.config = config
        self.env = env
        self.env_params = env.default_params if env_params is None else env_params
        self.num_actions = env.num_actions
        self.network = network or networks.minatar_q_network(
            env.num_actions, config.hidden, config.conv_features, variance_head=config.shared_variance
        )
        # A network handed in must match the config: the shared variance head doubles the output.
        dummy = jnp.zeros((1, *env.obs_shape), jnp.float32)
        params_shape = jax.eval_shape(self.network.init, jax.random.key(0), dummy)
        width = jax.eval_shape(self.network.apply, params_shape, dummy).shape[-1]
        expected = 2 * self.num_actions if config.shared_variance else self.num_actions
        if width != expected:
            raise ValueError(
                f"the network outputs {width} values per state; {config.algorithm} needs {expected} "
                f"({'Q-values and log-variances' if config.shared_variance else 'one Q-value per action'})"
            )
        # The shared variance head trains with the Q-network's step size.
        rates = [config.learning_rate] + ([config.variance_learning_rate] if config.separate_variance else [])
        self.optimizer = optax.chain(
            optax.scale_by_adam(eps=config.adam_eps), _stacked_learning_rates(jnp.asarray(rates, jnp.float32))
        )
        self.scale_optimizer = optax.adam(config.scale_learning_rate, eps=config.adam_eps)
        if config.munchausen:
            self.temperature, self.munchausen_alpha = kl_entropy_to_munchausen(config.kl_weight, config.entropy_weight)
        else:
            self.temperature, self.munchausen_alpha = 0.0, 0.0

    # -- pieces ---------------------------------------------------------------------------------
    def _apply_stacked(self, stack: NetworkStack, obs):
        return jax.vmap(self.network.apply, in_axes=(0, None))(stack.stacked, obs)

    def q_values(self, params: Params, obs: jax.Array) -> jax.Array:
        """Online Q-values ``[B, A]``."""
        return self.network.apply(params.trained["q"], obs)[..., : self.num_actions]

    def epsilon(self, step):
        c = self.config
        duration = c.exploration_fraction * c.total_steps
        slope = (c.epsilon_end - c.epsilon_start) / duration
        return jnp.maximum(c.epsilon_start + slope * step, c.epsilon_end)

    def _td(self, q_tm1, batch, discount, bootstrap_tm1, bootstrap_t):
        return td_errors(
            q_tm1, batch.action, batch.reward, discount, bootstrap_tm1, bootstrap_t,
            munchausen=self.config.munchausen, temperature=self.temperature,
            munchausen_alpha=self.munchausen_alpha, log_clip_min=self.config.log_clip_min,
            divergence=self.config.divergence,
        )

    # -- state ---------------------------------------------------------------------------------
    def init(self, key: jax.Array) -> TrainState:
        c = self.config
        key, q_key, var_key, env_key = jax.random.split(key, 4)
        dummy = jnp.zeros((1, *self.env.obs_shape), jnp.float32)
        q_params = self.network.init(q_key, dummy)
        trained, frozen = {"q": q_params}, {"target": q_params}
        if c.dvw:
            frozen["previous_target"] = q_params
        if c.separate_variance:
            trained["variance"] = frozen["frozen_variance"] = self.network.init(var_key, dummy)
        trained = NetworkStack.of(**trained)
        log_scale = jnp.asarray(c.scale_init, jnp.float32)
        params = Params(trained=trained, frozen=NetworkStack.of(**frozen), log_scale=log_scale)
        obs, env_state = self.env.reset(env_key, self.env_params)
        return TrainState(
            params=params,
            opt_state=self.optimizer.init(trained),
            scale_opt_state=self.scale_optimizer.init(log_scale),
            replay=replay_init(c.buffer_size, self.env.obs_shape),
            env_state=env_state,
            obs=obs,
            key=key,
            step=jnp.zeros((), jnp.int32),
            updates=jnp.zeros((), jnp.int32),
        )

    def env_step(self, state: TrainState, key: jax.Array):
        """One epsilon-greedy environment step, stored in the replay buffer."""
        act_key, env_key = jax.random.split(key)
        epsilon = self.epsilon(state.step)
        explore_key, action_key = jax.random.split(act_key)
        action = epsilon_greedy(self.q_values(state.params, state.obs[None])[0], explore_key, action_key, epsilon)
        out = self.env.step(env_key, state.env_state, action, self.env_params)
        replay = replay_add(state.replay, state.obs, action, out.reward, out.final_obs, out.terminated)
        done = out.terminated | out.truncated
        state = state._replace(replay=replay, env_state=out.state, obs=out.obs, step=state.step + 1)
        return state, (jnp.where(done, out.episode_return, 0.0), done.astype(jnp.int32), epsilon)

    def _collect(self, state: TrainState, num_steps: int):
        # A rolled loop on purpose: unrolled, several replay writes land in one loop body and
        # XLA copies the whole buffer (measured 10x slower).
        key, step_key = jax.random.split(state.key)
        state = state._replace(key=key)
        state, (returns, dones, epsilons) = jax.lax.scan(
            self.env_step, state, jax.random.split(step_key, num_steps)
        )
        return state, returns.sum(), dones.sum(), epsilons[-1]

    def warmup(self, state: TrainState) -> TrainState:
        """``learning_starts`` environment steps, no updates."""
        if self.config.learning_starts == 0:
            return state
        state, _, _, _ = self._collect(state, self.config.learning_starts)
        return state

    def update(self, state: TrainState, key: jax.Array) -> tuple[TrainState, StepStats]:
        """One gradient update on a uniform minibatch (targets are refreshed by :meth:`train_period`)."""
        c = self.config
        params = state.params
        batch: Batch = replay_sample(state.replay, key, c.batch_size)
        batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))
        B, A = c.batch_size, self.num_actions
        discount = c.discount * (1.0 - batch.terminated.astype(jnp.float32))
        # The target networks (current, and previous with DVW) see [s; s'] in one pass; the
        # frozen variance network only s.
        targets = params.frozen.select("target", "previous_target")
        target_out = dict(zip(targets.names, self._apply_stacked(targets, jnp.concatenate([batch.obs, batch.next_obs]))))
        target_tm1, target_t = target_out["target"][:B, :A], target_out["target"][B:, :A]
        log_scale, scale_opt_state = params.log_scale, state.scale_opt_state
        if c.dvw:
            prev_tm1, prev_t = target_out["previous_target"][:B, :A], target_out["previous_target"][B:, :A]
            if c.shared_variance:  # the target network's variance head is the frozen copy
                frozen_log_variance = target_out["target"][:B, A:]
            else:
                frozen_log_variance = self.network.apply(params.frozen["frozen_variance"], batch.obs)
            variance_frozen = jnp.exp(_take(frozen_log_variance, batch.action)) + c.variance_epsilon
            variance_target = self._td(target_tm1, batch, discount, prev_tm1, prev_t) ** 2
            scale_grad = jax.grad(scale_loss)(log_scale, variance_frozen)
            scale_updates, scale_opt_state = self.scale_optimizer.update(scale_grad, scale_opt_state)
            log_scale = optax.apply_updates(log_scale, scale_updates)
            weights = dvw_weights(log_scale, variance_frozen, c.weight_min)
        else:
            weights = jnp.ones((B,), jnp.float32)
            variance_target = None

        def loss_fn(trained: NetworkStack):
            out = dict(zip(trained.names, self._apply_stacked(trained, batch.obs)))
            q_tm1 = out["q"][:, :A]
            td = self._td(q_tm1, batch, discount, target_tm1, target_t)
            q_loss = jnp.mean(weights * rlax.l2_loss(td))
            if c.dvw:
                log_variance = out["q"][:, A:] if c.shared_variance else out["variance"]
                predicted = jnp.exp(_take(log_variance, batch.action)) + c.variance_epsilon
                variance_loss = jnp.mean(rlax.huber_loss(variance_target - predicted, 1.0))
            else:
                variance_loss = jnp.zeros(())
            return q_loss + variance_loss, (q_loss, variance_loss, _take(q_tm1, batch.action))

        grads, (q_loss, variance_loss, q_taken) = jax.grad(loss_fn, has_aux=True)(params.trained)
        updates, opt_state = self.optimizer.update(grads, state.opt_state)
        trained = optax.apply_updates(params.trained, updates)
        stats = StepStats(
            loss=q_loss, q_taken=q_taken.mean(), variance_loss=variance_loss,
            weight_mean=weights.mean(), weight_min=weights.min(), weight_max=weights.max(),
            scale=jnp.exp(log_scale), epsilon=jnp.zeros(()), episode_return_sum=jnp.zeros(()),
            episodes=jnp.zeros((), jnp.int32),
        )
        new_params = Params(trained=trained, frozen=params.frozen, log_scale=log_scale)
        state = state._replace(params=new_params, opt_state=opt_state, scale_opt_state=scale_opt_state,
                               updates=state.updates + 1)
        return state, stats

    def refresh_targets(self, params: Params) -> Params:
        """Target refresh: frozen variance <- variance, previous target <- target, target <- Q."""
        frozen = {"target": params.trained["q"]}
        if self.config.dvw:
            frozen["previous_target"] = params.frozen["target"]
        if self.config.separate_variance:
            frozen["frozen_variance"] = params.trained["variance"]
        return params._replace(frozen=NetworkStack.of(**frozen))

    def train_step(self, state: TrainState, _=None) -> tuple[TrainState, StepStats]:
        """``train_frequency`` environment steps, then exactly one update."""
        state, return_sum, episodes, epsilon = self._collect(state, self.config.train_frequency)
        key, update_key = jax.random.split(state.key)
        state, stats = self.update(state._replace(key=key), update_key)
        return state, stats._replace(epsilon=epsilon, episode_return_sum=return_sum, episodes=episodes)

    def train_period(self, state: TrainState, _=None) -> tuple[TrainState, StepStats]:
        """One target period: ``target_period / train_frequency`` train steps, then a refresh.

        Refreshing once per period (rather than testing a condition at every update) keeps the
        frozen networks loop-invariant inside the period. Periods are counted from the end of
        ``learning_starts``; with the defaults (both multiples of 1000) the refreshes fall on
        the same environment steps as in the official code.
        """
        state, stats = jax.lax.scan(self.train_step, state, None, length=self.config.updates_per_period)
        state = state._replace(params=self.refresh_targets(state.params))
        return state, stats

    def train_chunk(self, state: TrainState, num_periods: int) -> tuple[TrainState, StepStats]:
        """``num_periods`` target periods; returns the chunk's mean statistics (episode sums summed)."""
        state, stats = jax.lax.scan(self.train_period, state, None, length=num_periods)
        summary = jax.tree.map(jnp.mean, stats)
        summary = summary._replace(
            weight_min=stats.weight_min.min(), weight_max=stats.weight_max.max(),
            episode_return_sum=stats.episode_return_sum.sum(), episodes=stats.episodes.sum(),
            epsilon=stats.epsilon[-1, -1],
        )
        return state, summary

    def evaluate(self, params: Params, key: jax.Array, max_steps: int | None = None):
        """Returns and lengths of ``eval_episodes`` episodes run in parallel (vmapped envs).

        Each environment plays until its first episode ends (or ``max_steps``, by default the
        environment's episode bound); actions are greedy with probability ``1 - eval_epsilon``.
        """
        c = self.config
        if max_steps is None:
            max_steps = self.env.max_episode_steps(self.env_params)
        reset_keys = jax.random.split(jax.random.fold_in(key, 0), c.eval_episodes)
        obs, env_states = jax.vmap(self.env.reset, in_axes=(0, None))(reset_keys, self.env_params)
        zeros = jnp.zeros((c.eval_episodes,))

        def cond(carry):
            t, _, _, done, _, _ = carry
            return (t < max_steps) & ~jnp.all(done)

        def body(carry):
            t, obs, env_states, done, returns, lengths = carry
            step_key = jax.random.fold_in(key, t + 1)
            k_explore, k_action, k_env = jax.random.split(step_key, 3)
            actions = epsilon_greedy(self.q_values(params, obs), k_explore, k_action, c.eval_epsilon)
            out = jax.vmap(self.env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_env, c.eval_episodes), env_states, actions, self.env_params
            )
            ended = out.terminated | out.truncated
            returns = jnp.where(done, returns, out.episode_return)
            lengths = jnp.where(done, lengths, out.episode_length)
            return t + 1, out.obs, out.state, done | ended, returns, lengths

        init = (jnp.zeros((), jnp.int32), obs, env_states, jnp.zeros((c.eval_episodes,), bool), zeros,
                jnp.zeros((c.eval_episodes,), jnp.int32))
        _, _, _, done, returns, lengths = jax.lax.while_loop(cond, body, init)
        return returns, lengths, done


def make_train(config: DQNConfig, env: Environment, network=None, num_chunks: int = 10, env_params=None):
    """``train(key) -> (final TrainState, per-chunk StepStats, per-chunk eval returns)`` on ``env``.

    Jittable end to end and ``vmap``-able over keys (seeds): ``jax.jit(jax.vmap(train))(keys)``.
    Every random draw derives from ``key`` and keeps its implementation; on CPU, keys made with
    ``jax.random.key(seed, impl="philox2x32")`` train about twice as fast as the default
    threefry, which JAX lowers with rolled loops there.
    The target periods are split into ``num_chunks`` equal chunks, each followed by a greedy
    evaluation; the CLI runs the same pieces chunk by chunk from Python instead (progress bars,
    checkpoints).
    """
    agent = DQNAgent(config, env, network, env_params)
    if config.num_periods % num_chunks:
        raise ValueError(f"{config.num_periods} target periods do not split into {num_chunks} equal chunks")
    per_chunk = config.num_periods // num_chunks

    def train(key):
        key, eval_key = jax.random.split(key)
        state = agent.warmup(agent.init(key))

        def chunk(state, index):
            state, stats = agent.train_chunk(state, per_chunk)
            returns, _, _ = agent.evaluate(state.params, jax.random.fold_in(eval_key, index))
            return state, (stats, returns)

        state, (stats, returns) = jax.lax.scan(chunk, state, jnp.arange(num_chunks))
        return state, stats, returns

    return train
