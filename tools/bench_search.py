#!/usr/bin/env python3
"""``dq``'s trellis search, every way this machine can run it: seconds per million weights.

Each of the C extension's kernels (``avx512bw``, ``avx2``, ``portable``: those this CPU runs),
numba's search (when installed) and numpy's, on one thread, over Laplacian weights of 3 steps'
scale, at 8, 64 and 256 states and chains of 1024 and 8192 (the ``dq`` profile's). Each
figure is the fastest of ``--reps`` runs (numba's compile is done first; numpy, vectorised
across chains, searches a sixteenth of the weights once, in chains of 1024 only). The last
column says whether every way chose the same indices, as archives need.

    python tools/bench_search.py [--weights 2097152] [--reps 3]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from rftpack import native  # noqa: E402
from rftpack.stages import dq  # noqa: E402

LAM = 0.3


def searches() -> dict[str, Callable[..., np.ndarray]]:
    """name → search(chains, lam, rates, edges, scale, cap, start) of every way here."""
    ways: dict[str, Callable[..., np.ndarray]] = {}
    if native.available():
        for kernel in reversed(native.dq_kernels()):
            ways[f"C {kernel}"] = lambda *a, kernel=kernel: native.dq_viterbi(*a, kernel=kernel)
    compiled = dq._compiled("viterbi_chains")
    if compiled is not None:
        ways["numba"] = compiled
    ways["numpy"] = lambda xs, *a: dq._viterbi_numpy(xs.T, *a).T
    return ways


def fastest(run: Callable[[], np.ndarray], reps: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), np.zeros(0)
    for _ in range(reps):
        started = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - started)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=int, default=1 << 21)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    x = np.random.default_rng(0).laplace(0, 3.0, args.weights)
    rates = dq._rate_table(x)
    ways = searches()
    print(f"{args.weights:,} weights, lam {LAM}, one thread; seconds per million weights")
    print(f"{'states':>6} {'chain':>6} " + " ".join(f"{name:>12}" for name in ways) + "  same")
    for states in (8, 64, 256):
        for chain in (1024, 8192):
            xs = dq._padded(x, chain, np.float64)
            args_of = (LAM, rates, dq.EDGES[states], *dq.search_costs(LAM, rates, states))
            cells, outs = [], []
            for name, search in ways.items():
                if name == "numpy" and chain > 1024:  # (too few chains side by side)
                    cells.append(f"{'-':>12}")
                    continue
                part = xs[: max(1, xs.shape[0] // 16)] if name == "numpy" else xs
                if name == "numba":
                    search(part[:1], *args_of)  # compile (or load numba's cache) first
                seconds, out = fastest(lambda s=search, p=part, a=args_of: s(p, *a),
                                       1 if name == "numpy" else args.reps)
                cells.append(f"{seconds * 1e6 / part.size:12.4f}")
                outs.append(out[: part.shape[0]])
            rows = min(o.shape[0] for o in outs)
            same = all(np.array_equal(o[:rows], outs[0][:rows]) for o in outs)
            print(f"{states:>6} {chain:>6} " + " ".join(cells) + f"  {'yes' if same else 'NO'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
