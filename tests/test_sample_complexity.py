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


def test_a_point_alone_gives_the_same_threshold_as_inside_a_sweep(tmp_path):
    """Issue 18, item 3: a point's random numbers and search come from its identity, not its position."""
    from experiments.sample_complexity import SampleComplexityConfig, run

    common = dict(copies=(), seeds=24, bootstrap=20, precision=1.5, progress=False)
    sweep = run(SampleComplexityConfig(horizons=(8, 16), algorithms=("ls", "vwls"), out=tmp_path / "sweep", **common))
    alone = run(SampleComplexityConfig(horizons=(16,), algorithms=("vwls",), out=tmp_path / "alone", **common))
    # the same point with a different master seed draws other numbers (the test can fail)
    run(SampleComplexityConfig(horizons=(16,), algorithms=("vwls",), out=tmp_path / "other", **{**common, "seed": 1}))

    def point(summary):
        (row,) = [r for r in summary["thresholds"] if r["algorithm"] == "vwls" and r["horizon"] == 16]
        return row

    for key in ("M_star", "N_star", "N_star_low", "N_star_high", "evaluations"):
        assert point(alone)[key] == point(sweep)[key], key
    evaluations = json.loads((tmp_path / "alone" / "summary.json").read_text())["thresholds"][0]["evaluations"]
    assert evaluations >= 2
    with (tmp_path / "alone" / "evaluations.csv").open() as a, (tmp_path / "other" / "evaluations.csv").open() as b:
        rates_alone = [r["success_rate"] for r in csv.DictReader(a)]
        rates_other = [r["success_rate"] for r in csv.DictReader(b)]
    assert rates_alone != rates_other


def test_point_keys_follow_the_identity_not_the_process():
    """The tag of an identity is the same in a process with another hash salt (no Python hash())."""
    import os
    import subprocess
    import sys

    from experiments.sample_complexity import identity_tag, point_identity

    a = point_identity("vwls", "F2", 32, 6)
    assert a == point_identity("vwls", "F2", 32.0, 6, copies=1)
    code = "from experiments.sample_complexity import identity_tag as t, point_identity as p; print(t(p('vwls', 'F2', 32, 6)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "JAX_PLATFORMS": "cpu"}
    printed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert int(printed) == identity_tag(a)
    others = [("ls", "F2", 32, 6), ("vwls", "F3", 32, 8), ("vwls", "F2", 64, 6), ("vwls", "F2", 16, 12, 2)]
    assert len({identity_tag(point_identity(*args)) for args in others} | {identity_tag(a)}) == 5


def test_f4_dimension_sweep_runs_beside_the_block_copies(tmp_path):
    """Issue 18, item 4: `--family F4 --dims ...` sweeps d at one decision, next to block copies."""
    out = tmp_path / "f4"
    code = cli.main(
        [
            "sample-complexity", "--family", "F4", "--horizons", "--copies", "1", "2", "--dims", "6", "10",
            "--dim-horizon", "8", "--algorithms", "ls", "oracle", "--seeds", "24", "--bootstrap", "20",
            "--precision", "1.5", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["thresholds"]
    f4 = sorted((r["algorithm"], r["dim"]) for r in rows if r["sweep"] == "dim-f4")
    assert f4 == [("ls", 6), ("ls", 10), ("oracle", 6), ("oracle", 10)]
    assert sorted(r["dim"] for r in rows if r["sweep"] == "dim") == [6, 6, 12, 12]
    for s in summary["slopes"]:
        assert {"slope_d", "slope_d_f4", "theory_d", "theory_d_paper"} <= set(s)
        assert s["slope_d_f4_ci"][0] <= s["slope_d_f4"] <= s["slope_d_f4_ci"][1]
    assert {s["algorithm"]: s["theory_d_paper"] for s in summary["slopes"]} == {"ls": 2.0, "oracle": 1.0}
    # F4 at d = 6 (the copies sweep's k = 1) and the F4 sweep's d = 6 are one point: searched once
    (first,) = [r for r in rows if r["sweep"] == "dim" and r["algorithm"] == "ls" and r["dim"] == 6]
    (again,) = [r for r in rows if r["sweep"] == "dim-f4" and r["algorithm"] == "ls" and r["dim"] == 6]
    assert again["reused"] and not first["reused"] and again["N_star"] == first["N_star"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dims", "6", "12"], "F4"),
        (["--family", "F4", "--dims", "5", "12"], "dims"),
        (["--horizons", "--copies"], "nothing to sweep"),
    ],
)
def test_bad_dimension_sweeps_are_reported(tmp_path, capsys, argv, message):
    code = cli.main(["sample-complexity", *argv, "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_horizon_fits_drop_small_horizons_and_model_the_lower_order_term():
    """Issue 18, item 2: the tail fit (H >= H_min) and the a H^p + b H^(p-1) fit of N*/ln H."""
    from experiments.sample_complexity import _fit

    horizons = [8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    rng = np.random.default_rng(0)
    rows, boots = [], {}
    for h in horizons:
        n = np.log(h) * 2.0 * h**2 * (h + 40.0)  # leading H^3 (log removed), a strong H^2 term
        rows.append({"algorithm": "vwls", "horizon": h, "N_star": n})
        boots[("vwls", h)] = n * np.exp(0.02 * rng.standard_normal(200))
    plain = _fit(rows, boots, ["vwls"], "horizon", divide_log=True)["vwls"].slope
    tail = _fit(rows, boots, ["vwls"], "horizon", divide_log=True, min_x=32.0)["vwls"].slope
    lower = _fit(rows, boots, ["vwls"], "horizon", divide_log=True, model="lower-order")["vwls"]
    assert plain < tail < 3.0  # dropping small horizons moves the slope toward the leading exponent
    assert lower.exponent == pytest.approx(3.0, abs=0.01) and lower.ci_low <= 3.0 <= lower.ci_high
    assert lower.correction == pytest.approx(40.0, rel=0.05)
    # too few points for a fit: none is reported
    assert _fit(rows[:3], boots, ["vwls"], "horizon", divide_log=True, model="lower-order") == {}
    assert _fit(rows, boots, ["vwls"], "horizon", min_x=128.0) == {}
