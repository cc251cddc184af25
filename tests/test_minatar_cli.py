"""The minatar command: outputs, report, and kill-and-resume giving the uninterrupted metrics."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.dqn import DQNConfig
from experiments.minatar import MinAtarConfig, MinAtarReportConfig, report, run

ROOT = Path(__file__).resolve().parent.parent
AGENT = dict(eval_episodes=2, learning_starts=500, buffer_size=1000, target_period=200)
SMALL = dict(game="breakout", algo="mdqn+dvw", seeds=2, steps=500 + 8 * 200, eval_every=200,
             agent=DQNConfig(**AGENT), progress=False)


def _metrics(path: Path) -> list[tuple]:
    with (path / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] != "sps_aggregate"]  # timing differs
    return [(r["seed"], r["step"], r["metric"], r["value"]) for r in rows]


def _cli_args(out: Path, **extra) -> list[str]:
    args = ["minatar", "--out", str(out)]
    flags = {k: v for k, v in {**SMALL, **extra}.items() if k != "agent"}
    flags.update({f"agent.{k}": v for k, v in AGENT.items()})
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, str(value)]
    return args


@pytest.fixture(scope="module")
def finished_runs(tmp_path_factory):
    """Two finished runs (M-DQN+DVW with checkpoints, DQN without), shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    run(MinAtarConfig(out=root / "mdqn-dvw", **SMALL))
    run(MinAtarConfig(out=root / "dqn", checkpoint_every=0, **{**SMALL, "algo": "dqn"}))
    return root


def test_killed_run_resumes_to_the_uninterrupted_metrics(tmp_path, finished_runs):
    whole = finished_runs / "mdqn-dvw"
    for name in ("metrics.csv", "config.json", "manifest.json", "summary.json", "learning_curve.png"):
        assert (whole / name).exists(), name

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # inherits JAX_COMPILATION_CACHE_DIR from conftest
    process = subprocess.Popen([sys.executable, "-m", "experiments.cli", *_cli_args(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = killed / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        steps = [p for p in checkpoints.glob("*") if p.is_dir() and p.name.isdigit()] if checkpoints.exists() else []
        if steps:
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = _metrics(killed)
    assert 0 < len(partial) < len(_metrics(whole))  # killed mid-way

    run(MinAtarConfig(out=killed, resume=True, **SMALL))
    assert _metrics(killed) == _metrics(whole)


def test_restarting_over_checkpoints_needs_resume(finished_runs):
    with pytest.raises(ValueError, match="pass --resume"):
        run(MinAtarConfig(out=finished_runs / "mdqn-dvw", **SMALL))


def test_report_plots_runs_side_by_side(tmp_path, finished_runs):
    runs = (finished_runs / "dqn", finished_runs / "mdqn-dvw")
    summary = report(MinAtarReportConfig(runs=runs, out=tmp_path / "report"))
    assert (tmp_path / "report" / "minatar_report.png").exists()
    assert {row["algorithm"] for row in summary["table"]} == {"dqn", "mdqn+dvw"}
    assert all(row["seeds"] == 2 for row in summary["table"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(eval_every=300), "multiple of target_period"),
        (dict(steps=600), "at least one target period"),
        (dict(steps=1.5e3 + 0.5), "whole number"),
        (dict(seeds=0), "seeds"),
    ],
)
def test_bad_minatar_configs(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(MinAtarConfig(out=tmp_path / "x", **{**SMALL, **overrides}))
