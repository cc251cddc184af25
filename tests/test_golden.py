"""Same numbers before and after a refactor: four experiments at small size, fixed seeds.

The record in ``tests/data/golden.json`` was taken from the code before the architecture
refactor; the comparison is exact up to a relative 1e-6 (floating-point reassociation
inside XLA after a restructured but equal computation is the only difference allowed).
"""

from __future__ import annotations

import json

import golden_runs
import pytest

RECORD = json.loads(golden_runs.DATA.read_text())


@pytest.mark.parametrize("name", sorted(golden_runs.RUNS))
def test_same_numbers_as_recorded(name, tmp_path):
    problems = golden_runs.compare(RECORD[name], golden_runs.run(name, tmp_path), rtol=1e-6, where=name)
    assert not problems, "\n".join(problems[:20])
