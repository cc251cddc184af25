"""Benchmark: exact MDVI iterations per second and memory bandwidth, sampled-MDVI throughput.

Garnet with S = 2000, A = 8, N_B = 10 successors, float64, alpha = 0.909, beta = 9.09.
Compared in one run against a plain NumPy implementation of the same update, on both
representations of P (dense [S*A, S] matrix, and successor lists). Usage:

    python benchmarks/tabular.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import record, timeit, write  # noqa: E402
from envs.tabular import garnet  # noqa: E402
from mdvi import Regularization  # noqa: E402
from mdvi import tabular as solvers  # noqa: E402


def numpy_mdvi(expect, reward, gamma, alpha, beta, iterations):
    """Plain NumPy MDVI (sum form), the same update as ``mdvi.tabular.exact_mdvi_step``."""
    S, A = reward.shape
    s = np.zeros((S, A))
    w = np.full(S, math.log(A) / beta)
    w_prev = w.copy()
    for _ in range(iterations):
        v = w - alpha * w_prev
        q = reward + gamma * expect(v)
        s = q + alpha * s
        top = s.max(axis=1)
        w_prev, w = w, top + np.log(np.exp(beta * (s - top[:, None])).sum(axis=1)) / beta
    return s


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Bytes moved per second (read + write) by ``np.copyto`` on arrays far larger than L3."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    seconds = timeit(lambda: np.copyto(dst, src), repeats=5)
    return 2 * src.nbytes / seconds


def main(quick: bool = False):
    S, A, NB = (500, 8, 10) if quick else (2000, 8, 10)
    K = 20
    records = []
    with jax.enable_x64(True):
        mdp = garnet(S, A, NB, discount=0.99, seed=0)
        reg = Regularization.from_kl_entropy(0.1, 0.01)
        gamma, alpha, beta = mdp.discount, reg.alpha, reg.beta
        P2 = np.ascontiguousarray(mdp.transitions.reshape(S * A, S))
        states, probs = mdp.successors()

        def dense_expect(v):
            return (P2 @ v).reshape(S, A)

        def sparse_expect(v):
            return (probs * v[states]).sum(-1)

        results = {}
        for representation, expect, bytes_per_iter in (
            ("dense", dense_expect, P2.nbytes),
            ("sparse", sparse_expect, states.nbytes + probs.nbytes + S * A * NB * 8),
        ):
            model = mdp.model(representation)
            init = solvers.mdvi_init(model, reg)

            def run_jax(model=model, init=init):
                return solvers.run_mdvi(model, reg, init, K).state.s.block_until_ready()

            s_jax = np.asarray(run_jax())
            s_np = numpy_mdvi(expect, mdp.rewards, gamma, alpha, beta, K)
            np.testing.assert_allclose(s_jax, s_np, rtol=1e-10)  # the same update
            t_jax = timeit(run_jax, repeats=5) / K
            t_np = timeit(lambda expect=expect: numpy_mdvi(expect, mdp.rewards, gamma, alpha, beta, K), repeats=5) / K
            results[representation] = (t_jax, t_np, bytes_per_iter)
            records.append(record(f"exact MDVI it/s, JAX {representation}", 1 / t_jax, "iter/s"))
            records.append(record(f"exact MDVI it/s, NumPy {representation}", 1 / t_np, "iter/s"))
            ratio = t_np / t_jax
            records.append(
                record(f"speedup JAX/NumPy, both {representation}", ratio, "x", ">= 5x", ratio >= 5)
            )
        # The lab's default for this Garnet ("auto" picks successor lists) against the update
        # a plain NumPy user writes with the dense tensor.
        auto_is_sparse = mdp.model("auto").dense is None
        t_lab = results["sparse" if auto_is_sparse else "dense"][0]
        ratio = results["dense"][1] / t_lab
        records.append(record("speedup lab default vs NumPy dense P @ v", ratio, "x", ">= 5x", ratio >= 5))

        copy_bw = copy_bandwidth()
        records.append(record("copy bandwidth (np.copyto, read+write)", copy_bw / 1e9, "GB/s"))
        for representation in ("dense", "sparse"):
            t_jax, _, nbytes = results[representation]
            achieved = nbytes / t_jax
            records.append(record(f"achieved bandwidth, one {representation} iteration", achieved / 1e9, "GB/s"))
            records.append(record(f"achieved / copy bandwidth, {representation}", achieved / copy_bw, "ratio"))

        # Sampled MDVI throughput: generative-model calls per second, 1 seed and 8 vmapped seeds.
        model = mdp.model()
        init = solvers.mdvi_init(model, reg)
        v_iters = 5
        for seeds, M in ((1, 64), (8, 16)):
            keys = jax.random.split(jax.random.key(0), seeds)

            def one(key, model, M=M):
                return solvers.run_mdvi(model, reg, init, v_iters, key=key, samples_per_pair=M)

            fn = jax.jit(jax.vmap(one, in_axes=(0, None)))

            def run_sampled(fn=fn, keys=keys):
                return fn(keys, model).state.s.block_until_ready()

            seconds = timeit(run_sampled, repeats=3)
            calls = seeds * v_iters * S * A * M
            rate = calls / seconds
            records.append(
                record(
                    f"sampled MDVI calls/s ({seeds} seed{'s' if seeds > 1 else ''}, M={M})",
                    rate,
                    "samples/s",
                    ">= 1e7",
                    rate >= 1e7,
                )
            )
    write("tabular" if not quick else "tabular-quick", records)
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="S = 500: a smoke run, not the reported numbers")
    main(parser.parse_args().quick)
