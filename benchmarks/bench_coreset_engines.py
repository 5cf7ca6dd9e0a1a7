"""Coreset's engine choice against a plain greedy k-center, over pool shapes.

    .venv/bin/python benchmarks/bench_coreset_engines.py          # results/benchmarks/coreset_engines.*
    .venv/bin/python benchmarks/bench_coreset_engines.py --quick  # three shapes, a look

The plain greedy is what a general library does: the candidates' float32 rows in memory, the
minimum distance to the labelled points by blocked matrix products, then per pick one
matrix-vector product over every candidate (numpy with its BLAS).  alkit's default
(``k_center_greedy`` with ``lazy=None``) chooses its engine by size: the pass engine (the same
pass per pick, near ties re-ranked in float64) for small pools, the lazy engine (bounds refreshed
only where they can matter) for large ones.  Both alkit engines are exact: they take the picks of
the float64 reference (checked here where the reference's N × N matrix fits, else the two alkit
engines against each other).  Per shape: the best of a few calls in one process, on mixture data
(``alkit.data.synthetic.gaussian_mixture``, 10 classes), 1 % of the pool labelled.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

GRID = [(n, d, k) for n in (1_000, 10_000, 100_000) for d in (16, 64, 512, 2048) for k in (10, 100, 1000)
        if k <= n // 4 and not (n * d * k > 100_000 * 512 * 1000)]
QUICK = [(1_000, 64, 100), (10_000, 512, 100), (100_000, 64, 500)]
REFERENCE_MAX_N = 5_000


def plain_greedy(x: np.ndarray, centres: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Greedy k-center as a general library writes it (float32, one pass over the pool per pick)."""
    xc = x[cand]
    sq = np.einsum("ij,ij->i", xc, xc)
    mind = np.full(cand.size, np.inf, np.float32)
    for c0 in range(0, centres.size, 1024):
        c = x[centres[c0:c0 + 1024]]
        np.minimum(mind, (sq[:, None] + np.einsum("ij,ij->i", c, c)[None] - 2.0 * (xc @ c.T)).min(1), out=mind)
    picks = []
    for _ in range(k):
        j = int(np.argmax(mind))
        picks.append(j)
        np.minimum(mind, sq + sq[j] - 2.0 * (xc @ xc[j]), out=mind)
        mind[j] = -np.inf
    return cand[np.asarray(picks, np.int64)]


def best_of(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def measure(n: int, dim: int, k: int, seed: int = 0) -> dict:
    from alkit.data.synthetic import gaussian_mixture
    from alkit.strategies._coreset_engine import pass_greedy
    from alkit.strategies.coreset import k_center_greedy, k_center_greedy_reference

    x = gaussian_mixture(10, n // 10, dim, separation=2.0, seed=seed).train_features.astype(np.float32)
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(x.shape[0])
    n_lab = max(x.shape[0] // 100, 2)
    centres, cand = perm[:n_lab], np.sort(perm[n_lab:])
    repeats = 3 if n * dim * k <= 100_000 * 64 * 1000 else 1
    k_center_greedy(x, centres, cand, 1, np.random.default_rng(seed))   # warm up (first-call costs)
    plain_greedy(x, centres, cand, 1)
    reports = []
    default_s, ours = best_of(lambda: k_center_greedy(x, centres, cand, k, np.random.default_rng(seed),
                                                      report=reports.append),
                              repeats)
    lazy_s, lazy = best_of(lambda: k_center_greedy(x, centres, cand, k, np.random.default_rng(seed), lazy=True), repeats)
    plain_s, plain = best_of(lambda: plain_greedy(x, centres, cand, k), repeats)
    pass_s, passed = best_of(lambda: cand[pass_greedy(x, cand, centres, k, np.random.default_rng(seed))], repeats)
    if n <= REFERENCE_MAX_N:
        exact = k_center_greedy_reference(x, centres, cand, k, np.random.default_rng(seed))
        checked = "reference"
    else:
        exact, checked = lazy, "lazy engine"
    row = {"n": n, "dim": dim, "k": k, "engine": reports[-1].engine, "default_s": default_s, "lazy_s": lazy_s, "pass_s": pass_s,
           "plain_s": plain_s, "default_over_plain": default_s / plain_s, "checked_against": checked,
           "same_picks": bool(np.array_equal(ours, exact) and np.array_equal(passed, exact)), "plain_same_picks": bool(np.array_equal(plain, exact))}
    print(f"N={n:,} D={dim} k={k}: {row['engine']} {default_s:.3f} s, lazy {lazy_s:.3f} s, pass {pass_s:.3f} s, plain {plain_s:.3f} s "
          f"({row['default_over_plain']:.2f}×), same picks {row['same_picks']}", flush=True)
    return row


def page(rows: list[dict], info: dict, command: str) -> str:
    worst = max(rows, key=lambda r: r["default_over_plain"])
    lines = ["# Coreset: the engine alkit chooses against a plain greedy k-center", "",
             f"Command: `{command}`; machine: {info['cpu']}, {info['cpu_count']} cores, torch threads "
             f"{info['torch_threads']}, load {info['loadavg'][0]:.2f}.",
             "Best of up to three calls per shape in one process; mixture data, 1 % labelled. "
             "alkit's engines are exact (same picks as the float64 reference); the plain greedy runs in "
             "float32 without re-ranking near ties, so it can differ on them.", "",
             f"Slowest against plain: {worst['default_over_plain']:.2f}× at N = {worst['n']:,}, D = {worst['dim']}, "
             f"k = {worst['k']} ({worst['engine']} engine).", "",
             "| N | D | picks | engine | alkit default | alkit lazy | alkit pass | plain greedy | default / plain | same picks (checked against) | plain same |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['dim']} | {r['k']} | {r['engine']} | {M.fmt_seconds(r['default_s'])} | "
                     f"{M.fmt_seconds(r['lazy_s'])} | {M.fmt_seconds(r['pass_s'])} | {M.fmt_seconds(r['plain_s'])} | {r['default_over_plain']:.2f}× | "
                     f"{'yes' if r['same_picks'] else 'NO'} ({r['checked_against']}) | "
                     f"{'yes' if r['plain_same_picks'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="three shapes only")
    parser.add_argument("--out", default=str(M.RESULTS / "coreset_engines"), help="stem of the .json and .md written")
    args = parser.parse_args(argv)
    info = M.machine()
    rows = [measure(n, d, k) for n, d, k in (QUICK if args.quick else GRID)]
    command = M.command(__file__, argv)
    M.save(Path(args.out), {"command": command, "machine": info, "rows": rows}, page(rows, info, command))
    return 0 if all(r["same_picks"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
