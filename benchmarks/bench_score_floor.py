"""Score strategies against their floor: one logits pass over the pool, in the same process.

    .venv/bin/python benchmarks/bench_score_floor.py                # N = 100 k and 1.28 M
    .venv/bin/python benchmarks/bench_score_floor.py --sizes 20000  # a quick look

confidence, margin, entropy, MASE and BASE each read the pool once: features → logits (GEMM) →
a score per row → the batch.  Their floor is that pass alone (read the float16 features, convert,
GEMM: ``alkit.scores.iter_logits``).  Per N, on the ImageNet-shaped synthetic pool
(``alkit.data.imagenet_pool``: C = 1000, D = 2048, float16 memory map) with the paper's labelled
share and budget: the logits pass is timed before and after the strategies (the faster of the two
is the floor; the page cache is warm for all), each strategy's ``alkit.select`` call, and the ratio
call / floor.  Below 1 M rows, three rounds interleave the floor passes and the strategies, and each
keeps its fastest round (one round at 1.28 M, where a call takes half a minute).  Target: at most 1.15 for every one.  Each N runs in a fresh process.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

STRATEGIES = ("confidence", "margin", "entropy", "mase", "base")
TARGET = 1.15


def repeats_for(n_total: int) -> int:
    """Timed calls per section: the best of three below 1 M rows (seconds each, where a busy
    moment weighs most), one call at 1.28 M (half a minute each)."""
    return 3 if n_total < 1_000_000 else 1


def task(n_total: int, seed: int = 0, repeats: int | None = None) -> dict:
    import alkit
    from alkit.scores import iter_logits

    pool = M.imagenet_like(n_total, progress=True)
    n_labeled, budget = M.schedule(n_total)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    idx = state.eligible_indices()
    repeats = repeats or repeats_for(n_total)

    def logits_pass() -> None:
        for _ in iter_logits(state, idx):
            pass

    logits_pass()   # warm the page cache: every timed section reads from RAM
    # Rounds interleave the floor and the strategies, so that a busy moment or a slow stretch of the
    # process weighs on both alike; each section keeps its fastest round.
    seconds: dict = {}

    def timed(key: str, fn) -> None:
        started = time.perf_counter()
        fn()
        seconds[key] = min(seconds.get(key, float("inf")), time.perf_counter() - started)

    for _ in range(repeats):
        timed("logits_before", logits_pass)
        for name in STRATEGIES:
            timed(name, lambda: alkit.select(state, name, budget, seed))
        timed("logits_after", logits_pass)
    for name in STRATEGIES:
        print(f"N={n_total:,} {name}: {seconds[name]:.2f} s", flush=True)
    floor = min(seconds["logits_before"], seconds["logits_after"])
    ratios = {name: seconds[name] / floor for name in STRATEGIES}
    return {"n_total": n_total, "eligible": int(idx.size), "budget": int(budget), "seconds": seconds,
            "floor_s": floor, "ratios": ratios, "repeats": repeats, "machine": M.machine()}


def page(rows: list[dict], command: str) -> str:
    lines = ["# Score strategies against one logits pass", "",
             f"Command: `{command}`; ImageNet-shaped pool (C = 1000, D = 2048, float16 memory map), "
             "the paper's labelled share and budget, page cache warm.  Floor: the faster of two "
             "logits-only passes (before and after the strategies) in the same process; rounds (the repeats column) "
             "interleave the floor and the strategies, and each time is its fastest round.  "
             f"Target: every ratio ≤ {TARGET}.", "",
             "| N | budget | repeats | logits pass (before / after) | " + " | ".join(STRATEGIES) + " | load |",
             "|---|---|---|---|" + "---|" * len(STRATEGIES) + "---|"]
    for r in rows:
        s = r["seconds"]
        cells = [f"{M.fmt_seconds(s[name])} ({r['ratios'][name]:.2f}×)" for name in STRATEGIES]
        lines.append(f"| {r['n_total']:,} | {r['budget']:,} | {r.get('repeats', 1)} | {M.fmt_seconds(s['logits_before'])} / "
                     f"{M.fmt_seconds(s['logits_after'])} | " + " | ".join(cells) +
                     f" | {r['machine']['loadavg'][0]:.2f} |")
    worst = max((ratio, name, r["n_total"]) for r in rows for name, ratio in r["ratios"].items())
    lines += ["", f"Largest ratio: {worst[0]:.2f} ({worst[1]} at N = {worst[2]:,}); "
              f"{'every strategy within' if worst[0] <= TARGET else 'above'} the {TARGET} target."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1281167", help="pool sizes N, comma-separated")
    parser.add_argument("--out", default=str(M.RESULTS / "score_floor"), help="stem of the .json and .md written")
    args = parser.parse_args(argv)
    rows = [M.run_isolated(task, n_total=int(n)) for n in args.sizes.split(",")]
    command = M.command(__file__, argv)
    M.save(Path(args.out), {"command": command, "rows": rows}, page(rows, command))
    for r in rows:
        print(f"N={r['n_total']:,}: " + ", ".join(f"{k} {v:.2f}×" for k, v in r["ratios"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
