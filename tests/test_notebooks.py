"""Every teaching notebook executes end to end (jupytext source -> notebook -> kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.py"))


@pytest.mark.parametrize("source", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(source, monkeypatch):
    import jupytext
    from nbclient import NotebookClient

    monkeypatch.setenv("SMOKE", "1")
    monkeypatch.setenv("PYTHONPATH", str(source.parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = jupytext.read(source)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(source.parent)}})
    client.execute()  # raises CellExecutionError (with the failing cell) on any error or failed assert
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not any(o.get("output_type") == "error" for o in outputs)
