"""Run directories, tidy CSV, config and manifest JSON, and seaborn figures.

Every experiment writes, under ``results/<run>/``:
  * ``metrics.csv``: one row per (variant, seed, step, metric) in long ("tidy") format;
  * ``config.json``: the frozen config that produced the run;
  * ``manifest.json``: package versions, Python, platform, JAX devices, git commit;
  * ``summary.json`` and one or more PNG figures.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
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


def write_json(path: Path, payload) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(payload), indent=2, sort_keys=False) + "\n")
    return path


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


class RunDir:
    """A results folder: ``RunDir(root / name)`` creates it and writes config + manifest."""

    def __init__(self, path: Path, config=None):
        self.path = Path(path)
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    return path


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


def plot_lines(
    data,
    path: Path,
    *,
    x: str = "step",
    y: str = "value",
    hue: str | None = "variant",
    title: str = "",
    xlabel: str | None = None,
    ylabel: str | None = None,
    logy: bool = False,
    logx: bool = False,
    errorbar=("ci", 95),
    reference_lines: Mapping[str, float] | None = None,
) -> Path:
    """A seaborn line plot with a 95% interval over seeds, saved as PNG (small, 110 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    sns.lineplot(data=data, x=x, y=y, hue=hue, errorbar=errorbar, ax=ax, seed=0, n_boot=300)
    for label, level in (reference_lines or {}).items():
        ax.axhline(level, ls="--", lw=1, color="grey")
        ax.annotate(label, (ax.get_xlim()[0], level), fontsize=8, color="grey", va="bottom")
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
