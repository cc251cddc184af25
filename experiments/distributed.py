"""Seeds over devices and hosts: the vmapped seed axis sharded with ``jax.sharding``.

A run's seeds are independent programs ``vmap``-ed on a leading axis. :class:`SeedLayout`
places that axis either on one device (the default) or, with ``shard=True``, over a
``jax.sharding.Mesh`` of every device of every process: each device runs
``vmap(f)`` on its own block of seeds inside ``jax.shard_map`` (no communication during
training), and every array of the training state (replay buffers, parameters, optimiser
state, environment state, keys) follows the seed axis. Every random draw is a function of the
seed's own key, so a sharded run computes what the unsharded one does.

Several hosts run one program each under JAX's own distributed runtime
(:func:`initialize`, i.e. ``jax.distributed.initialize``; on CPU its collectives are gloo's):
process ``p`` owns the seeds of its devices; what must leave the devices (metrics, the
training state for a checkpoint) is gathered with ``multihost_utils.process_allgather`` and
written by process 0 alone; a checkpoint read by process 0 reaches the others with
``multihost_utils.broadcast_one_to_all``, so hosts need no shared file system and a run may
resume on another number of hosts or devices.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

SEED_AXIS = "seeds"
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"
BARRIER_TIMEOUT_S = 3600
"""How long a process waits at a barrier for the others (one may still be compiling a chunk)."""
_barrier_count = itertools.count()


def barrier(what: str) -> None:
    """Wait for every process at the coordination service of JAX's distributed runtime.

    Every collective below starts behind one: JAX's CPU collectives (gloo) give up after 30 s
    when a peer is late to set up a collective (measured: "Gloo context initialization failed:
    DEADLINE_EXCEEDED" when one process compiled its chunk 40 s after the other on a busy CPU),
    while the coordination service's barrier waits ``BARRIER_TIMEOUT_S``. Called through
    orbax's wrapper of the runtime's barrier (JAX has no public one).
    """
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost

    multihost.sync_global_processes(f"mdvi-lab/{what}/{next(_barrier_count)}", timeout=BARRIER_TIMEOUT_S,
                                    processes=set(range(jax.process_count())))


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process sits in a multi-process run (``jax.distributed.initialize``'s arguments)."""

    coordinator_address: str
    num_processes: int
    process_id: int


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def cluster_from(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> Cluster | None:
    """The cluster given by the flags, each missing one read from the usual environment variable.

    ``JAX_COORDINATOR_ADDRESS`` (which JAX itself reads), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``. None when no coordinator is named and there is at most one process:
    a single-process run.
    """
    address = coordinator_address or os.environ.get(COORDINATOR_ENV) or None
    count = num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV)
    index = process_id if process_id is not None else _env_int(PROCESS_ID_ENV)
    if address is None:
        if (count or 1) > 1:
            raise ValueError(f"num_processes is {count}: a multi-process run needs --coordinator-address "
                             f"(host:port of process 0) or {COORDINATOR_ENV}")
        return None
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"coordinator_address must be host:port, got {address!r}")
    if count is None or isinstance(count, bool) or count < 1:
        raise ValueError(f"num_processes must be an integer >= 1 (--num-processes or {NUM_PROCESSES_ENV}), got {count!r}")
    if index is None or isinstance(index, bool) or not 0 <= index < count:
        raise ValueError(f"process_id must be an integer in [0, {count}) (--process-id or {PROCESS_ID_ENV}), got {index!r}")
    return Cluster(address, count, index)


def initialize(cluster: Cluster | None) -> None:
    """Join the cluster through ``jax.distributed.initialize`` (once per process; no-op for None)."""
    if cluster is None:
        return
    if jax.distributed.is_initialized():
        if (jax.process_count(), jax.process_index()) != (cluster.num_processes, cluster.process_id):
            raise ValueError(
                f"this process already belongs to a cluster as process {jax.process_index()} of "
                f"{jax.process_count()}, not {cluster.process_id} of {cluster.num_processes}"
            )
        return
    jax.distributed.initialize(cluster.coordinator_address, cluster.num_processes, cluster.process_id)


def is_primary() -> bool:
    """Process 0: the one that writes results and checkpoints."""
    return jax.process_index() == 0


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def map_seeds(fn, seeds: int, in_axes=0):
    """``vmap(fn, in_axes)`` over a seed axis of ``seeds``; one seed runs without the batch axis.

    Same values up to float rounding, and on XLA:CPU much faster for DVW: a vmap over one seed
    turned its stacked two-network passes into batched products that ran 1.6-1.9x slower than
    the unbatched program (the 1-seed figures of ``benchmarks/minatar.py``).
    """
    if seeds != 1:
        return jax.vmap(fn, in_axes=in_axes)
    axes = in_axes if isinstance(in_axes, tuple) else None

    def run(*args):
        picks = axes if axes is not None else (in_axes,) * len(args)
        inner = [arg if axis is None else jax.tree.map(lambda x: x[0], arg) for arg, axis in zip(args, picks)]
        return jax.tree.map(lambda x: x[None], fn(*inner))

    return run


