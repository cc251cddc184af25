"""Small fixed-seed runs of four experiments, reduced to their numbers.

``tests/test_golden.py`` compares these numbers against ``tests/data/golden.json``, which was
recorded from the code before the architecture refactor (issue: one MDVI loop, the LM
objective registry, the DQN agent that takes its environment). ``python tests/golden_runs.py
--record`` rewrites the file (``--record --only NAME ...``: only the named runs, the others'
records kept); only do so for a change that is meant to alter the numbers, and say why in the
commit. Re-recorded since: ``sample-complexity`` (issue 18, item 3: a sweep point's random
numbers and search start come from its identity, not its position in the sweep).
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from pathlib import Path

DATA = Path(__file__).parent / "data" / "golden.json"

# command -> (argv after the command name, files whose numbers are compared)
RUNS: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "tabular": (
        ["--env", "garnet", "--num-states", "12", "--num-actions", "3", "--iterations", "10",
         "--samples-per-pair", "2", "8", "--seeds", "4", "--chunk", "5", "--alpha", "0.9", "--beta", "2.0"],
        ("metrics.csv",),
    ),
    "sample-complexity": (
        ["--horizons", "8", "16", "--copies", "1", "2", "--dim-horizon", "8", "--seeds", "16",
         "--bootstrap", "50", "--max-doublings", "12"],
        ("thresholds.csv", "evaluations.csv"),
    ),
    "minatar": (
        ["--game", "breakout", "--algo", "mdqn+dvw", "--seeds", "2", "--steps", "3000",
         "--agent.learning-starts", "1000", "--agent.target-period", "500", "--eval-every", "1000",
         "--agent.eval-episodes", "2", "--agent.buffer-size", "2000", "--checkpoint-every", "0"],
        ("metrics.csv",),
    ),
    "lm-irl": (
        ["--oracle.vocab-size", "8", "--oracle.num-hidden", "4", "--oracle.min-length", "4",
         "--oracle.max-length", "8", "--data-sizes", "16", "--heldout-size", "16", "--lambdas", "0.0", "0.5",
         "--seeds", "2", "--lm.steps", "20", "--lm.batch-size", "4", "--lm.model.width", "16",
         "--lm.model.num-layers", "1", "--lm.eval-every", "10", "--chunk", "10", "--curve-samples", "4",
         "--final-samples", "8", "--temperatures", "1.0"],
        ("metrics.csv",),
    ),
}

# rows of these metrics depend on wall-clock time, not on the computation
TIMING_WORDS = ("seconds", "time", "sps", "wall")


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    keep = []
    for row in rows:
        row = {k: v for k, v in row.items() if not any(word in k.lower() for word in TIMING_WORDS)}
        label = " ".join(str(v) for v in row.values() if isinstance(v, str)).lower()
        if any(word in label for word in TIMING_WORDS):
            continue
        keep.append(row)
    return keep


def run(name: str, out_root: Path) -> dict[str, list[dict]]:
    from experiments import cli

    argv, files = RUNS[name]
    out = out_root / name
    code = cli.main([name, *argv, "--out", str(out), "--no-progress"])
    if code != 0:
        raise RuntimeError(f"{name} exited with {code}")
    return {file: _rows(out / file) for file in files}


def compare(expected, actual, rtol: float, where: str = "") -> list[str]:
    """Every difference between two nested records, as readable lines."""
    problems = []
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in expected or key not in actual:
                problems.append(f"{where}/{key}: present in only one record")
            else:
                problems += compare(expected[key], actual[key], rtol, f"{where}/{key}")
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(expected)} rows recorded, {len(actual)} now"]
        for i, (e, a) in enumerate(zip(expected, actual)):
            problems += compare(e, a, rtol, f"{where}[{i}]")
    elif isinstance(expected, float) and isinstance(actual, float):
        same = (math.isnan(expected) and math.isnan(actual)) or expected == actual
        if not same and not abs(expected - actual) <= rtol * max(abs(expected), abs(actual)):
            problems.append(f"{where}: recorded {expected!r}, now {actual!r}")
    elif expected != actual:
        problems.append(f"{where}: recorded {expected!r}, now {actual!r}")
    return problems


if __name__ == "__main__":
    if "--record" not in sys.argv:
        raise SystemExit("usage: python tests/golden_runs.py --record [--only NAME ...]")
    only = sys.argv[sys.argv.index("--only") + 1 :] if "--only" in sys.argv else sorted(RUNS)
    unknown = sorted(set(only) - set(RUNS))
    if unknown or not only:
        raise SystemExit(f"--only takes names from {sorted(RUNS)}, got {only}")
    # run as a script, sys.path starts at tests/: put this checkout's root first, so a git
    # worktree records its own code and not that of another checkout installed in the venv
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    # --only re-records the named runs and keeps every other run's record as it is
    record = json.loads(DATA.read_text()) if DATA.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        record.update({name: run(name, Path(tmp)) for name in only})
    DATA.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA} ({', '.join(only)} re-recorded)")
