"""The mdvi-lab command line: outputs of `tabular`, clear errors, the demo registry."""

from __future__ import annotations

import csv
import json

import pytest

from experiments import cli


def test_tabular_command_writes_csv_json_and_png(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(
        [
            "tabular", "--env", "chain", "--num-states", "8", "--iterations", "12",
            "--samples-per-pair", "2", "8", "--seeds", "6", "--chunk", "5",
            "--out", str(out), "--no-progress",
        ]
    )
    assert code == 0
    for name in ("metrics.csv", "config.json", "manifest.json", "summary.json", "gap.png"):
        assert (out / name).exists(), name
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(rows[0]) == {"variant", "seed", "step", "metric", "value"}
    # exact: 12 rows; each sampled M: 6 seeds x 12 iterations
    assert len(rows) == 12 + 2 * 6 * 12
    summary = json.loads((out / "summary.json").read_text())
    calls = {v["variant"]: v["calls_per_run"] for v in summary["variants"]}
    assert calls["M=8"] == 12 * 8 * 2 * 8  # K * S * A * M
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["packages"]["jax"] and "commit" in manifest["git"]
    assert json.loads((out / "config.json").read_text())["num_states"] == 8
    assert "gap" in capsys.readouterr().out


def test_bad_discount_is_reported_not_traced(tmp_path, capsys):
    code = cli.main(["tabular", "--discount", "1.0", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert "discount must lie in [0, 1)" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert cli.main(["tabularr"]) == 2
    assert "unknown command 'tabularr'" in capsys.readouterr().err


def test_unknown_env_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        cli.main(["tabular", "--env", "maze"])


def test_every_demo_section_resolves():
    import importlib

    from experiments.demo import SECTIONS

    for module, function in SECTIONS:
        assert callable(getattr(importlib.import_module(module), function))
