"""Checkpoints of training state at chunk boundaries (orbax), behind one small interface.

orbax's API changes between releases; callers use only :class:`Checkpointer`. Saving is
synchronous and keeps the newest ``max_to_keep`` steps. Typed PRNG keys round-trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax


class Checkpointer:
    def __init__(self, directory: Path, max_to_keep: int = 1):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(directory).resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=False),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, extra: dict | None = None) -> None:
        """Save ``state`` (any pytree of arrays) as ``step``, plus a JSON side file ``extra``."""
        self._manager.save(step, args=self._ocp.args.StandardSave(state))
        self._manager.wait_until_finished()
        if extra is not None:
            (self.directory / f"extra-{step}.json").write_text(json.dumps(extra))
            for old in self.directory.glob("extra-*.json"):
                if old.name != f"extra-{step}.json" and int(old.stem.split("-")[1]) not in self._manager.all_steps():
                    old.unlink()

    def restore(self, like, step: int | None = None):
        """Restore into the structure, shapes and dtypes of ``like``; returns ``(state, extra)``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(self._ocp.utils.to_shape_dtype_struct, like)
        state = self._manager.restore(step, args=self._ocp.args.StandardRestore(abstract))
        extra_path = self.directory / f"extra-{step}.json"
        extra = json.loads(extra_path.read_text()) if extra_path.exists() else None
        return state, extra

    def close(self) -> None:
        self._manager.close()
