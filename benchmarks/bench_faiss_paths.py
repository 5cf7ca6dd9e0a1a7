"""ProbCover's δ-graph by faiss against the N × N product it cannot avoid, timed in one process.

    .venv/bin/python benchmarks/bench_faiss_paths.py                  # cifar10 (50 k × 1280) and 100 k × 2048
    .venv/bin/python benchmarks/bench_faiss_paths.py --cases cifar10 --previous cifar10

Cases: ``cifar10`` — the cached CIFAR-10 training features (N = 50,000, D = 1280; δ by the purity
rule, as ProbCover computes it); ``imagenet100k`` — the first 100,000 rows of the ImageNet-shaped
pool (D = 2048; δ by the same rule with the pool's classes as pseudo-labels, which skips a
1000-cluster k-means that the graph does not depend on).  Each case runs in a fresh process and
times, on the same normalised rows held in memory:

* ``product``: the N × N float32 product alone, block by block (``rows @ all.T``), nothing kept —
  the floor of any exact graph that measures every pair;
* ``graph``: ``delta_graph`` (faiss's range search over the upper triangle of blocks, each pair
  measured once, float64 decisions near δ);
* for the cases named by ``--previous``, the float32 build it replaced (``2 − 2 cos`` per block, rows × all), and how
  many edges the two graphs disagree on (pairs whose float32 distance rounds across δ).

Target: graph ≤ 1.2 × product.  The page also estimates the 1.28 M pool from the measured time
(the build scales as N²·D).  Load average before each section is in the JSON.
Results: results/benchmarks/faiss_paths.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "faiss_paths"
FULL_N, FULL_D = 1_281_167, 2048


def previous_delta_graph(store, delta: float, block_rows: int = 2048):
    """The float32 build that ``delta_graph`` replaced: d² = 2 − 2 cos, rows × all, self-loops added."""
    import scipy.sparse as sp
    import torch

    n, thr = store.n, float(delta) ** 2
    rows_out, cols_out = [], []
    for start, stop, rows in store.chunks(block_rows):
        for c0, _, other in store.chunks():
            r, c = torch.nonzero(2.0 - 2.0 * (rows @ other.T) < thr, as_tuple=True)
            rows_out.append(r.numpy() + start)
            cols_out.append(c.numpy() + c0)
    r = np.concatenate(rows_out + [np.arange(n)])
    c = np.concatenate(cols_out + [np.arange(n)])
    graph = sp.csr_matrix((np.ones(r.size, bool), (r, c)), shape=(n, n))
    graph.sum_duplicates()
    return graph


def graph_task(case: str, previous: bool, block_rows: int = 4096) -> dict:
    import torch

    from alkit.strategies import probcover as P

    if case == "cifar10":
        from alkit.experiments.loading import load_study_data

        data = load_study_data("cifar10", "cpu", extract=False, progress=False)
        x, labels = data.train_features, None
        num_classes = int(data.num_classes)
    else:
        pool = M.imagenet_like(100_000)
        x, labels, num_classes = pool.features, np.asarray(pool.labels), pool.num_classes
    n, dim = int(x.shape[0]), int(x.shape[1])
    rows = np.arange(n)
    record: dict = {"case": case, "n": n, "dim": dim, "block_rows": block_rows}
    store = P.normalised_store(x, rows, cache_bytes=4 * M.GiB)
    if labels is None:
        record["delta_rule"] = "purity (k-means pseudo-labels, K = C)"
        delta = P.purity_delta(x, rows, num_classes, store=store)
    else:
        record["delta_rule"] = "purity with the pool's classes as pseudo-labels"
        delta = P.estimate_delta(store, labels, np.random.default_rng(P.DELTA_SEED))
    record["delta"] = float(delta)
    all_rows = store.block(0, n)
    with M.section(record.setdefault("product", {})):
        for start in range(0, n, block_rows):
            torch.mm(all_rows[start:start + block_rows], all_rows.T)
    with M.section(record.setdefault("graph", {})):
        graph = P.delta_graph(store, delta, block_rows=block_rows)
    record.update(edges=int(graph.nnz), ratio=record["graph"]["seconds"] / record["product"]["seconds"])
    if previous:
        with M.section(record.setdefault("previous", {})):
            old = previous_delta_graph(store, delta)
        record["edges_differing_from_previous"] = int((graph != old).nnz)
    return record


def markdown(data: dict) -> str:
    lines = ["# ProbCover's δ-graph by faiss against the N × N product (one process per case)", "",
             f"Commands and commits: per case in faiss_paths.json (last: `{data['command']}`); "
             f"{data['provenance']['machine']['cpu_count']} CPU cores, shared with other jobs (load in the JSON).", "",
             "| case | N | D | δ | edges (with self-loops) | N × N product | graph (faiss) | graph / product | "
             "previous float32 build | edges differing |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["cases"].values():
        if "error" in r:
            lines.append(f"| {r.get('case')} | error: {r['error'][:100]} | | | | | | | | |")
            continue
        prev = r.get("previous")
        lines.append(f"| {r['case']} | {r['n']:,} | {r['dim']} | {r['delta']:.4f} | {r['edges']:,} | "
                     f"{M.fmt_seconds(r['product']['seconds'])} | {M.fmt_seconds(r['graph']['seconds'])} | "
                     f"{r['ratio']:.2f} | {M.fmt_seconds(prev['seconds']) if prev else 'not run'} | "
                     f"{r.get('edges_differing_from_previous', '–')} |")
    big = data["cases"].get("imagenet100k")
    if big and "error" not in big:
        scale = (FULL_N / big["n"]) ** 2 * FULL_D / big["dim"]
        hours = big["graph"]["seconds"] * scale / 3600
        product_hours = big["product"]["seconds"] * scale / 3600
        lines += ["", "## ProbCover at N = 1,281,167 on this CPU (estimate)", "",
                  f"The build scales as N²·D: {scale:.0f} × the 100 k case, about **{hours:.1f} h** for the graph "
                  f"(the full N × N product alone: {product_hours:.1f} h), if the 10.5 GB of normalised float32 rows "
                  "stay in memory (`select(pool, functools.partial(probcover, cache_bytes=11 * 2**30), ...)` on a machine "
                  "with the RAM for it; "
                  "the default 2 GiB cache re-reads the float16 memory map for every block pair, far slower). "
                  "The greedy picks after it are O(|E|). Not run."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="cifar10,imagenet100k")
    parser.add_argument("--previous", default="", help="cases (comma-separated) where the previous float32 build is "
                        "also timed and its edges compared")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    command = M.command(__file__, argv)
    path = OUT.with_suffix(".json")   # cases run separately are merged, each with its command and commit
    data = json.loads(path.read_text()) if path.exists() else {"cases": {}}
    data["command"] = command
    for case in args.cases.split(","):
        print(f"{case} ...", flush=True)
        data["cases"][case] = M.run_isolated(graph_task, timeout=args.timeout, case=case, previous=case in args.previous.split(","))
        data["cases"][case].update(command=command, git_commit=provenance()["git_commit"])
        print("   ", {k: data["cases"][case].get(k) for k in ("delta", "edges", "ratio", "error")}, flush=True)
    data["provenance"] = provenance(wall_seconds=time.perf_counter() - started, machine=M.machine())
    M.save(OUT, data, markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
