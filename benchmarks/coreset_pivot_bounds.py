"""How tight are coreset's pivot-group starting bounds on the 1.28 M ImageNet-shaped pool?

    .venv/bin/python benchmarks/coreset_pivot_bounds.py            # 4,000 sampled candidates (~2 min)

With 30 k labelled centres, ``k_center_greedy`` compares every candidate with 1,024 of them
(the pivots) up front, then with the labelled centres that have the candidate's nearest pivot
among their ``PIVOT_SHARE`` nearest pivots.  The stored value is an upper bound of the true
minimum over all centres; the lazy loop must refresh every candidate whose bound exceeds the
current maximum.  This script measures, on a random sample of candidates, the true minima (all
30 k centres, exact in float64) against the bounds for several ``PIVOT_SHARE`` values, using the
same pivots as the strategy (the fixed shuffle of the labelled centres).  Written to
results/benchmarks/coreset_pivot_bounds.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "coreset_pivot_bounds"


def pivot_bounds(d2: torch.Tensor, center_pivot_d2: torch.Tensor, n_pivots: int, share: int) -> torch.Tensor:
    """Bounds as the strategy forms them: min over the pivots and over the pending centres that
    have the candidate's nearest pivot among their ``share`` nearest pivots.

    ``d2``: candidates × all centres (pivots first); ``center_pivot_d2``: pending centres × pivots."""
    nearest_pivot = d2[:, :n_pivots].argmin(1)
    pivots_of_centre = torch.topk(center_pivot_d2, share, dim=1, largest=False).indices   # (pending, share)
    member = (pivots_of_centre[None, :, :] == nearest_pivot[:, None, None]).any(2)        # (cand, pending)
    pending_d2 = torch.where(member, d2[:, n_pivots:], torch.full_like(d2[:, n_pivots:], float("inf")))
    return torch.minimum(d2[:, :n_pivots].min(1).values, pending_d2.min(1).values)


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance, write_json, write_text
    from alkit.strategies._coreset_engine import LAZY_FIRST_CENTERS, PIVOT_SHARE
    from alkit.strategies.coreset import coreset_centers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-total", type=int, default=1_281_167)
    parser.add_argument("--sample", type=int, default=4000)
    parser.add_argument("--shares", default="1,4,8,16")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pool = M.imagenet_like(args.n_total, progress=True)
    n_labeled, _ = M.schedule(args.n_total)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    cent = coreset_centers(state)
    cent = cent[np.random.default_rng(0).permutation(cent.size)]   # the strategy's pivot order
    n_pivots = min(LAZY_FIRST_CENTERS, cent.size)
    sample = np.sort(np.random.default_rng(args.seed).choice(state.eligible_indices(), args.sample, replace=False))
    order = np.argsort(cent)
    centres = torch.from_numpy(np.asarray(pool.features[cent[order]], np.float64))[torch.from_numpy(np.argsort(order))]
    x = torch.from_numpy(np.asarray(pool.features[sample], np.float64))
    d2 = torch.cdist(x, centres) ** 2
    true_min = d2.min(1).values
    center_pivot_d2 = torch.cdist(centres[n_pivots:], centres[:n_pivots]) ** 2
    quantiles = torch.quantile(true_min, torch.tensor([0.5, 0.99], dtype=torch.float64))
    rows = []
    for share in [0] + [int(s) for s in args.shares.split(",")]:
        bound = d2[:, :n_pivots].min(1).values if share == 0 else pivot_bounds(d2, center_pivot_d2, n_pivots, share)
        slack = (bound - true_min) / true_min
        rows.append({"share": share, "exact_fraction": float((slack <= 1e-9).double().mean()),
                     "mean_relative_slack": float(slack.mean()), "p99_relative_slack": float(torch.quantile(slack, 0.99)),
                     "fraction_bound_above_true_p99": float((bound > quantiles[1]).double().mean())})
        print(rows[-1], flush=True)
    data = {"n_total": args.n_total, "n_centres": int(cent.size), "n_pivots": n_pivots, "sample": args.sample,
            "strategy_share": PIVOT_SHARE, "true_min": {"median": float(quantiles[0]), "p99": float(quantiles[1]),
                                                        "max": float(true_min.max())},
            "rows": rows, "command": "python benchmarks/coreset_pivot_bounds.py " + " ".join(argv or sys.argv[1:]),
            "provenance": provenance(wall_seconds=time.perf_counter() - started, machine=M.machine())}
    lines = [f"# Coreset starting bounds on the {args.n_total:,}-row ImageNet-shaped pool", "",
             f"{args.sample:,} sampled candidates; {cent.size:,} labelled centres, {n_pivots:,} of them pivots. "
             f"True minimum over all centres (float64): median {quantiles[0]:.1f}, 99th percentile {quantiles[1]:.1f}, "
             f"maximum {float(true_min.max()):.1f}. Share 0 = the pivots alone; the strategy uses {PIVOT_SHARE}.", "",
             "| pivots per centre (share) | bounds exact | mean slack | 99th pct slack | bound above true 99th pct (true: 1 %) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['share']} | {100 * r['exact_fraction']:.1f} % | {100 * r['mean_relative_slack']:.2f} % | "
                     f"{100 * r['p99_relative_slack']:.2f} % | {100 * r['fraction_bound_above_true_p99']:.2f} % |")
    write_json(OUT.with_suffix(".json"), data)
    write_text(OUT.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
