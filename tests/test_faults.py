"""Fault injection for ``mdvi-lab minatar``: kills, damaged checkpoints, changed flags, bad input.

A small run (2 seeds, 4 chunks of 500 steps, a checkpoint after each) is interrupted with
SIGINT or SIGKILL at exact places through the ``MDVI_LAB_PAUSE_AT`` hook (the run writes a
marker file and sleeps there): during a chunk (computed, nothing written yet), inside a
checkpoint save (step committed, older ones not yet removed) and inside the metrics write
(new file written, not yet renamed). Every ``--resume`` must end with the metrics of an
uninterrupted run. Every expected failure must end in exit code 2 and one line on stderr.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import cli
from experiments.checkpoint import PAUSE_ENV, PAUSE_MARKER_ENV, Checkpointer, checksums

ROOT = Path(__file__).resolve().parent.parent
RUN = ["--game", "breakout", "--algo", "mdqn+dvw", "--seeds", "2", "--steps", "3000",
       "--agent.learning-starts", "1000", "--agent.target-period", "500", "--eval-every", "500",
       "--agent.buffer-size", "2000", "--agent.eval-episodes", "2", "--no-progress"]
CHUNKS = 4


def _metrics(path: Path) -> list[tuple]:
    with (path / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] != "sps_aggregate"]  # timing differs
    return [(r["variant"], r["seed"], r["step"], r["metric"], r["value"]) for r in rows]


def _cli(capsys, *args, command: str = "minatar") -> tuple[int, str, str]:
    """Run the CLI in this process; flags given twice take the later value (``*RUN, *changes``)."""
    capsys.readouterr()
    try:
        code = cli.main([command, *args])
    except SystemExit as exit_:  # tyro's own usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_refusal(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _assert_parse_refusal(code: int, err: str, *needles: str) -> None:
    """A config's own validation, which tyro reports in its framed usage error: exit 2, no traceback."""
    assert code == 2 and "Traceback" not in err, err
    text = " ".join(err.split())
    for needle in needles:
        assert needle in text, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run, checkpointed after every chunk."""
    out = tmp_path_factory.mktemp("faults") / "reference"
    assert cli.main(["minatar", *RUN, "--out", str(out)]) == 0
    return out


def _paused_run(out: Path, point: str) -> subprocess.Popen:
    """Start the run in a subprocess and return once it sleeps at ``point``."""
    marker = out.parent / f"{out.name}.paused"
    env = {**os.environ, "PYTHONPATH": str(ROOT), PAUSE_ENV: point, PAUSE_MARKER_ENV: str(marker)}
    # pytest-xdist workers ignore SIGINT and a child inherits that, so Python would not turn SIGINT
    # into KeyboardInterrupt there: the child restores Python's handler first, as in a shell
    start = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "sys.argv = ['mdvi-lab', *sys.argv[1:]]; runpy.run_module('experiments.cli', run_name='__main__')")
    process = subprocess.Popen([sys.executable, "-c", start, "minatar", *RUN, "--out", str(out)],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before pausing at {point}: {process.communicate()[1][-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError(f"the run did not reach {point}")
        time.sleep(0.2)
    return process


def _interrupt(process: subprocess.Popen, sig: int) -> str:
    process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:  # kill it here, or the leftover process fails the next test too
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"the run did not exit within 600 s of signal {sig}: {err[-2000:]}") from None
    if sig == signal.SIGINT:
        assert process.returncode == 130, err
        assert "Traceback" not in err and err.strip().splitlines()[-1] == "mdvi-lab minatar: interrupted", err
    else:
        assert process.returncode == -signal.SIGKILL
    return err


def _committed_steps(out: Path) -> list[int]:
    return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())


KILLS = [
    pytest.param("chunk:2", signal.SIGKILL, id="chunk-sigkill"),
    pytest.param("checkpoint-save:2", signal.SIGINT, id="checkpoint-save-sigint"),
    pytest.param("metrics-write:3", signal.SIGKILL, id="metrics-write-sigkill"),
    pytest.param("chunk:3", signal.SIGINT, id="chunk-sigint", marks=pytest.mark.slow),
    pytest.param("checkpoint-save:3", signal.SIGKILL, id="checkpoint-save-sigkill", marks=pytest.mark.slow),
    pytest.param("metrics-write:2", signal.SIGINT, id="metrics-write-sigint", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("point, sig", KILLS)
def test_an_interrupted_run_resumes_to_the_uninterrupted_metrics(point, sig, reference, tmp_path, capsys):
    out = tmp_path / "run"
    process = _paused_run(out, point)
    where, index = point.split(":")
    index = int(index)
    config_before = (out / "config.json").read_bytes()
    _interrupt(process, sig)
    if where == "checkpoint-save":
        # killed after committing step `index`, before removing older ones: nothing is lost
        assert _committed_steps(out) == list(range(1, index + 1))[-3:]
    if where == "metrics-write":
        # the new file was written but not renamed: the previous one is intact and complete
        rows = _metrics(out)
        assert len({r[2] for r in rows}) == index - 1
        assert rows == [r for r in _metrics(reference) if int(r[2]) <= int(rows[-1][2])]
    code, _, err = _cli(capsys, *RUN, "--out", str(out), "--resume")
    assert code == 0, err
    assert _metrics(out) == _metrics(reference)
    assert (out / "config.json").read_bytes() == config_before  # a resume never rewrites the identity


# -- damaged checkpoints ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(reference):
    """A state of the run's structure, and the two checkpoints the finished reference run keeps."""
    from experiments.minatar import MinAtarConfig, Runner

    runner = Runner(MinAtarConfig(game="breakout", algo="mdqn+dvw", seeds=2, steps=3000, eval_every=500,
                                  agent=_agent(), progress=False))
    like = runner.initial_state()
    checkpointer = Checkpointer(reference / "checkpoints")
    assert checkpointer.steps() == [CHUNKS, CHUNKS - 1]
    saved = {step: checksums(checkpointer.restore(like, step)[0]) for step in checkpointer.steps()}
    checkpointer.close()
    return like, saved


