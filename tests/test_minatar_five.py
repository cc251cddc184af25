"""The five-game reproduction driver and its scripts, at tiny size on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.minatar_five import main
from envs.minatar import GAMES
from experiments.minatar import OFFICIAL_10M_RETURNS

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--seeds", "2", "--eval-every", "500", "--learning-starts", "500", "--target-period", "500",
        "--buffer-size", "1000", "--eval-episodes", "2"]


def test_official_table_covers_every_game_and_agent():
    assert set(OFFICIAL_10M_RETURNS) == set(GAMES)
    for returns in OFFICIAL_10M_RETURNS.values():
        assert set(returns) == {"dqn", "dqn+dvw", "mdqn", "mdqn+dvw"}


def test_driver_runs_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "five"
    args = ["--out", str(out), "--games", "breakout", "freeway", "--agents", "dqn", "mdqn+dvw",
            "--steps", "1500", *TINY]
    summary = main(args)
    table = {(r["game"], r["algorithm"]): r for r in summary["table"]}
    assert set(table) == {(g, a) for g in ("breakout", "freeway") for a in ("dqn", "mdqn+dvw")}
    assert all(r["step"] == 1500 and r["seeds"] == 2 for r in table.values())
    assert table[("breakout", "mdqn+dvw")]["paper_10M"] == OFFICIAL_10M_RETURNS["breakout"]["mdqn+dvw"]
    assert (out / "report" / "minatar_report.png").exists()
    assert json.loads((out / "plan.json").read_text())["steps"] == 1500

    # an interrupted run (no summary yet) resumes from its checkpoint; finished ones are skipped
    (out / "freeway-dqn" / "summary.json").unlink()
    before = (out / "freeway-dqn" / "metrics.csv").read_text()
    capsys.readouterr()
    main(args)
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == 3
    assert "freeway-dqn: resuming" in printed
    assert (out / "freeway-dqn" / "metrics.csv").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("script, extra", [
    ("cpu_minatar_five.sh", ["--steps", "1000"]),
    ("gpu_minatar_five.sh", ["--minutes", "3", "--max-steps", "1000"]),
])
def test_scripts_cover_all_five_games_at_tiny_size(script, extra, tmp_path):
    """The scripts unchanged (the GPU one sizes its runs by a time budget), all games and agents."""
    out = tmp_path / "five"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / script), "--out", str(out), *TINY, *extra],
                          env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((out / "report" / "summary.json").read_text())
    assert {r["game"] for r in table} == set(GAMES)
    assert len(table) == 20
