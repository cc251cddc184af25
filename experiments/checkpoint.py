"""Checkpoints of training state at chunk boundaries (orbax), behind one small interface.

orbax's API changes between releases; callers use only :class:`Checkpointer`. A checkpoint is
one orbax step holding two items, the state (any pytree of arrays; typed PRNG keys
round-trip) and a JSON record of what else a resume needs (``extra``), so orbax commits both
at once by renaming its temporary folder: a run killed during a save leaves the previous
checkpoints as they were. Older checkpoints are deleted only after the new one is committed,
and the newest ``keep`` stay, so a damaged newest checkpoint has a complete one behind it.
The record also holds a CRC-32 of every state leaf, checked on restore: data that reads
but differs from what was saved counts as damage.

:func:`pause_point` is the fault-injection hook of the run-safety tests.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

PAUSE_ENV = "MDVI_LAB_PAUSE_AT"
"""``point:index[,point:index...]``: pause at these points (e.g. ``checkpoint-save:2``)."""
PAUSE_MARKER_ENV = "MDVI_LAB_PAUSE_MARKER"
"""A file written when the run pauses (the test waits for it, then sends its signal)."""


def pause_point(point: str, index: int) -> None:
    """Pause forever at ``point`` number ``index`` when :data:`PAUSE_ENV` asks for it.

    Lets a test interrupt a run at an exact place (during a chunk, inside a checkpoint save,
    inside a results write): the run writes the marker file named by
    :data:`PAUSE_MARKER_ENV` and sleeps until it is killed. Does nothing otherwise.
    """
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or f"{point}:{index}" not in wanted.split(","):
        return
    marker = os.environ.get(PAUSE_MARKER_ENV)
    if marker:
        Path(marker).write_text(f"{point}:{index} {os.getpid()}\n")
    print(f"paused at {point}:{index}", file=sys.stderr, flush=True)
    while True:
        time.sleep(60)


class CheckpointDamaged(ValueError):
    """A checkpoint exists but cannot be read back as it was saved."""


def _from_orbax(unraisable) -> bool:
    """An unraisable exception left behind by orbax's reads after a failed restore."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return True  # a read finishing after orbax closed its event loop
    code = getattr(unraisable.object, "cr_code", None)  # a read coroutine never awaited to the end
    return code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename


def _ignore_orbax_leftovers() -> None:
    """Drop the reports of orbax reads still under way when a restore failed.

    When one array of a damaged checkpoint cannot be read, orbax closes its event loop while
    reads of other arrays are still under way; their failures are reported through
    ``sys.unraisablehook``, dozens of tracebacks that say nothing about the checkpoint.
    Every other unraisable exception still reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_orbax_leftovers", False):
        return

    def hook(unraisable):
        if not _from_orbax(unraisable):
            previous(unraisable)

    hook._drops_orbax_leftovers = True
    sys.unraisablehook = hook


@contextlib.contextmanager
def _quiet():
    """Silence orbax's logging (pages of tracebacks for one unreadable file) inside the block."""
    _ignore_orbax_leftovers()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        gc.collect()  # finalise abandoned read coroutines while the hook is in place
        logging.disable(previous)


def _leaf_bytes(leaf) -> bytes:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.ascontiguousarray(np.asarray(leaf)).tobytes()


def checksums(state) -> list[int]:
    """CRC-32 of each leaf of ``state`` (in tree order)."""
    return [zlib.crc32(_leaf_bytes(leaf)) for leaf in jax.tree.leaves(state)]


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self._ocp = ocp
        self.keep = keep
        self.directory = Path(directory).resolve()
        # Deletion is ours (after the new step is committed), so orbax keeps everything. In a
        # multi-process run only the process that makes the Checkpointer writes (process 0, with
        # the state gathered from every process), so orbax synchronises with no other process.
        alone = {}
        if jax.process_count() > 1:
            here = jax.process_index()
            self.directory.mkdir(parents=True, exist_ok=True)  # orbax will not create it for a subset
            alone = dict(create=False, multiprocessing_options=ocp.options.MultiprocessingOptions(
                primary_host=here, active_processes={here}))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=None, enable_async_checkpointing=False, **alone),
        )

    def steps(self) -> list[int]:
        """Committed checkpoints, newest first."""
        return sorted(self._manager.all_steps(), reverse=True)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[0] if steps else None

    def save(self, step: int, state, extra: dict) -> None:
        """Commit ``state`` and the JSON record ``extra`` as checkpoint ``step``, then drop old ones."""
        ocp = self._ocp
        record = {**extra, "checksums": checksums(state)}
        self._manager.save(
            step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(record))
        )
        self._manager.wait_until_finished()
        pause_point("checkpoint-save", step)
        for old in self.steps()[self.keep:]:
            self._manager.delete(old)

    def restore(self, like, step: int):
        """Checkpoint ``step`` in the structure, shapes and dtypes of ``like``: ``(state, extra)``.

        Raises :class:`CheckpointDamaged` (one line) if it cannot be read or does not match
        its checksums.
        """
        ocp = self._ocp
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        where = self.directory / str(step)
        try:
            with _quiet():
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore())
                )
            state, extra = restored["state"], restored["extra"]
        except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types for one damaged file
            reason = " ".join(str(error).split())[:160] or type(error).__name__
            raise CheckpointDamaged(f"checkpoint {where} is damaged ({type(error).__name__}: {reason})") from None
        if not isinstance(extra, dict) or "checksums" not in extra:
            raise CheckpointDamaged(f"checkpoint {where} is damaged (its record lacks the checksums)")
        if extra["checksums"] != checksums(state):
            raise CheckpointDamaged(f"checkpoint {where} is damaged (its data does not match its checksums)")
        return state, {k: v for k, v in extra.items() if k != "checksums"}

    def restore_latest(self, like, say: Callable[[str], None]):
        """The newest checkpoint that reads back whole: ``(step, state, extra)``, or None if there is none.

        A damaged checkpoint is reported through ``say`` (one line) and moved aside (to
        ``damaged-<step>``, kept for inspection) so that the run can save that step again.
        """
        for step in self.steps():
            try:
                state, extra = self.restore(like, step)
            except CheckpointDamaged as error:
                older = [s for s in self.steps() if s < step]
                fallback = f"falling back to checkpoint {older[0]}" if older else "no older checkpoint to fall back to"
                say(f"{error}; {fallback}")
                self._set_aside(step)
                continue
            return step, state, extra
        return None

    def _set_aside(self, step: int) -> None:
        source = self.directory / str(step)
        target = self.directory / f"damaged-{step}"
        suffix = 1
        while target.exists():
            target = self.directory / f"damaged-{step}-{suffix}"
            suffix += 1
        source.rename(target)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()
