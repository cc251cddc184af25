"""Shared helpers of the benchmarks: timing, machine description, the JSON record format.

Each benchmark writes ``benchmarks/results/<name>.json``: a list of records
``{"metric", "value", "unit", "target", "meets", "machine"}`` and prints them as a table.
Targets are ratios measured inside one run wherever possible (shared, noisy machines).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import jax

        backend = jax.default_backend()
        device = str(jax.devices()[0].device_kind)
    except Exception:  # noqa: BLE001
        backend, device = "?", "?"
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}; jax {backend} ({device})"


def timeit(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def record(metric: str, value: float, unit: str, target: str | None = None, meets: bool | None = None) -> dict:
    return {
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "target": target,
        "meets": meets,
        "machine": machine(),
    }


def write(name: str, records: list[dict]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(records, indent=2) + "\n")
    width = max(len(r["metric"]) for r in records)
    print(f"\n{name} benchmark ({records[0]['machine']})")
    print(f"{'metric'.ljust(width)}  {'value':>12}  {'unit':<14} {'target':<18} meets")
    for r in records:
        meets = "-" if r["meets"] is None else ("yes" if r["meets"] else "NO")
        print(f"{r['metric'].ljust(width)}  {r['value']:>12.4g}  {r['unit']:<14} {str(r['target'] or '-'):<18} {meets}")
    print(f"written to {path}")
    return path
