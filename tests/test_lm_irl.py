"""`mdvi-lab lm-irl` end to end on a tiny configuration: files, columns, summary, errors."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import cli


def test_lm_irl_command_writes_csv_json_and_figures(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        [
            "lm-irl", "--oracle.vocab-size", "6", "--oracle.num-hidden", "4", "--oracle.branching", "2",
            "--oracle.emission-support", "2", "--oracle.min-length", "3", "--oracle.max-length", "7",
            "--data-sizes", "16", "48", "--heldout-size", "32", "--lambdas", "0", "1", "--seeds", "2",
            "--lm.steps", "20", "--chunk", "10", "--lm.eval-every", "10", "--lm.batch-size", "8",
            "--lm.model.width", "16", "--lm.model.num-layers", "1", "--curve-samples", "8",
            "--final-samples", "12", "--temperatures", "0.8", "1.0", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    for name in ("metrics.csv", "config.json", "manifest.json", "summary.json", "quality_diversity.png", "training_curves.png"):
        assert (out / name).exists(), name
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"variant", "data_size", "lam", "seed", "step", "temperature", "metric", "value"}
    variants = {r["variant"] for r in rows}
    assert variants == {"MLE, N=16", "IRL-SFT lambda=1, N=16", "MLE, N=48", "IRL-SFT lambda=1, N=48"}
    curve = [r for r in rows if r["metric"] == "heldout_nll" and r["variant"] == "MLE, N=16" and r["seed"] == "0"]
    assert [int(r["step"]) for r in curve] == [10, 20]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == 8
    assert {row["variant"] for row in summary["variants"]} == variants
    for row in summary["variants"]:
        assert row["quality"] < 0 and 0 <= row["self_bleu"] <= 1 and -1 <= row["reward_spearman"] <= 1
        assert 0 <= row["reward_epic"] <= 1
    with (out / "reward_distance.csv").open() as handle:
        distance = list(csv.DictReader(handle))
    assert len(distance) == 8 and {r["metric"] for r in distance} == {"reward_epic"}
    assert len(summary["equal_quality"]) == 4
    assert summary["oracle"]["quality"] < 0
    assert "Diversity at the quality of MLE" in capsys.readouterr().out


def test_lm_irl_bad_input_is_reported(tmp_path, capsys):
    code = cli.main(["lm-irl", "--lambdas", "-1", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "lambdas must be finite and >= 0" in capsys.readouterr().err
    code = cli.main(["lm-irl", "--temperatures", "0.5", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "include 1.0" in capsys.readouterr().err


def test_lm_irl_refuses_a_bad_bleu_order_before_training(tmp_path, capsys):
    # Issue 10 item 12: --bleu-order 0 used to be refused only after training.
    from experiments.lm_irl import LMIRLConfig

    with pytest.raises(ValueError, match="bleu_order"):
        LMIRLConfig(bleu_order=0).validate()
    out = tmp_path / "never"
    code = cli.main(["lm-irl", "--bleu-order", "0", "--out", str(out), "--no-progress"])
    assert code == 2
    assert "bleu_order must be a positive integer" in capsys.readouterr().err
    assert not out.exists()  # refused before any folder or training
