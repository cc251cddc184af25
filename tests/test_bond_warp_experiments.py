"""`mdvi-lab bond` and `mdvi-lab warp` end to end on tiny settings: files, columns, summaries, errors."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import cli


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # ~2 min on a loaded 2-core machine, mostly XLA compilation
def test_bond_command_writes_csv_json_and_figure(tmp_path):
    out = tmp_path / "bond"
    code = cli.main(
        ["bond", "--seeds", "2", "--small-prompts", "2", "--prompts", "2", "--distil-steps", "100", "--anchor-period", "50",
         "--anchor-updates", "2", "--jbond-steps", "100", "--rloo-steps", "100", "--best-of", "4", "--betas", "0.1", "1.0",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    for name in ("metrics.csv", "summary.json", "bond.png"):
        assert (out / name).exists(), name
    rows = _rows(out / "metrics.csv")
    assert set(rows[0]) == {"section", "method", "seed", "step", "metric", "value"}
    assert {r["section"] for r in rows} == {"distil", "iterate", "preference", "preference_exact"}
    summary = json.loads((out / "summary.json").read_text())
    assert [row["method"] for row in summary["distil"]] == ["forward N=4", "backward N=4", "jeffreys N=4"]
    for row in summary["distil"]:  # every objective moves towards pi_BoN
        assert float(row["KL(BoN||pi) final [95% CI]"].split()[0]) < row["KL(BoN||pi) start"]
    assert [g["paper n^M"] for g in summary["iterate_growth"]] == [2, 4]


@pytest.mark.slow  # ~3 min: SFT and two RLOO rounds compile
def test_warp_command_writes_csv_json_and_figure(tmp_path):
    out = tmp_path / "warp"
    code = cli.main(
        ["warp", "--seeds", "2", "--sft.model.width", "16", "--sft.steps", "20", "--sft.eval-every", "10",
         "--train-prompts", "32", "--heldout-prompts", "3", "--rl.steps", "20", "--rl.eval-every", "10",
         "--rl.batch-size", "4", "--rl-chunk", "10", "--etas", "0.0", "0.5", "1.0", "--liti-eta", "0.5",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    for name in ("metrics.csv", "summary.json", "warp.png"):
        assert (out / name).exists(), name
    rows = _rows(out / "metrics.csv")
    assert {r["section"] for r in rows} == {"trajectory", "liti"}
    assert {r["round"] for r in rows} == {"1", "2"}
    liti = [r for r in rows if r["section"] == "liti" and r["x"] == "0.0" and r["metric"] == "kl_ref" and r["round"] == "1"]
    assert liti and all(abs(float(r["value"])) < 1e-4 for r in liti)  # eta = 0 is the SFT policy
    start = [r for r in rows if r["section"] == "trajectory" and r["x"] == "0" and r["metric"] == "kl_ref" and r["round"] == "1"]
    assert start and all(abs(float(r["value"])) < 1e-4 for r in start)  # RL starts at SFT
    summary = json.loads((out / "summary.json").read_text())
    assert {row["front"] for row in summary["dominance"]} == {"SLERP + LITI", "LERP + LITI"}


def test_bad_input_is_reported_before_running(tmp_path, capsys):
    assert cli.main(["bond", "--betas", "0", "--out", str(tmp_path / "a"), "--no-progress"]) != 0
    assert "betas" in capsys.readouterr().err
    assert cli.main(["warp", "--runs", "1", "--out", str(tmp_path / "b"), "--no-progress"]) != 0
    assert "runs" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
