"""Execute every course notebook (``notebooks/NN_*.py``) at full size into ``docs/notebooks/``.

``make notebooks`` runs this. Each jupytext percent-format source is executed in a fresh
kernel (with ``SMOKE`` and ``SOLUTIONS`` unset, so the exercises stay open) and written as an
executed ``.ipynb`` next to this file's ``notebooks/`` folder; a notebook that fails stops the
build with the failing cell. Pass notebook stems to build only some:
``python docs/build_notebooks.py 01_soft_value``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks"
OUTPUT = ROOT / "docs" / "notebooks"
MAX_BYTES = 1_000_000  # the repository's per-file limit


def build(source: Path) -> float:
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    os.environ.pop("SMOKE", None)
    os.environ.pop("SOLUTIONS", None)
    os.environ["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    notebook = jupytext.read(source)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(SOURCES)}}).execute()
    seconds = time.perf_counter() - start
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"{source.stem}.ipynb"
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(notebook, tmp)
    size = tmp.stat().st_size
    if size > MAX_BYTES:
        tmp.unlink()
        raise SystemExit(f"{target.name} would be {size} bytes, over the {MAX_BYTES}-byte limit")
    tmp.replace(target)
    return seconds


def main(stems: list[str]) -> None:
    sources = sorted(SOURCES.glob("[0-9][0-9]_*.py"))
    if stems:
        sources = [s for s in sources if s.stem in stems]
        if not sources:
            raise SystemExit(f"no notebook among {stems}")
    for source in sources:
        seconds = build(source)
        print(f"{source.stem}: executed in {seconds:.1f} s -> docs/notebooks/{source.stem}.ipynb", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