class SeedLayout:
    """The seed axis on one device (``shard=False``) or sharded over every device of every process."""

    def __init__(self, seeds: int, shard: bool):
        self.seeds = seeds
        self.shard = shard
        devices = jax.devices()
        if jax.process_count() > 1 and not shard:
            raise ValueError(
                f"this is process {jax.process_index()} of {jax.process_count()}: a multi-process run shards "
                "its seeds over every process's devices; pass --shard"
            )
        if shard and seeds % len(devices):
            raise ValueError(
                f"seeds ({seeds}) must be a multiple of the {len(devices)} devices the seed axis is sharded over "
                f"(--shard; {jax.process_count()} process(es) x {jax.local_device_count()} device(s))"
            )
        if shard:
            # jax 0.10's Shardy partitioner cannot lower the Philox PRNG (the lab's default on CPU)
            # in a sharded program ("INTERNAL: Unable to convert MHLO to StableHLO": the
            # ``mulhi`` of philox2x32 stays an unknown mhlo op); GSPMD lowers it. Inside
            # ``shard_map`` nothing is partitioned automatically, so the choice changes no result.
            jax.config.update("jax_use_shardy_partitioner", False)
        self.devices = devices if shard else devices[:1]
        self.mesh = Mesh(np.array(self.devices), (SEED_AXIS,)) if shard else None
        self.sharding = NamedSharding(self.mesh, P(SEED_AXIS)) if shard else None

    @property
    def seeds_per_device(self) -> int:
        return self.seeds // len(self.devices)

    def describe(self) -> dict:
        return {"sharded": self.shard, "devices": len(self.devices), "processes": jax.process_count(),
                "seeds_per_device": self.seeds_per_device, "platform": self.devices[0].platform}

    def map(self, fn, in_axes=0):
        """``jit(vmap(fn, in_axes))``; sharded: each device maps its own seeds (``shard_map``).

        A single unsharded seed runs without the batch axis (:func:`map_seeds`).

        ``in_axes`` is a tuple with 0 (per-seed argument) or None (shared) for each argument;
        every output carries the seed axis.
        """
        if not self.shard:
            return jax.jit(map_seeds(fn, self.seeds, in_axes))
        mapped = jax.vmap(fn, in_axes=in_axes)
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,)
        specs = tuple(P() if axis is None else P(SEED_AXIS) for axis in axes)
        # No collective runs inside (each seed is its own program), so JAX's tracking of which
        # values vary across devices has nothing to check; it would reject the scans whose carry
        # starts as a constant (an environment's reset) and becomes per-seed.
        return jax.jit(jax.shard_map(mapped, mesh=self.mesh, in_specs=specs, out_specs=P(SEED_AXIS), check_vma=False))

    def put(self, tree):
        """Arrays holding every seed, the same on every process -> arrays laid out over the seed axis."""
        if not self.shard:
            return tree

        def place(leaf):
            if _is_key(leaf):
                return self._wrap(place(np.asarray(jax.random.key_data(leaf))), jax.random.key_impl(leaf))
            host = np.asarray(leaf)
            if host.shape[:1] != (self.seeds,):
                raise ValueError(f"an array of shape {host.shape} lacks the leading seed axis of {self.seeds} seeds")
            return jax.make_array_from_callback(host.shape, self.sharding, lambda index: host[index])

        return jax.tree.map(place, tree)

    def _wrap(self, data, impl):
        return jax.jit(lambda d: jax.random.wrap_key_data(d, impl=impl), out_shardings=self.sharding)(data)

    def to_host(self, tree):
        """The whole seed axis, readable here (with several processes a collective every process calls).

        One process: the arrays themselves (what a checkpoint saves and restores in place).
        Several: numpy arrays on every process, typed keys as their key data; :meth:`from_host`
        undoes it.
        """
        if jax.process_count() == 1:
            return tree
        barrier("gather")
        data = jax.tree.map(lambda leaf: jax.random.key_data(leaf) if _is_key(leaf) else leaf, tree)
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(data, tiled=True))

    def from_host(self, host_tree, like):
        """:meth:`to_host`'s output back in the run's layout; ``like`` (a state in that layout) says
        which leaves are typed keys."""
        if jax.process_count() == 1:
            return host_tree
        return jax.tree.map(
            lambda host, leaf: self._wrap(self.put(host), jax.random.key_impl(leaf)) if _is_key(leaf) else self.put(host),
            host_tree, like,
        )

    def host_values(self, tree):
        """Numpy copies of every seed's values (a collective with several processes)."""
        return jax.tree.map(np.asarray, self.to_host(tree))


def broadcast_from_primary(tree):
    """Process 0's numpy ``tree`` on every process (a collective); each process passes arrays of
    the same shapes and dtypes. Exact for every dtype: the bytes travel, not the values."""
    if jax.process_count() == 1:
        return tree
    barrier("broadcast")
    leaves, treedef = jax.tree.flatten(tree)
    hosts = [np.asarray(leaf) for leaf in leaves]
    as_bytes = [np.ascontiguousarray(h).reshape(-1).view(np.uint8) for h in hosts]
    received = multihost_utils.broadcast_one_to_all(as_bytes)
    out = [np.asarray(raw, np.uint8).view(host.dtype).reshape(host.shape) for raw, host in zip(received, hosts)]
    return jax.tree.unflatten(treedef, out)


def agree(ok: bool, what: str) -> None:
    """Every process learns whether process 0 succeeded at ``what``; the others stop if it did not."""
    if jax.process_count() == 1:
        return
    verdict = bool(broadcast_from_primary(np.asarray(ok, np.bool_)))
    if not verdict and not is_primary():
        raise ValueError(f"process 0 failed to {what} (its own error message says why)")
