"""`mdvi-lab gkd` and `mdvi-lab teacher-hacking` end to end on tiny settings; the U-shape flag and the law fit."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from experiments import cli
from experiments.teacher_hacking import fit_law, golden_rises, u_shape

TINY = [
    "--task.oracle.vocab-size", "6", "--task.oracle.num-hidden", "4", "--task.oracle.branching", "2",
    "--task.oracle.emission-support", "2", "--task.oracle.min-length", "3", "--task.oracle.max-length", "7",
    "--task.prompt-length", "2", "--task.heldout-prompts", "16", "--task.teacher.steps", "20",
    "--task.teacher.eval-every", "20", "--task.teacher.model.width", "16", "--task.teacher.model.num-layers", "1",
    "--task.teacher-data", "32", "--lm.model.width", "8", "--lm.batch-size", "8", "--seeds", "2", "--no-progress",
]  # fmt: skip


def test_gkd_command_writes_tidy_csv_summary_and_figures(tmp_path):
    out = tmp_path / "gkd"
    argv = ["gkd", *TINY, "--task.train-prompts", "16", "--lm.steps", "20", "--lm.eval-every", "10",
            "--divergences", "jsd:0.5", "--final-samples", "8", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    for name in ("metrics.csv", "summary.json", "golden_by_divergence.png", "quality_diversity.png", "golden_curves.png"):
        assert (out / name).exists(), name
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["variant"] for r in rows} == {f"jsd:0.5, lambda={lam}" for lam in ("0", "0.5", "1")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == 6 and summary["teacher"]["teacher_kl_token"] > 0
    for row in summary["variants"]:
        assert row["golden_seq"] > 0 and row["proxy_seq"] >= 0 and row["entropy"] > 0
    assert len(summary["on_policy_minus_supervised_golden"]) == 1
    assert cli.main(argv) == 2  # the folder holds a run: refused without --overwrite


@pytest.mark.slow
def test_teacher_hacking_command_and_its_analysis(tmp_path):
    out = tmp_path / "th"
    argv = ["teacher-hacking", *TINY, "--task.train-prompts", "16", "--prompts", "4", "--completions", "4",
            "--lm.steps", "30", "--lm.eval-every", "10", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["regime"][:3] for r in summary["regimes"]] == ["(a)", "(b)", "(c)", "(d)", "(e)"]
    assert (out / "golden_vs_proxy.png").exists()
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {r["metric"] for r in rows} == {"golden_seq", "golden_token", "proxy_seq", "proxy_token"}
    assert cli.main(["teacher-hacking", "--prompts", "100", "--completions", "8", "--out", str(tmp_path / "x")]) == 2


def test_u_shape_flag_and_power_law_fit():
    proxy = np.geomspace(1.0, 0.1, 8)
    assert not u_shape(0.5 * proxy**0.5, proxy, 0.02)  # golden keeps falling with the proxy
    golden = np.array([1.0, 0.7, 0.5, 0.45, 0.47, 0.5, 0.55, 0.6])
    assert u_shape(golden, proxy, 0.02)
    assert not u_shape(golden, proxy[::-1], 0.02)  # proxy rose too: not hacking, but the golden metric rose
    assert golden_rises(golden, 0.02) and not golden_rises(0.5 * proxy**0.5, 0.02)
    law = fit_law(0.5 * proxy**0.7, proxy)
    np.testing.assert_allclose([law["slope"], np.exp(law["intercept"]), law["r2"]], [0.7, 0.5, 1.0], rtol=1e-6)
    with pytest.raises(ValueError):
        cli_config = __import__("experiments.teacher_hacking", fromlist=["TeacherHackingConfig"]).TeacherHackingConfig
        cli_config(regimes=("z",)).validate()
