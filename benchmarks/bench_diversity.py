"""Fast paths vs plain references for coreset, BADGE and balancing; plus fast-only scaling.

    .venv/bin/python benchmarks/bench_diversity.py                # default sizes (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_diversity.py --quick        # small sizes, < 1 min

For each (strategy, N) where the reference fits, both run on the same seeded synthetic
features in the same process; the JSON records both wall times, their ratio and whether the
picks are identical.  The fast-only rows time the exact strategies at larger N and report the
bytes streamed per pick (one pass over the cached candidate rows) and the bandwidth reached.
Writes results/benchmarks/diversity.json (with provenance: commit, versions, CPU, load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alkit.strategies.badge import kmeans_pp_gradient, kmeans_pp_reference  # noqa: E402
from alkit.strategies.balancing import balancing_greedy, balancing_reference  # noqa: E402
from alkit.strategies.coreset import k_center_greedy, k_center_greedy_reference  # noqa: E402


def synthetic(n: int, d: int, c: int, seed: int = 0, dtype=np.float32):
    """Gaussian mixture features, a random linear head's logits, and long-tailed labels."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((c, d)).astype(np.float32)
    y = rng.integers(0, c, n)
    x = np.empty((n, d), dtype)
    for s in range(0, n, 8192):
        x[s:s + 8192] = means[y[s:s + 8192]] + rng.standard_normal((min(8192, n - s), d), dtype=np.float32)
    return x, y, rng


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def provenance() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "git_commit": commit, "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "torch": torch.__version__, "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(), "device": "cpu",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def bench_coreset(n, d, budget, labeled_frac=0.1, reference=True, dtype=np.float32, tmp=None):
    x, _, rng = synthetic(n, d, 20, dtype=dtype)
    if dtype == np.float16 and tmp is not None:  # a float16 memory map, as a feature file would be
        np.save(tmp, x)
        x = np.load(tmp, mmap_mode="r")
    perm = rng.permutation(n)
    n_lab = int(labeled_frac * n)
    lab, cand = perm[:n_lab], perm[n_lab:]
    reports = []
    fast, t_fast = timed(lambda: k_center_greedy(x, lab, cand, budget, np.random.default_rng(0), report=reports.append))
    stats = reports[-1]
    itemsize = 4 if stats.cache_mode in ("float32 cache", None) else 2   # None: the pass engine's float32 rows
    row = {"strategy": "coreset", "N": n, "D": d, "dtype": np.dtype(dtype).name, "labelled": n_lab, "budget": budget,
           "fast_s": t_fast, **asdict(stats), "bytes_per_pick": cand.size * d * itemsize}
    if reference:
        ref, t_ref = timed(lambda: k_center_greedy_reference(x, lab, cand, budget, np.random.default_rng(0)))
        row.update(reference_s=t_ref, speedup=t_ref / t_fast, identical=bool(np.array_equal(fast, ref)))
    return row


def bench_badge(n, d, c, budget, reference=True):
    x, _, rng = synthetic(n, d, c)
    w = (rng.standard_normal((c, d)) / np.sqrt(d)).astype(np.float32)
    logits = x @ w.T
    cand = np.arange(n)
    reports = []
    fast, t_fast = timed(lambda: kmeans_pp_gradient(x, logits, cand, budget, np.random.default_rng(0),
                                                    report=reports.append))
    row = {"strategy": "badge", "N": n, "D": d, "C": c, "budget": budget, "fast_s": t_fast, **asdict(reports[-1]),
           "bytes_per_pick": n * (d + c) * 4}
    if reference:
        ref, t_ref = timed(lambda: kmeans_pp_reference(x, logits, cand, budget, np.random.default_rng(0)))
        row.update(reference_s=t_ref, speedup=t_ref / t_fast, identical=bool(np.array_equal(fast, ref)))
    return row


def bench_balancing(n, d, c, budget, reference=True):
    x, y, rng = synthetic(n, d, c)
    n_lab = max(2 * c, n // 10)
    lab = rng.choice(n, n_lab, replace=False)
    # long-tailed labelled counts so that balancing steps happen
    keep = rng.random(n_lab) < np.exp(-3.0 * y[lab] / c)
    lab = lab[keep]
    cand = np.setdiff1d(np.arange(n), lab)
    w = (rng.standard_normal((c, d)) / np.sqrt(d)).astype(np.float32)
    predicted = (x @ w.T).argmax(1)
    reports: list = []
    fast, t_fast = timed(lambda: balancing_greedy(x, lab, y[lab], cand, c, budget, np.random.default_rng(0), predicted,
                                                  report=reports.append))
    row = {"strategy": "balancing", "N": n, "D": d, "C": c, "labelled": int(lab.size), "budget": budget,
           "fast_s": t_fast, **asdict(reports[-1]), "bytes_per_pass": cand.size * d * 4}
    if reference:
        ref, t_ref = timed(lambda: balancing_reference(x, lab, y[lab], cand, c, budget, np.random.default_rng(0),
                                                       predicted))
        row.update(reference_s=t_ref, speedup=t_ref / t_fast, identical=bool(np.array_equal(fast, ref)))
    return row


def bench_bandwidth(n, d, repeats=5):
    """Best-of-``repeats`` time of one float32 matrix-vector pass over n×d: the floor for one pick."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((n, d), dtype=np.float32))
    v = torch.ones(d)
    best = min(timed(lambda: torch.mv(x, v))[1] for _ in range(repeats))
    return {"strategy": "stream_probe (torch.mv, float32)", "N": n, "D": d, "budget": 1, "fast_s": best,
            "bytes_per_pick": n * d * 4}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke run)")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "diversity.json"))
    args = ap.parse_args(argv)
    rows = []
    if args.quick:
        plan = [(bench_coreset, dict(n=2000, d=256, budget=50)), (bench_badge, dict(n=1000, d=64, c=20, budget=30)),
                (bench_balancing, dict(n=2000, d=128, c=20, budget=50))]
    else:
        plan = [
            (bench_coreset, dict(n=2000, d=512, budget=100)),
            (bench_coreset, dict(n=5000, d=512, budget=100)),
            (bench_coreset, dict(n=10000, d=512, budget=100)),
            (bench_bandwidth, dict(n=100_000, d=2048)),
            (bench_coreset, dict(n=100_000, d=2048, budget=100, reference=False)),
            (bench_coreset, dict(n=100_000, d=2048, budget=30, reference=False, dtype=np.float16,
                                 tmp=Path("/tmp/alkit_bench_f16.npy"))),
            (bench_badge, dict(n=1000, d=128, c=50, budget=50)),
            (bench_badge, dict(n=3000, d=128, c=50, budget=50)),
            (bench_badge, dict(n=100_000, d=2048, c=1000, budget=50, reference=False)),
            (bench_balancing, dict(n=2000, d=512, c=50, budget=100)),
            (bench_balancing, dict(n=10000, d=512, c=50, budget=100)),
            (bench_balancing, dict(n=100_000, d=2048, c=1000, budget=200, reference=False)),
        ]
    for fn, kw in plan:
        row = fn(**kw)
        if "picks_s" in row:  # per pick, the setup (caching, initial distances) excluded
            per = row["picks_s"] / max(row["budget"] - (0 if row.get("labelled") else 1), 1)
        else:
            per = row["fast_s"] / row["budget"]
        row["fast_s_per_pick"] = per
        moved = row.get("bytes_per_pick")
        if moved:
            row["GBps_per_pick"] = moved / per / 1e9
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"provenance": provenance(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