def _agent():
    from agents.dqn import DQNConfig

    return DQNConfig(learning_starts=1000, target_period=500, buffer_size=2000, eval_episodes=2)


def _damage(path: Path, mode: str) -> None:
    data = path.read_bytes()
    if mode == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif mode == "empty":
        path.write_bytes(b"")
    elif mode == "random":
        path.write_bytes(np.random.default_rng(0).bytes(max(len(data), 16)))
    else:
        path.unlink()


def _files_of_newest(reference: Path) -> list[str]:
    newest = reference / "checkpoints" / str(CHUNKS)
    return sorted(str(p.relative_to(newest)) for p in newest.rglob("*") if p.is_file())


# The files a restore cannot do without: damage to any of them must be detected.
ESSENTIAL = ("state/manifest.ocdbt", "extra/metadata")
# Metadata orbax reads when present (damaged: detected; deleted: rebuilt from the template).
METADATA = ("state/_METADATA", "state/array_metadatas/process_0")


def _check_damage(reference, template, tmp_path, name, mode, essential):
    like, saved = template
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", directory)
    _damage(directory / str(CHUNKS) / name, mode)
    messages = []
    checkpointer = Checkpointer(directory)
    step, state, extra = checkpointer.restore_latest(like, say=messages.append)
    checkpointer.close()
    if essential or messages:
        assert step == CHUNKS - 1, (name, mode)
        assert len(messages) == 1 and "\n" not in messages[0], messages
        assert f"checkpoint {directory / str(CHUNKS)} is damaged" in messages[0]
        assert f"falling back to checkpoint {CHUNKS - 1}" in messages[0]
        assert (directory / f"damaged-{CHUNKS}").is_dir()  # kept for inspection, out of the way
    else:  # damage to a file the restore does not read: the data are intact (checksummed)
        assert step == CHUNKS
    assert checksums(state) == saved[step]
    assert extra["next_chunk"] == step


@pytest.mark.parametrize("mode", ["truncate", "empty", "random", "delete"])
@pytest.mark.parametrize("name", ESSENTIAL + METADATA + ("data",))
def test_a_damaged_file_is_named_and_the_run_falls_back(name, mode, reference, template, tmp_path):
    essential = name in ESSENTIAL or name == "data" or (name in METADATA and mode != "delete")
    if name == "data":  # the largest array file: the replay buffers
        files = _files_of_newest(reference)
        name = max(files, key=lambda f: (reference / "checkpoints" / str(CHUNKS) / f).stat().st_size)
    _check_damage(reference, template, tmp_path, name, mode, essential=essential)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["truncate", "empty", "random", "delete"])
