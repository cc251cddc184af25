"""The N* search and the `mdvi-lab sample-complexity` command (a tiny run)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from experiments import cli
from experiments.sample_complexity import Evaluation, search_threshold


def _step_evaluator(threshold, seeds=50):
    calls = []

    def evaluate(M):
        calls.append(M)
        return Evaluation(M, float(10 * M), np.full(seeds, M >= threshold))

    return evaluate, calls


@pytest.mark.parametrize("start", [1, 40, 5000])
def test_search_brackets_the_threshold_within_the_precision(start):
    evaluate, calls = _step_evaluator(637)
    m_star, evaluations = search_threshold(evaluate, start, 0.9, 1.2, 30)
    assert m_star >= 637
    failing = [m for m, e in evaluations.items() if e.rate < 0.9]
    assert max(failing) < 637 and m_star / max(failing) <= 1.2
    assert len(calls) == len(set(calls))  # nothing evaluated twice
    assert len(calls) <= 16


def test_search_stops_at_one_and_reports_failure():
    evaluate, _ = _step_evaluator(1)
    assert search_threshold(evaluate, 64, 0.9, 1.2, 30)[0] == 1
    evaluate, _ = _step_evaluator(10**9)
    with pytest.raises(RuntimeError, match="max_doublings"):
        search_threshold(evaluate, 1, 0.9, 1.2, 5)


def test_sample_complexity_command_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "sc"
    code = cli.main(
        [
            "sample-complexity", "--horizons", "8", "16", "--copies", "--algorithms", "ls", "oracle",
            "--seeds", "40", "--bootstrap", "50", "--precision", "1.5", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    for name in ("thresholds.csv", "evaluations.csv", "summary.json", "config.json", "manifest.json", "sample_complexity.png"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    slopes = {s["algorithm"]: s for s in summary["slopes"]}
    assert set(slopes) == {"ls", "oracle"} and slopes["ls"]["theory_H"] == 4
    assert slopes["ls"]["slope_H_ci"][0] <= slopes["ls"]["slope_H"] <= slopes["ls"]["slope_H_ci"][1]
    with (out / "thresholds.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for row in rows:
        # N* is a measured total: at least K iterations of at least one sample per support point
        assert float(row["N_star"]) >= int(row["iterations"])
        assert float(row["N_star_low"]) <= float(row["N_star"]) * 1.0001
    with (out / "evaluations.csv").open() as handle:
        evaluations = list(csv.DictReader(handle))
    assert {int(r["seeds"]) for r in evaluations} == {40}
    # at each point the threshold is an evaluated total whose success rate met 0.9
    for row in rows:
        matching = [
            e for e in evaluations
            if e["algorithm"] == row["algorithm"] and e["horizon"] == row["horizon"] and float(e["calls"]) == float(row["N_star"])
        ]  # fmt: skip
        assert matching and float(matching[0]["success_rate"]) >= 0.9
    assert "exponents" in capsys.readouterr().out


def test_bad_settings_are_reported(tmp_path, capsys):
    code = cli.main(["sample-complexity", "--epsilon", "50", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "too large" in capsys.readouterr().err
    code = cli.main(["sample-complexity", "--seeds", "1", "--out", str(tmp_path / "y"), "--no-progress"])
    assert code == 2


@pytest.mark.slow
def test_variance_weighting_beats_least_squares_increasingly_with_the_horizon(tmp_path):
    """On F2 the LS / VWLS sample ratio grows with H; on the F3 ablation it stays near 1."""
    from experiments.sample_complexity import SampleComplexityConfig, run

    ratios = {}
    for family in ("F2", "F3"):
        config = SampleComplexityConfig(
            family=family, horizons=(8, 32), copies=(), algorithms=("ls", "vwls"), seeds=200,
            bootstrap=100, out=tmp_path / family, progress=False,
        )  # fmt: skip
        summary = run(config)
        ratios[family] = {r["horizon"]: r["ls/vwls"] for r in summary["ratios"]}
    assert ratios["F2"][32] > 2.5 * ratios["F2"][8]
    assert ratios["F3"][32] < 2.0
