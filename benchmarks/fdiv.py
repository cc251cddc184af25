"""Benchmark: the f-softargmax against jax.nn.softmax on language-model-sized logits.

``[4096, 32000]`` float32 logits (a batch of token positions over a 32k vocabulary), unit reference,
unit temperature. Timed in one run, forward (the distribution) and forward+backward (the gradient of
``<v, p>`` in the logits): the softmax, the alpha = 1.5 f-softargmax (1.5-entmax) by its sort-based
closed form and by the generic bisection (:mod:`mdvi.f_softargmax`), and, for reference, the
bisection for the reverse KL. Targets are ratios to the softmax of the same run: the bisection at
most 8x, the closed form at most 3x. Usage:

    python benchmarks/fdiv.py [--small]

``--small`` runs ``[64, 1000]`` logits (``--rows`` another batch) and writes ``fdiv-small.json``:
a smoke run, not the reported numbers. The record "1-min load average" states how busy the
machine was.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record, timeit, write  # noqa: E402
from mdvi import f_softargmax as fs  # noqa: E402
from mdvi.f_divergences import AlphaDivergence, ReverseKL  # noqa: E402

TARGETS = {"alpha=1.5 sort": 3.0, "alpha=1.5 bisection": 8.0}


def _solvers():
    """name -> function of (logits, log_ref) returning the distribution."""
    solvers = {"softmax": lambda x, log_ref: jax.nn.softmax(x, axis=-1)}
    for label, div in [
        ("alpha=1.5 sort", AlphaDivergence(1.5)),
        ("alpha=1.5 bisection", AlphaDivergence(1.5, solver="bisection")),
        ("reverse KL bisection", ReverseKL()),
    ]:
        solvers[label] = lambda x, log_ref, div=div: fs.f_softargmax(div, x, log_ref)[0]
    return solvers


def main(small: bool = False, repeats: int = 5, rows: int | None = None):
    default_rows, vocab = (64, 1000) if small else (4096, 32000)
    rows = default_rows if rows is None else rows
    k_logits, k_weights = jax.random.split(jax.random.PRNGKey(0))
    logits = 3.0 * jax.random.normal(k_logits, (rows, vocab), jnp.float32)
    weights = jax.random.normal(k_weights, (rows, vocab), jnp.float32)
    log_ref = jnp.zeros_like(logits)

    seconds = {}
    for label, solve in _solvers().items():
        forward = jax.jit(solve)
        backward = jax.jit(jax.grad(lambda x, lr, solve=solve: jnp.sum(weights * solve(x, lr))))
        seconds[(label, "forward")] = timeit(lambda f=forward: f(logits, log_ref).block_until_ready(), repeats=repeats)
        seconds[(label, "forward+backward")] = timeit(lambda f=backward: f(logits, log_ref).block_until_ready(), repeats=repeats)
        both = seconds[(label, "forward")], seconds[(label, "forward+backward")]
        print(f"{label:>22}: forward {both[0]:.4f} s, forward+backward {both[1]:.4f} s")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    shape = f"[{rows}, {vocab}] float32"
    records = [record("logits", rows * vocab, "elements", shape), record("1-min load average at the end", load, "processes")]
    width = 2.0 * (1.0 - vocab**-0.5)  # unit reference: W = f'(1) - f'(1/k) for alpha = 1.5
    records.append(record("alpha=1.5 bisection iterations (derived)", int(fs.bisection_iterations(width, jnp.float32)), "steps"))
    for mode in ("forward", "forward+backward"):
        base = seconds[("softmax", mode)]
        records.append(record(f"softmax {mode}", base * 1e3, "ms"))
        for label in ("alpha=1.5 sort", "alpha=1.5 bisection", "reverse KL bisection"):
            ratio = seconds[(label, mode)] / base
            target = TARGETS.get(label)
            records.append(record(f"{label} {mode}", seconds[(label, mode)] * 1e3, "ms"))
            records.append(
                record(
                    f"{label} / softmax {mode}",
                    ratio,
                    "x",
                    None if target is None else f"<= {target:g}x",
                    None if target is None else ratio <= target,
                )
            )
    write("fdiv-small" if small or rows != default_rows else "fdiv", records)
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="[64, 1000] logits: a smoke run, not the reported numbers")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    parser.add_argument("--rows", type=int, default=None, help="other batch size (written to fdiv-small.json)")
    args = parser.parse_args()
    main(args.small, args.repeats, args.rows)
