"""Run directories, tidy CSV, config and manifest JSON, and seaborn figures.

Every experiment writes, under ``results/<run>/``:
  * ``metrics.csv``: one row per (variant, seed, step, metric) in long ("tidy") format;
  * ``config.json``: the frozen config that produced the run;
  * ``manifest.json``: package versions, Python, platform, JAX devices, git commit;
  * ``summary.json`` and one or more PNG figures.

Every file is written atomically (:func:`atomic_path`), and a folder holds one run only
(:class:`RunDir`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

PACKAGES = (
    "jax",
    "jaxlib",
    "dm-haiku",
    "optax",
    "rlax",
    "chex",
    "gymnax",
    "orbax-checkpoint",
    "numpy",
    "scipy",
    "pandas",
    "seaborn",
    "matplotlib",
    "tyro",
)

METRIC_COLUMNS = ("variant", "seed", "step", "metric", "value")


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on POSIX).

    A reader (or a run killed mid-write) sees either the old file or the new one, never a
    truncated one. On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, payload) -> Path:
    return write_text_atomic(path, json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")


def git_commit() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return {"commit": sha, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None}


def manifest() -> dict:
    """Versions, devices and commit: enough to tell two runs' software apart."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        import jax

        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except Exception as error:  # noqa: BLE001 - a manifest must never crash a run
        devices, backend = [f"unavailable: {error}"], None
    return {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax_backend": backend,
        "jax_devices": devices,
        "packages": versions,
        "git": git_commit(),
        "argv": sys.argv,
    }


RUN_MARKERS = ("config.json", "metrics.csv", "summary.json", "checkpoints")
"""What makes a folder hold a run: a new run refuses to write into such a folder."""


class RunExistsError(ValueError):
    """The output folder already holds a run and neither ``--overwrite`` nor ``--resume`` was given."""


class ConfigMismatchError(ValueError):
    """A resume asked for a computation other than the one the run folder holds."""


def holds_run(path: Path) -> list[str]:
    """The run markers present in ``path`` (empty: the folder is free for a new run)."""
    path = Path(path)
    return [name for name in RUN_MARKERS if (path / name).exists()]


def check_output_folder(path: Path) -> Path:
    """Refuse an ``--out`` that cannot be a folder we write in: a file, a path under a file, read-only."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == path else f"lies under a file ({parent})"
                raise ValueError(f"output folder {path} {what}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"output folder {path} is not writable ({parent} is read-only)")
            break
    return path


def flat_config(config, prefix: str = "") -> dict:
    """A config as ``{dotted.field: value}`` (nested dataclasses flattened), JSON-normalised."""
    record = _jsonable(config) if not isinstance(config, Mapping) else {k: _jsonable(v) for k, v in config.items()}
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def config_differences(saved, new, mutable: Iterable[str] = ()) -> list[str]:
    """The fields (dotted names) whose values differ between two configs, ``mutable`` ones aside."""
    saved, new = flat_config(saved), flat_config(new)
    mutable = set(mutable)

    def free(name):
        return any(name == m or name.startswith(m + ".") for m in mutable)

    return [
        f"{name}: {saved.get(name, '<absent>')!r} -> {new.get(name, '<absent>')!r}"
        for name in sorted(set(saved) | set(new))
        if not free(name) and saved.get(name, "<absent>") != new.get(name, "<absent>")
    ]


class RunDir:
    """A results folder that holds exactly one run.

    ``RunDir(path, config)`` starts a new run: it refuses a folder that already holds one
    (``RUN_MARKERS``) unless ``overwrite`` (then the old run is removed first), and writes
    ``config.json`` and ``manifest.json``. ``RunDir(path, config, resume=True)`` continues the
    run in ``path``: the saved ``config.json`` is the run's identity, a config that differs in
    any field outside ``mutable`` is refused with the list of differences, and ``config.json``
    is never rewritten.
    """

    def __init__(self, path: Path, config=None, *, overwrite: bool = False, resume: bool = False, mutable=()):
        self.path = check_output_folder(Path(path))
        if resume:
            saved = self.path / "config.json"
            if not saved.exists():
                raise ValueError(f"cannot resume: {self.path} holds no run (no config.json)")
            if config is not None:
                differences = config_differences(json.loads(saved.read_text()), config, mutable)
                if differences:
                    raise ConfigMismatchError(
                        f"cannot resume {self.path}: the run was made with other settings ("
                        + "; ".join(differences)
                        + "); start a new run with another --out, or resume with the saved settings"
                    )
            return
        present = holds_run(self.path)
        if present and not overwrite:
            raise RunExistsError(
                f"{self.path} already holds a run ({', '.join(present)}); pass --overwrite to replace it, "
                "or choose another --out"
            )
        if present:
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        if config is not None:
            write_json(self.path / "config.json", config)
        write_json(self.path / "manifest.json", manifest())

    def file(self, name: str) -> Path:
        return self.path / name

    def write_metrics(self, rows: Iterable[Mapping], name: str = "metrics.csv", columns=None) -> Path:
        return write_tidy_csv(self.file(name), rows, columns)

    def write_summary(self, payload, name: str = "summary.json") -> Path:
        return write_json(self.file(name), payload)


def write_tidy_csv(path: Path, rows: Iterable[Mapping], columns=None) -> Path:
    rows = list(rows)
    columns = list(columns or (rows[0].keys() if rows else METRIC_COLUMNS))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return Path(path)


def _csv_value(value):
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def tidy_rows(variant: str, metric: str, values, steps=None, **extra) -> list[dict]:
    """Long-format rows from a ``[seeds, steps]`` (or ``[steps]``) array of one metric."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[None]
    steps = np.arange(1, values.shape[1] + 1) if steps is None else np.asarray(steps)
    rows = []
    for seed, series in enumerate(values):
        for step, value in zip(steps, series):
            rows.append(
                {"variant": variant, "seed": seed, "step": int(step), "metric": metric, "value": float(value), **extra}
            )
    return rows


def format_table(rows: list[Mapping], columns: list[str] | None = None) -> str:
    """A plain-text table (also valid Markdown) for terminal summaries and reports."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0].keys())

    def fmt(value):
        if isinstance(value, float):
            if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
                return f"{value:.3e}"
            return f"{value:.4g}"
        return str(value)

    cells = [[fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"  # noqa: E731
    out = [line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)
