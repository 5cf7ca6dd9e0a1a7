"""ProbCover's default δ on the cpu-scale data sets, and how many neighbours its balls hold.

    .venv/bin/python benchmarks/probcover_delta.py                       # cifar10-lt, cifar10, tiny-imagenet
    .venv/bin/python benchmarks/probcover_delta.py --datasets cifar10-lt

For each data set's cached training features (all rows, as ``alkit.strategies.probcover`` does
by default): δ from the purity rule (k-means pseudo-labels, K = C, α = 0.95, seed ``DELTA_SEED``),
the number of edges of the δ-graph (self-loops included) and the mean number of neighbours per
point besides itself, with the time of the graph build.  A mean near 0 means the balls are
almost empty: the greedy cover runs out of gains early and the remaining picks are uniform.
Results: results/benchmarks/probcover_delta.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "probcover_delta"


def measure(dataset: str) -> dict:
    from alkit import experiment
    from alkit.strategies import probcover as P

    data = experiment.load_study_data(dataset, "cpu", extract=False, progress=False)
    x = data.train_features
    rows = np.arange(x.shape[0])
    started = time.perf_counter()
    store = P.normalised_store(x, rows)
    delta = P.purity_delta(x, rows, int(data.num_classes), store=store)
    delta_s = time.perf_counter() - started
    started = time.perf_counter()
    graph = P.delta_graph(store, delta)
    return {"dataset": dataset, "rows": int(x.shape[0]), "classes": int(data.num_classes), "delta": float(delta),
            "edges": int(graph.nnz), "neighbours_per_point": graph.nnz / x.shape[0] - 1.0,
            "points_with_a_neighbour": float(np.mean(np.diff(graph.indptr) > 1)),
            "delta_seconds": delta_s, "graph_seconds": time.perf_counter() - started}


def markdown(data: dict) -> str:
    lines = ["# ProbCover's default δ (purity rule, α = 0.95) on the cpu-scale features", "",
             f"Command: `{data['command']}`; commit {data['provenance']['git_commit']}.", "",
             "| data set | rows | classes | δ | edges (with self-loops) | neighbours per point besides itself | "
             "points with at least one | δ estimate s | graph build s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in data["rows"].values():
        lines.append(f"| {r['dataset']} | {r['rows']:,} | {r['classes']} | {r['delta']:.4f} | {r['edges']:,} | "
                     f"{r['neighbours_per_point']:.2f} | {100 * r['points_with_a_neighbour']:.1f} % | "
                     f"{r['delta_seconds']:.0f} | {r['graph_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="cifar10-lt,cifar10,tiny-imagenet")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    data = {"command": "python benchmarks/probcover_delta.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "rows": {}}
    for dataset in args.datasets.split(","):
        print(f"{dataset} ...", flush=True)
        data["rows"][dataset] = measure(dataset)
        print("   ", data["rows"][dataset], flush=True)
    data["provenance"] = provenance(wall_seconds=time.perf_counter() - started, machine=M.machine())
    M.save(OUT, data, markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
