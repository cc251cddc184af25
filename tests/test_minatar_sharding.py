"""``mdvi-lab minatar --shard`` and multi-process runs give the unsharded run's metrics.

Runs with the same number of seeds per device run the same XLA program on every device and
agree to the last bit: four devices of one process, two processes of two devices, and a killed
sharded run resumed on either. Against the unsharded run (four seeds vmapped on one device)
the agreement is to float rounding: XLA:CPU vectorises a reduction differently when the
vmapped seed axis is 4 wide than when it is 1 wide (``jit(vmap(lambda a: a.sum(0)))`` on
``[4, 32, 32]`` and on its first row differ in the last bit), so the same seed's losses differ
by about one float32 ulp; the test bounds that difference and asserts every discrete
outcome (evaluation returns and lengths, training episode returns) equal.

XLA flags (the forced host device count) must be set before JAX starts, so every sharded run
is a subprocess with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; the reference is
an unsharded run in this process (one CPU device). Multi-process runs join through
``jax.distributed.initialize`` over localhost with JAX's CPU collectives (gloo).
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import cli
from experiments.checkpoint import PAUSE_ENV, PAUSE_MARKER_ENV
from experiments.distributed import cluster_from

ROOT = Path(__file__).resolve().parent.parent
RUN = ["--game", "breakout", "--algo", "mdqn+dvw", "--seeds", "4", "--steps", "2500",
       "--agent.learning-starts", "500", "--agent.target-period", "500", "--eval-every", "500",
       "--agent.buffer-size", "1000", "--agent.eval-episodes", "2", "--no-progress"]
CHUNKS = 4


def _metrics(path: Path) -> list[tuple]:
    with (path / "metrics.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["metric"] != "sps_aggregate"]  # timing differs
    return [(r["variant"], r["seed"], r["step"], r["metric"], r["value"]) for r in rows]


def _env(devices: int, **extra) -> dict:
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f)
    return {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices}",
            **extra}


def _start(out: Path, devices: int, *flags: str, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.cli", "minatar", *RUN, "--out", str(out), *flags],
                            cwd=ROOT, env=_env(devices, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(*processes: subprocess.Popen, timeout: float = 900) -> None:
    for process in processes:
        _, err = process.communicate(timeout=timeout)
        assert process.returncode == 0, err[-3000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _two_processes(out: Path, *flags: str, **env) -> list[subprocess.Popen]:
    """The same command on two processes of two CPU devices each, joined through localhost."""
    address = f"localhost:{_free_port()}"
    return [_start(out, 2, "--shard", "--coordinator-address", address, "--num-processes", "2",
                   "--process-id", str(index), *flags, **env) for index in range(2)]


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory):
    """The unsharded run: four vmapped seeds on one device."""
    out = tmp_path_factory.mktemp("sharding") / "unsharded"
    assert cli.main(["minatar", *RUN, "--out", str(out), "--checkpoint-every", "0"]) == 0
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The sharded run: four seeds over four CPU devices of one process, checkpointed every chunk."""
    out = tmp_path_factory.mktemp("sharding") / "sharded"
    _finish(_start(out, 4, "--shard"))
    return out


DISCRETE = ("eval_return", "eval_length", "eval_finished", "train_return", "epsilon")


def test_sharded_run_equals_the_unsharded_run(unsharded, reference):
    ours, theirs = _metrics(reference), _metrics(unsharded)
    assert [r[:4] for r in ours] == [r[:4] for r in theirs]  # same seeds, steps and metrics
    assert len({r[1] for r in ours}) == 4  # every seed reported
    for mine, other in zip(ours, theirs):
        if mine[3] in DISCRETE:
            assert mine == other
        else:  # float rounding only (see the module docstring)
            assert float(mine[4]) == pytest.approx(float(other[4]), rel=1e-4, abs=1e-6), mine


def test_two_process_run_equals_the_single_process_run(reference, tmp_path):
    out = tmp_path / "two-processes"
    _finish(*_two_processes(out))
    assert _metrics(out) == _metrics(reference)


def _kill_at(process: subprocess.Popen, marker: Path, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(f"the run ended before pausing: {process.communicate()[1][-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("the run did not reach its pause point")
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)


@pytest.mark.parametrize("resume_on", [
    "same-layout",
    pytest.param("two-processes", marks=pytest.mark.slow),
])
def test_killed_sharded_run_resumes_to_the_uninterrupted_metrics(resume_on, reference, tmp_path):
    """Killed after chunk 2 (its metrics and checkpoint written), resumed on the same four devices
    or on two processes of two devices (another host layout): the uninterrupted metrics."""
    out, marker = tmp_path / "killed", tmp_path / "killed.paused"
    process = _start(out, 4, "--shard", **{PAUSE_ENV: "chunk:3", PAUSE_MARKER_ENV: str(marker)})
    _kill_at(process, marker)
    partial = _metrics(out)
    assert 0 < len(partial) < len(_metrics(reference))
    if resume_on == "same-layout":
        _finish(_start(out, 4, "--shard", "--resume"))
    else:
        _finish(*_two_processes(out, "--resume"))
    assert _metrics(out) == _metrics(reference)


def test_sharding_refuses_seeds_that_do_not_split_over_the_devices(tmp_path):
    process = _start(tmp_path / "bad", 3, "--shard")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert "multiple of the 3 devices" in err.strip().splitlines()[-1], err


def test_cluster_flags_and_environment(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert cluster_from(None, None, None) is None
    cluster = cluster_from("host0:1234", 2, 1)
    assert (cluster.coordinator_address, cluster.num_processes, cluster.process_id) == ("host0:1234", 2, 1)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "head:999")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "3")
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    assert cluster_from(None, None, None).process_id == 2
    assert cluster_from(None, None, 0).process_id == 0  # a flag wins over the environment
    with pytest.raises(ValueError, match="process_id"):
        cluster_from(None, None, 3)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        cluster_from(None, None, None)
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS")
    with pytest.raises(ValueError, match="coordinator"):
        cluster_from(None, 2, 0)
