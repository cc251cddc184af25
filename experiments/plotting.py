"""Figures: one seaborn set-up, one way to open and save a figure, the common line plot.

Every experiment draws through :func:`figure` so the style is set in one place, the Agg
backend is selected only when no other backend was chosen (a notebook keeps its inline
backend), and the PNG is written atomically (:func:`experiments.results.atomic_path`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

DPI = 110


def pyplot():
    """``matplotlib.pyplot`` with the lab's seaborn theme; Agg only outside an interactive kernel."""
    import sys

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt


@contextlib.contextmanager
def figure(path: Path, nrows: int = 1, ncols: int = 1, figsize=(7, 4.2), **subplot_kwargs):
    """Open a figure, yield ``(fig, axes)``, then save it as a PNG at ``path`` and close it."""
    from experiments.results import atomic_path

    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, **subplot_kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)


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
    """A seaborn line plot with a 95% interval over seeds, saved as PNG."""
    import seaborn as sns

    with figure(path) as (_, ax):
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
    return Path(path)