def test_damage_to_any_file_is_harmless_or_named(mode, reference, template, tmp_path):
    for i, name in enumerate(_files_of_newest(reference)):
        _check_damage(reference, template, tmp_path / str(i), name, mode, essential=name in ESSENTIAL)


def test_a_leftover_partial_save_is_ignored(reference, template, tmp_path):
    """orbax writes into a temporary folder and renames it when complete: a killed save is invisible."""
    like, saved = template
    directory = tmp_path / "checkpoints"
    shutil.copytree(reference / "checkpoints", directory)
    partial = directory / f"{CHUNKS + 1}.orbax-checkpoint-tmp-1234"
    shutil.copytree(directory / str(CHUNKS) / "extra", partial / "extra")
    checkpointer = Checkpointer(directory)
    step, state, _ = checkpointer.restore_latest(like, say=pytest.fail)
    checkpointer.close()
    assert step == CHUNKS and checksums(state) == saved[CHUNKS]


def test_resume_through_a_damaged_checkpoint_gives_the_uninterrupted_metrics(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    data = max((p for p in (out / "checkpoints" / str(CHUNKS)).rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    _damage(data, "random")
    code, _, err = _cli(capsys, *RUN, "--out", str(out), "--resume")
    assert code == 0, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "is damaged" in lines[0] and f"falling back to checkpoint {CHUNKS - 1}" in lines[0], err
    assert _metrics(out) == _metrics(reference)


@pytest.mark.slow
def test_resume_with_every_checkpoint_gone_says_so_and_starts_over(reference, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for step in (out / "checkpoints").iterdir():
        shutil.rmtree(step)
    code, _, err = _cli(capsys, *RUN, "--out", str(out), "--resume")
    assert code == 0, err
    assert "has no complete checkpoint; starting it from the beginning" in err
    assert _metrics(out) == _metrics(reference)


# -- refusals -----------------------------------------------------------------------------------

CHANGED = [
    (["--algo", "dqn"], "cli.algo"),
    (["--game", "asterix"], "cli.game"),
    (["--protocol", "gymnax"], "cli.protocol"),
    (["--seeds", "3"], "cli.seeds"),
    (["--steps", "3500"], "cli.steps"),
    (["--eval-every", "1000"], "cli.eval_every"),
    (["--seed", "1"], "cli.seed"),
    (["--prng", "threefry2x32"], "cli.prng"),
    (["--agent.discount", "0.9"], "cli.agent.discount"),
    (["--agent.batch-size", "16"], "cli.agent.batch_size"),
    (["--agent.kl-weight", "0.03"], "cli.agent.kl_weight"),
    (["--agent.entropy-weight", "0.01"], "cli.agent.entropy_weight"),
    (["--agent.weight-min", "0.2"], "cli.agent.weight_min"),
    (["--agent.learning-rate", "1e-3"], "cli.agent.learning_rate"),
]


def test_resume_with_a_changed_flag_is_refused_with_the_differing_fields(reference, capsys):
    config = (reference / "config.json").read_bytes()
    for change, field in CHANGED:
        code, _, err = _cli(capsys, *RUN, *change, "--out", str(reference), "--resume")
        _assert_one_line_refusal(code, err, "cannot resume", field)
    # --steps also changes the chunk plan, which is part of the identity
    code, _, err = _cli(capsys, *RUN, "--steps", "3500", "--out", str(reference), "--resume")
    _assert_one_line_refusal(code, err, "chunks")
    assert (reference / "config.json").read_bytes() == config


def test_resume_may_change_only_the_named_mutable_fields(reference, tmp_path, capsys):
    from experiments.minatar import MUTABLE_ON_RESUME

    assert set(MUTABLE_ON_RESUME) == {"cli.resume", "cli.progress", "cli.overwrite", "cli.checkpoint_every", "cli.out",
                                      # where the seeds run (devices, hosts) changes no result
                                      "cli.shard", "cli.coordinator_address", "cli.num_processes", "cli.process_id"}
    moved = tmp_path / "moved"  # a run folder moved elsewhere: --out differs from the saved one
    shutil.copytree(reference, moved)
    code, out, err = _cli(capsys, *RUN, "--checkpoint-every", "2", "--progress", "--out", str(moved), "--resume")
    assert code == 0, err
    assert f"at chunk {CHUNKS}/{CHUNKS}" in out
    assert _metrics(moved) == _metrics(reference)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--out", "{missing}", "--resume"], ("cannot resume", "holds no run")),
        (["--out", "{reference}"], ("already holds a run", "--resume")),
        (["--out", "{reference}/config.json"], ("is a file",)),
        (["--steps", "1e20", "--out", "{missing}"], ("parse", "steps must be a whole number")),
        (["--seeds", "100000000", "--out", "{missing}"], ("the run needs about", "GiB")),
        (["--resume", "--checkpoint-every", "0", "--out", "{reference}"], ("parse", "--resume needs checkpoints")),
        (["--algo", "ddqn", "--out", "{missing}"], ("parse", "ddqn")),
        (["--agent.discount", "1.0", "--out", "{missing}"], ("parse", "discount has an invalid value")),
    ],
)
def test_expected_failures_are_one_line(args, needles, reference, tmp_path, capsys):
    args = [a.format(missing=tmp_path / "missing", reference=reference) for a in args]
    code, _, err = _cli(capsys, *RUN, *args)
    if needles[0] == "parse":  # refused while tyro builds the config
        _assert_parse_refusal(code, err, *needles[1:])
    else:  # refused by the run
        _assert_one_line_refusal(code, err, *needles)
    assert not (tmp_path / "missing").exists()


# -- report -------------------------------------------------------------------------------------


def _report(capsys, *args):
    return _cli(capsys, *args, command="minatar-report")


def _relabel(source: Path, target: Path, **cli_changes) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((target / "config.json").read_text())
    meta["cli"].update(cli_changes)
    (target / "config.json").write_text(json.dumps(meta))
    return target


def test_report_keeps_protocols_apart_and_refuses_duplicates(reference, tmp_path, capsys):
    gymnax = _relabel(reference, tmp_path / "gymnax", protocol="gymnax")
    code, out, err = _report(capsys, "--runs", str(reference), str(gymnax), "--out", str(tmp_path / "report"))
    assert code == 0, err
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert sorted(row["algorithm"] for row in summary) == ["mdqn+dvw (protocol=gymnax)", "mdqn+dvw (protocol=paper)"]
    assert all(row["seeds"] == 2 for row in summary)
    # the same run twice, or a copy of it, would count its seeds twice
    copy = _relabel(reference, tmp_path / "copy")
    for runs in ((reference, reference), (reference, copy)):
        code, _, err = _report(capsys, "--runs", *map(str, runs), "--out", str(tmp_path / "report2"))
        _assert_one_line_refusal(code, err, "repeats seed", "pass each run once")
    # another master seed is another sample of the same configuration: pooled
    other = _relabel(reference, tmp_path / "seed1", seed=1)
    code, _, err = _report(capsys, "--runs", str(reference), str(other), "--out", str(tmp_path / "report3"))
    assert code == 0, err
    summary = json.loads((tmp_path / "report3" / "summary.json").read_text())
    assert [(row["algorithm"], row["seeds"]) for row in summary] == [("mdqn+dvw", 4)]


def test_report_output_never_replaces_a_run_and_names_an_empty_run(reference, tmp_path, capsys):
    code, _, err = _report(capsys, "--runs", str(reference), "--out", str(reference))
    _assert_one_line_refusal(code, err, "is a run folder")
    code, _, err = _report(capsys, "--runs", str(reference), "--out", str(tmp_path / "r"))
    assert code == 0, err
    code, _, err = _report(capsys, "--runs", str(reference), "--out", str(tmp_path / "r"))
    _assert_one_line_refusal(code, err, "already holds a report", "--overwrite")
    empty = _relabel(reference, tmp_path / "empty")
    (empty / "metrics.csv").write_text("")
    code, _, err = _report(capsys, "--runs", str(empty), "--out", str(tmp_path / "r2"))
    _assert_one_line_refusal(code, err, f"run {empty}")
