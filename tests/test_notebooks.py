"""Every teaching notebook executes end to end (jupytext source -> notebook -> kernel),
with its exercises' solutions (``SOLUTIONS=1``), and shows every figure it draws."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(source, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("SMOKE", "1")  # small problem sizes
    monkeypatch.setenv("SOLUTIONS", "1")  # the exercises' solutions run and are checked too
    monkeypatch.setenv("PYTHONPATH", str(source.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = jupytext.read(source)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}})
    client.execute()  # raises CellExecutionError (with the failing cell) on any error or failed assert
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [o for cell in code_cells for o in cell.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
    # Every cell that shows a figure must yield a PNG: a backend forced to Agg before pyplot
    # is imported yields text only, and this check then fails.
    plot_cells = [cell for cell in code_cells if "plt.show()" in cell.source]
    for cell in plot_cells:
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"no figure shown by the cell:\n{cell.source[:300]}"
    assert plot_cells, f"{source.name} shows no figure"
