"""`mdvi-lab warm` and `mdvi-lab entailment-rl` end to end on tiny tasks: files, columns, summaries, errors."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import cli

TINY_MODEL = ["--sft.model.width", "16", "--sft.model.num-layers", "1", "--sft.steps", "20", "--sft.eval-every", "10",
              "--rl.steps", "20", "--rl.eval-every", "10", "--rl.batch-size", "4", "--rl-chunk", "10", "--seeds", "2",
              "--no-progress"]  # fmt: skip


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow  # ~3 min on a loaded 2-core machine, mostly XLA compilation
def test_warm_command_writes_csv_json_and_figures(tmp_path):
    out = tmp_path / "warm"
    code = cli.main(
        [
            "warm", "--task.oracle.vocab-size", "4", "--task.oracle.num-hidden", "4", "--task.oracle.min-length", "3",
            "--task.oracle.max-length", "4", "--task.prompt-length", "2", "--task.max-completion", "2",
            "--task.num-targets", "1", "--task.num-forbidden", "1", "--task.target-length", "1",
            "--train-prompts", "32", "--heldout-prompts", "3", "--eval-pairs", "32", "--reward.steps", "10",
            "--reward.warmup-steps", "2", "--learning-rates", "1e-3", "3e-3", "--best-of", "1", "4",
            "--path-points", "3", "--out", str(out), *TINY_MODEL,
        ]
    )  # fmt: skip
    assert code == 0
    for name in ("metrics.csv", "summary.json", "accuracy.png", "overoptimisation.png"):
        assert (out / name).exists(), name
    rows = _rows(out / "metrics.csv")
    assert set(rows[0]) == {"section", "variant", "seed", "x", "metric", "value"}
    assert {r["section"] for r in rows} == {"accuracy", "path", "best_of_n", "rl", "rl_train"}
    summary = json.loads((out / "summary.json").read_text())
    assert [row["reward"] for row in summary["accuracy"]] == ["single (mean of M)", "ensemble", "WARM"]
    for row in summary["accuracy"]:
        assert 0 <= row["clean"] <= 1 and 0 <= row["ood"] <= 1
    bon = {row["reward"]: row for row in summary["best_of_n"]}
    # golden Best-of-N improves on the reference exactly (N = 4 against N = 1)
    assert bon["golden"]["golden@N=4"] > bon["golden"]["golden@N=1"]
    assert len({round(row["golden@N=1"], 6) for row in summary["best_of_n"]}) == 1  # N = 1 is the SFT policy for every reward
    rl_rows = [r for r in rows if r["section"] == "rl" and r["metric"] == "kl_ref"]
    assert {int(r["x"]) for r in rl_rows} == {0, 10, 20}
    assert all(float(r["value"]) < 1e-4 for r in rl_rows if r["x"] == "0")  # RL starts at the SFT policy


@pytest.mark.slow
def test_entailment_rl_command_writes_csv_json_and_figures(tmp_path):
    out = tmp_path / "erl"
    code = cli.main(
        [
            "entailment-rl", "--task.oracle.vocab-size", "5", "--task.oracle.num-hidden", "4", "--task.oracle.min-length", "4",
            "--task.oracle.max-length", "5", "--task.source-length", "3", "--task.max-summary", "2", "--task.num-salient", "2",
            "--train-sources", "32", "--heldout-sources", "3", "--classifier-pairs", "64", "--classifier.steps", "10",
            "--classifier.warmup-steps", "2", "--betas", "0.1", "1.0", "--out", str(out), *TINY_MODEL,
        ]
    )  # fmt: skip
    assert code == 0
    for name in ("metrics.csv", "summary.json", "scores_vs_beta.png", "scores_vs_kl.png"):
        assert (out / name).exists(), name
    rows = _rows(out / "metrics.csv")
    assert set(rows[0]) == {"policy", "beta", "seed", "step", "metric", "value"}
    summary = json.loads((out / "summary.json").read_text())
    policies = [(row["policy"], row["beta"]) for row in summary["final"]]
    assert policies == [("SFT", ""), ("RL", 0.1), ("optimum pi*", 0.1), ("RL", 1.0), ("optimum pi*", 1.0)]
    for row in summary["final"]:
        assert 0 <= row["consistency"] <= 1 and 0 <= row["informativeness"] <= 1 and 1 <= row["length"] <= 2
    # a larger beta keeps the optimum closer to SFT
    optimum = {row["beta"]: row for row in summary["final"] if row["policy"] == "optimum pi*"}
    assert optimum[1.0]["kl_ref"] < optimum[0.1]["kl_ref"]


def test_bad_input_is_reported_before_training(tmp_path, capsys):
    assert cli.main(["warm", "--learning-rates", "1e-3", "--out", str(tmp_path / "a"), "--no-progress"]) != 0
    assert "learning_rates" in capsys.readouterr().err
    assert cli.main(["entailment-rl", "--betas", "0", "--out", str(tmp_path / "b"), "--no-progress"]) != 0
    assert "betas" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
