"""Every strategy at N = 10 k, 100 k and 1.28 M on this machine: time and peak memory.

    .venv/bin/python benchmarks/bench_scale.py                       # everything (hours on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --sizes 10000,100000  # the small pools only
    .venv/bin/python benchmarks/bench_scale.py --strategies base,mase --sizes 1281167
    .venv/bin/python benchmarks/bench_scale.py --quick               # smoke run (< 2 min)

Pools: the ImageNet-shaped synthetic pools of ``alkit.data.imagenet_pool`` (C = 1000, D = 2048,
float16 memory maps, ImageNet's class-size spread), generated once into ~/.cache/alkit.  At each
N the paper's round is scaled: 30 k labelled and 10 k picks at 1.28 M (2.3 % and 0.78 % of N),
the linear head a probe trained on the labelled points.  Every (strategy, N) runs in a fresh
process; peak memory as in ``_measure`` (peak RSS includes the touched pages of the memory-
mapped feature file; "extra anon" is what the strategy allocated).

Coreset and BADGE at 1.28 M (``--extrapolate``): k-center greedy and k-means++ cost one pass
over the candidates per pick, so 10 k picks take hours here.  They run ``--picks`` picks and
the rest is extrapolated linearly, labelled as such; the coreset set-up against the 30 k
labelled centres is timed on one block of 1024 centres and scaled.  For each such pick the
JSON records the bytes it streams and the bandwidth it reaches, next to the machine's measured
streaming bandwidth over the same file.

``--references``: the plain reference formulations (coreset on the full pairwise float64 matrix,
BADGE on explicit C·D float64 gradient embeddings) against the fast paths, same process, same
data (the first rows of the 100 k ImageNet-shaped pool, C = 1000, D = 2048), at the largest N
where the reference fits a memory budget; picks compared for equality.

Results are merged into results/benchmarks/scale.json (rows keyed by strategy and N) and the
table rewritten to results/benchmarks/scale.md, so parts can be (re)run separately.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402

OUT = M.RESULTS / "scale"


def _digest(picks) -> str:
    return hashlib.sha256(np.ascontiguousarray(picks, np.int64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------- tasks
def strategy_task(n_total: int, strategy: str, seed: int, num_classes: int = 1000, dim: int = 2048) -> dict:
    """One full ``select`` call (fresh process)."""
    from alkit.strategies import resolve_strategy, select

    pool = M.imagenet_like(n_total, num_classes, dim)
    n_labeled, budget = M.schedule(n_total)
    if num_classes != 1000:
        n_labeled, budget = max(n_labeled, 2 * num_classes), max(budget, num_classes)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    info = resolve_strategy(strategy)
    oracle = pool.labels if info.oracle else None
    record: dict = {"strategy": strategy, "n_total": n_total, "budget": budget, "n_labeled": int(labeled.size),
                    "mode": "full", "feature_file_bytes": int(pool.features.nbytes)}
    reports = []
    if strategy == "coreset":   # the engine select(state, "coreset", ...) runs, with its set-up / pick split
        from alkit.strategies.coreset import coreset_centers, k_center_greedy

        def chosen(pool_state, k, rng):
            return k_center_greedy(pool_state.features, coreset_centers(pool_state), pool_state.eligible_indices(), k,
                                   rng, report=reports.append)
    else:
        chosen = strategy
    with M.section(record):
        picks = select(state, chosen, budget, seed, oracle_labels=oracle)
    if reports:
        record["timings"] = asdict(reports[-1])
    record.update(n_picks=int(picks.size), digest=_digest(picks),
                  distinct_classes=int(np.unique(pool.labels[picks]).size),
                  max_class_count=int(np.bincount(pool.labels[picks]).max()))
    return record


def coreset_extrapolated_task(n_total: int, picks: int, seed: int, cache_bytes: int, center_block: int = 1024) -> dict:
    """Eager k-center greedy (one pass over the candidates per pick) at full size: ``picks`` picks
    timed, set-up against one centre block timed, the rest extrapolated — the per-pick bandwidth."""
    from alkit.strategies.coreset import k_center_greedy

    pool = M.imagenet_like(n_total)
    n_labeled, budget = M.schedule(n_total)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    cand = state.eligible_indices()
    record: dict = {"strategy": "coreset (eager)", "n_total": n_total, "budget": budget, "n_labeled": int(labeled.size),
                    "mode": "extrapolated", "picks_timed": picks, "cache_bytes": cache_bytes,
                    "feature_file_bytes": int(pool.features.nbytes)}
    reports = []
    with M.section(record):
        k_center_greedy(pool.features, np.empty(0, np.int64), cand, picks, np.random.default_rng(seed),
                        cache_bytes=cache_bytes, report=reports.append, lazy=False)
    sub = labeled[:center_block]
    with M.section(record.setdefault("block_section", {})):
        k_center_greedy(pool.features, sub, cand, 1, np.random.default_rng(seed), cache_bytes=cache_bytes,
                        report=reports.append, lazy=False)
    no_centres, block = reports
    per_pick = no_centres.picks_s / max(picks - 1, 1)  # the first pick (random) is in the set-up
    centre_cost = max(block.setup_s - no_centres.setup_s, 0.0) / sub.size
    itemsize = 4 if no_centres.cache_mode == "float32 cache" else 2
    bytes_per_pick = cand.size * pool.features.shape[1] * itemsize
    record.update(
        cache_mode=no_centres.cache_mode, store_setup_s=no_centres.setup_s, seconds_per_pick=per_pick,
        seconds_per_labelled_centre=centre_cost, bytes_per_pick=bytes_per_pick, gb_per_s_per_pick=bytes_per_pick / per_pick / 1e9,
        extrapolated_seconds=no_centres.setup_s + centre_cost * labeled.size + per_pick * budget,
    )
    return record


def badge_extrapolated_task(n_total: int, picks: int, seed: int, cache_bytes: int) -> dict:
    """Eager k-means++ on gradient embeddings (one pass per pick) at full size: ``picks`` picks timed,
    the rest extrapolated — the per-pick bandwidth."""
    from alkit.strategies.badge import kmeans_pp_gradient, pool_logits_source

    pool = M.imagenet_like(n_total)
    n_labeled, budget = M.schedule(n_total)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    cand = state.eligible_indices()
    record: dict = {"strategy": "badge (eager)", "n_total": n_total, "budget": budget, "n_labeled": int(labeled.size),
                    "mode": "extrapolated", "picks_timed": picks, "cache_bytes": cache_bytes,
                    "feature_file_bytes": int(pool.features.nbytes)}
    reports = []
    with M.section(record):
        kmeans_pp_gradient(pool.features, pool_logits_source(state), cand, picks, np.random.default_rng(seed),
                           cache_bytes=cache_bytes, report=reports.append, lazy=False)
    (stats,) = reports
    per_pick = stats.picks_s / max(picks - 1, 1)  # the first centre (largest ‖g‖) is in the set-up
    z_bytes = cand.size * pool.features.shape[1] * (4 if stats.z_cache == "float32 cache" else 2)
    r_bytes = cand.size * pool.num_classes * 4
    record.update(
        z_cache=stats.z_cache, r_cache=stats.r_cache, setup_s=stats.setup_s, seconds_per_pick=per_pick,
        bytes_per_pick=z_bytes + r_bytes, gb_per_s_per_pick=(z_bytes + r_bytes) / per_pick / 1e9,
        r_recomputed_each_pick=stats.r_cache == "streamed",
        extrapolated_seconds=stats.setup_s + per_pick * (budget - 1),
    )
    return record


def probe_task(n_labeled: int, epochs: int, seed: int) -> dict:
    """Linear-probe training on ``n_labeled`` points of the 1.28 M pool (2048 → 1000), ``epochs`` epochs."""
    from alkit.probe import ProbeConfig, train_linear_probe

    pool = M.imagenet_like(1_281_167)
    rng = np.random.default_rng([seed, 12])
    rows = np.sort(rng.choice(pool.labels.size, size=n_labeled + 12_810, replace=False))
    train, val = rows[:n_labeled], rows[n_labeled:]  # validation: 1 % of the pool, as in the paper
    x = np.asarray(pool.features[train])  # float16, as read from the memmap
    xv = np.asarray(pool.features[val])
    record: dict = {"n_labeled": n_labeled, "n_val": int(val.size), "epochs": epochs}
    with M.section(record):
        head = train_linear_probe(x, pool.labels[train], xv, pool.labels[val], pool.num_classes,
                                  ProbeConfig(method="early_stopping", max_epochs=epochs, patience=epochs), seed=seed)
    record.update(seconds_per_epoch=record["seconds"] / head.epochs_run, val_top1=head.best_val_accuracy,
                  input_bytes=int(x.nbytes + xv.nbytes))
    return record


def bandwidth_task(n_total: int) -> dict:
    pool = M.imagenet_like(n_total)
    record: dict = {"n_total": n_total}
    with M.section(record):
        record.update(M.streaming_bandwidth(Path(pool.path) / "features.npy"))
    return record


def reference_task(kind: str, n_rows: int, picks: int, seed: int) -> dict:
    """Plain reference vs fast path on the first ``n_rows`` of the 100 k ImageNet-shaped pool."""
    from alkit.strategies.badge import kmeans_pp_gradient, kmeans_pp_reference
    from alkit.strategies.coreset import k_center_greedy, k_center_greedy_reference

    pool = M.imagenet_like(100_000)
    labeled, weight, bias = M.labeled_and_head(pool, M.schedule(100_000)[0])
    rows = np.arange(n_rows)
    feats = np.asarray(pool.features[:n_rows], np.float32)
    lab = labeled[labeled < n_rows]
    cand = np.setdiff1d(rows, lab)
    out: dict = {"kind": kind, "n_rows": n_rows, "picks": picks, "n_centres": int(lab.size), "C": pool.num_classes,
                 "D": pool.features.shape[1]}
    fast_rec: dict = {}
    ref_rec: dict = {}
    if kind == "coreset":
        with M.section(fast_rec):
            fast = k_center_greedy(feats, lab, cand, picks, np.random.default_rng(seed))
        with M.section(ref_rec):
            ref = k_center_greedy_reference(feats, lab, cand, picks, np.random.default_rng(seed))
    else:
        logits = feats @ weight.T + bias
        with M.section(fast_rec):
            fast = kmeans_pp_gradient(feats, logits, cand, picks, np.random.default_rng(seed))
        with M.section(ref_rec):
            ref = kmeans_pp_reference(feats, logits, cand, picks, np.random.default_rng(seed))
    out.update(fast=fast_rec, reference=ref_rec, speedup=ref_rec["seconds"] / fast_rec["seconds"],
               identical=bool(np.array_equal(fast, ref)))
    return out


def lazy_vs_eager_task(kind: str, n_total: int, seed: int) -> dict:
    """The strategy's lazy default against its eager version (a pass per pick), same process, same
    pool state and the paper's scaled round.  Coreset: picks compared for equality.  BADGE: the
    lazy draws have the same distribution but use the random stream differently (tests check the
    distribution), so only the time is compared."""
    from alkit.strategies.badge import badge
    from alkit.strategies.coreset import coreset_centers, k_center_greedy

    pool = M.imagenet_like(n_total)
    n_labeled, budget = M.schedule(n_total)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    out: dict = {"kind": kind, "n_total": n_total, "budget": budget, "n_labeled": int(labeled.size)}
    picks = {}
    for lazy in (True, False):
        rec: dict = {}
        reports = []
        with M.section(rec):
            if kind == "coreset":
                picks[lazy] = k_center_greedy(state.features, coreset_centers(state), state.eligible_indices(), budget,
                                              np.random.default_rng(seed), lazy=lazy, report=reports.append)
            else:
                picks[lazy] = badge(state, budget, np.random.default_rng(seed), lazy=lazy)
        if reports:
            rec["timings"] = asdict(reports[-1])
        out["lazy" if lazy else "eager"] = rec
    out["speedup"] = out["eager"]["seconds"] / out["lazy"]["seconds"]
    out["identical"] = bool(np.array_equal(picks[True], picks[False])) if kind == "coreset" else None
    return out


# --------------------------------------------------------------------------- report
def _load() -> dict:
    path = OUT.with_suffix(".json")
    if path.exists():
        return json.loads(path.read_text())
    return {"rows": {}, "references": {}, "bandwidth": {}, "runs": []}


#: The pool sizes of the main table; other sizes (ProbCover's 200 k) feed the fits below it.
TABLE_SIZES = (10_000, 100_000, 1_281_167)


def quadratic_fit(points: list[tuple[int, float]], target: int) -> dict:
    """Seconds at ``target`` from (N, seconds) points under t = a·N² (a fitted by least squares on
    t/N² weighted by N⁴, i.e. on t itself), and the exponent of a free log-log fit (≈ 2 when the
    N² model holds)."""
    n = np.array([p[0] for p in points], np.float64)
    s = np.array([p[1] for p in points], np.float64)
    a = float((s * n ** 2).sum() / (n ** 4).sum())
    exponent = float(np.polyfit(np.log(n), np.log(s), 1)[0]) if len(points) > 1 else float("nan")
    return {"seconds": a * target ** 2, "exponent": exponent, "points": [[int(x), float(y)] for x, y in points]}


#: Strategies whose cost is N² (ProbCover's δ-ball graph compares every pair of points), and the
#: smallest N at which that term dominates their time (below it, set-up and the k-means do).
QUADRATIC = {"probcover": 100_000}


def fits(rows: dict, target: int = 1_281_167) -> dict:
    """:data:`QUADRATIC` strategies that did not finish at ``target``: their N² fit from the sizes
    (at least two, from the strategy's threshold up) that they finished."""
    out = {}
    for key, r in rows.items():
        if r.get("n_total") != target or "error" not in r or r.get("strategy") not in QUADRATIC:
            continue
        name = r["strategy"]
        points = sorted((x["n_total"], x["seconds"]) for x in rows.values()
                        if x.get("strategy") == name and "seconds" in x and "error" not in x
                        and x.get("mode") != "extrapolated" and QUADRATIC[name] <= x["n_total"] < target)
        if len(points) >= 2:
            out[name] = quadratic_fit(points, target)
    return out


def markdown(data: dict) -> str:
    rows = data["rows"]
    sizes = sorted({r["n_total"] for r in rows.values() if "n_total" in r} & set(TABLE_SIZES))
    fitted = fits(rows)
    names = []
    for r in rows.values():
        if r.get("strategy") and r["strategy"] not in names:
            names.append(r["strategy"])
    lines = ["# Every strategy at ImageNet-shaped scale (C = 1000, D = 2048) on this machine", "",
             "Commands: see `runs` in scale.json (each row: `python benchmarks/bench_scale.py --sizes N --strategies S`).",
             "Per cell: wall time of one `select` call (10 k picks at 1.28 M, scaled with N), peak RSS",
             "(incl. touched pages of the float16 feature memmap) and extra anonymous memory.",
             "'extrap.': a fixed number of picks timed, the rest extrapolated (see notes).", "",
             "| strategy | " + " | ".join(f"N = {n:,}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for name in names:
        cells = []
        for n in sizes:
            r = rows.get(f"{name}@{n}")
            if r is None:
                cells.append("not run")
            elif "error" in r and name in fitted and n == max(TABLE_SIZES):
                cells.append(f"{'timeout' if 'timeout' in r['error'] else 'error'}; ≈ "
                             f"{M.fmt_seconds(fitted[name]['seconds'])} by the N² fit below")
            elif "error" in r:
                cells.append("timeout" if "timeout" in r["error"] else "error")
            elif r.get("mode") == "extrapolated":
                cells.append(f"{M.fmt_seconds(r['extrapolated_seconds'])} extrap. ({r['picks_timed']} picks timed; "
                             f"{M.fmt_bytes(r['peak_rss'])} / {M.fmt_bytes(r['extra_anon'])})")
            else:
                cells.append(f"{M.fmt_seconds(r['seconds'])} ({M.fmt_bytes(r['peak_rss'])} / {M.fmt_bytes(r['extra_anon'])})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = []
    for key, r in rows.items():
        if r.get("mode") == "extrapolated":
            bw = data.get("bandwidth", {}).get(str(r["n_total"]), {})
            ref_bw, ram_bw = bw.get("convert_sum_gb_per_s"), bw.get("ram_mv_gb_per_s")
            extra = (f"; measured on this machine: {ref_bw:.2f} GB/s to stream the same float16 file (convert + sum)"
                     if ref_bw else "") + (f", {ram_bw:.1f} GB/s for a float32 matrix-vector product in RAM"
                                           if ram_bw else "")
            notes.append(f"- {key}: {r['seconds_per_pick']:.2f} s per pick, {M.fmt_bytes(r['bytes_per_pick'])} streamed per "
                         f"pick = {r['gb_per_s_per_pick']:.2f} GB/s ({r.get('cache_mode') or r.get('z_cache')}"
                         f"{', r: ' + r['r_cache'] if 'r_cache' in r else ''}){extra}.")
        if "error" in r:
            notes.append(f"- {key}: {r['error'][:200]}")
        t = r.get("timings")
        if t and "picks_s" in t and "error" not in r:
            notes.append(f"- {key}: set-up {t['setup_s']:.1f} s, {r['budget']:,} picks {t['picks_s']:.1f} s "
                         f"({1000 * t['picks_s'] / max(r['budget'], 1):.1f} ms per pick: refreshes {t.get('refresh_s', 0):.1f} s "
                         f"over {t.get('refreshed_rows', 0):,} rows, float64 re-ranking {t.get('refine_s', 0):.1f} s); "
                         f"{t.get('pivots', 0):,} pivots, row store {t.get('cache_mode') or 'none (pass engine)'}.")
    if notes:
        lines += ["", "Notes:"] + notes
    if fitted:
        lines += ["", "## Where a strategy does not finish at 1.28 M: measured sizes and the N² fit", "",
                  "Its cost grows as N² (the δ-ball graph compares every pair of points); t = a·N² is fitted to "
                  "the sizes it finished from 100 k up and read at N = 1,281,167.  The free log-log exponent shows how well N² "
                  "describes the measured points.", "",
                  "| strategy | measured | free exponent | at N = 1,281,167 (N² fit) |", "|---|---|---|---|"]
        for name, f in fitted.items():
            measured = ", ".join(f"{M.fmt_seconds(s)} at {n:,}" for n, s in f["points"])
            lines.append(f"| {name} | {measured} | {f['exponent']:.2f} | ≈ {M.fmt_seconds(f['seconds'])} |")
    probe = data.get("probe", {})
    if probe:
        lines += ["", "## Linear probe (2048 → 1000, Adam, batch 256, standardised; 12.8 k validation rows)", "",
                  "| labelled | s / epoch | peak RSS | extra anon | epochs timed |", "|---|---|---|---|---|"]
        for key, r in sorted(probe.items(), key=lambda kv: int(kv[0])):
            if "error" in r:
                lines.append(f"| {int(key):,} | error | | | |")
                continue
            lines.append(f"| {int(key):,} | {r['seconds_per_epoch']:.1f} | {M.fmt_bytes(r['peak_rss'])} | "
                         f"{M.fmt_bytes(r['extra_anon'])} | {r['epochs']} |")
    lve = data.get("lazy_vs_eager", {})
    if lve:
        lines += ["", "## Lazy (default) vs eager (one pass over the pool per pick), same process, same state", "",
                  "| strategy | N | labelled | picks | lazy | eager | speed-up | identical picks |", "|---|---|---|---|---|---|---|---|"]
        for r in lve.values():
            if "error" in r:
                lines.append(f"| {r.get('kind')} | {r.get('n_total')} | | | error: {r['error'][:80]} | | | |")
                continue
            same = {True: "True", False: "False", None: "same distribution (tests)"}[r["identical"]]
            lines.append(f"| {r['kind']} | {r['n_total']:,} | {r['n_labeled']:,} | {r['budget']:,} | "
                         f"{M.fmt_seconds(r['lazy']['seconds'])} | {M.fmt_seconds(r['eager']['seconds'])} | "
                         f"{r['speedup']:.1f}× | {same} |")
    refs = data.get("references", {})
    if refs:
        lines += ["", "## Fast paths vs plain references (same process, same data: first rows of the 100 k pool)", "",
                  "| strategy | N | picks | centres | fast | reference | speed-up | identical picks |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in refs.values():
            if "error" in r:
                lines.append(f"| {r.get('kind')} | {r.get('n_rows')} | | | error: {r['error'][:80]} | | | |")
                continue
            lines.append(f"| {r['kind']} | {r['n_rows']:,} | {r['picks']} | {r['n_centres']} | "
                         f"{M.fmt_seconds(r['fast']['seconds'])} ({M.fmt_bytes(r['fast']['extra_anon'])}) | "
                         f"{M.fmt_seconds(r['reference']['seconds'])} ({M.fmt_bytes(r['reference']['extra_anon'])}) | "
                         f"{r['speedup']:.0f}× | {r['identical']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance, write_json, write_text
    from alkit.strategies import strategy_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 3000, C = 100, D = 256, a few strategies")
    parser.add_argument("--sizes", default="10000,100000,1281167")
    parser.add_argument("--strategies", default="all", help="comma-separated names, or 'all'")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds per (strategy, N) before giving up")
    parser.add_argument("--extrapolate", default="",
                        help="also time the eager (pass per pick) versions of these (coreset,badge) on --picks picks "
                             "at N > 200 k and extrapolate: the per-pick bandwidth")
    parser.add_argument("--lazy-vs-eager", default="",
                        help="N at which to time coreset and BADGE lazy against eager in one process (e.g. 100000)")
    parser.add_argument("--picks", type=int, default=20)
    parser.add_argument("--cache-gib", type=float, default=2.0, help="row cache of coreset/BADGE in the extrapolated runs")
    parser.add_argument("--references", action="store_true", help="also run the reference comparisons")
    parser.add_argument("--bandwidth", action="store_true", help="measure the streaming bandwidth over each pool")
    parser.add_argument("--probe", action="store_true", help="time the linear probe at 30 k and 110 k labelled")
    parser.add_argument("--probe-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    command = M.command(__file__, argv)
    if args.quick:
        global OUT
        OUT = M.RESULTS / "scale_quick"
    data = _load()
    started = time.perf_counter()
    names = strategy_names() if args.strategies == "all" else args.strategies.split(",")
    sizes = [3000] if args.quick else [int(s) for s in args.sizes.split(",")]
    extrapolate = set(args.extrapolate.split(",")) if args.extrapolate else set()
    cache = int(args.cache_gib * M.GiB)
    for n in sizes:
        if args.quick:
            M.imagenet_like(n, 100, 256, progress=True)
        else:
            M.imagenet_like(n, progress=True)
        if args.bandwidth and not args.quick:
            data["bandwidth"][str(n)] = M.run_isolated(bandwidth_task, timeout=args.timeout, n_total=n)
        for name in names:
            if n > 200_000 and name in extrapolate and not args.quick:
                print(f"{name} (eager, {args.picks} picks) @ N = {n:,} ...", flush=True)
                task = coreset_extrapolated_task if name == "coreset" else badge_extrapolated_task
                row = M.run_isolated(task, timeout=args.timeout, n_total=n, picks=args.picks, seed=args.seed,
                                     cache_bytes=cache)
                row.update(n_total=n, command=command)
                data["rows"][f"{row.get('strategy', name + ' (eager)')}@{n}"] = row
            print(f"{name} @ N = {n:,} ...", flush=True)
            if args.quick:
                row = M.run_isolated(strategy_task, timeout=args.timeout, n_total=n, strategy=name, seed=args.seed,
                                     num_classes=100, dim=256)
            else:
                row = M.run_isolated(strategy_task, timeout=args.timeout, n_total=n, strategy=name, seed=args.seed)
            row.update(strategy=name, n_total=n, command=command)
            data["rows"][f"{name}@{n}"] = row
            print("   ", {k: row.get(k) for k in ("seconds", "extrapolated_seconds", "peak_rss", "extra_anon", "error")},
                  flush=True)
            write_json(OUT.with_suffix(".json"), data)
            write_text(OUT.with_suffix(".md"), markdown(data))
    if args.probe and not args.quick:
        for n_labeled in (30_000, 110_000):
            print(f"probe @ {n_labeled} labelled ...", flush=True)
            row = M.run_isolated(probe_task, timeout=args.timeout, n_labeled=n_labeled, epochs=args.probe_epochs,
                                 seed=args.seed)
            row.update(command=command)
            data.setdefault("probe", {})[str(n_labeled)] = row
            print("   ", {k: row.get(k) for k in ("seconds_per_epoch", "peak_rss", "extra_anon", "error")}, flush=True)
    for n in ([int(v) for v in args.lazy_vs_eager.split(",")] if args.lazy_vs_eager and not args.quick else []):
        for kind in ("coreset", "badge"):
            print(f"lazy vs eager {kind} @ N = {n:,} ...", flush=True)
            row = M.run_isolated(lazy_vs_eager_task, timeout=args.timeout, kind=kind, n_total=n, seed=args.seed)
            row.update(kind=kind, n_total=n, command=command)
            data.setdefault("lazy_vs_eager", {})[f"{kind}@{n}"] = row
            write_json(OUT.with_suffix(".json"), data)
    if args.references and not args.quick:
        # Largest N whose reference fits ~3 GB: the pairwise float64 matrix (N² · 8 B) for coreset,
        # explicit (N, C·D) float64 embeddings (N · 2.05 M · 8 B) for BADGE.
        for kind, n_rows, picks in (("coreset", 16_000, 200), ("badge", 160, 40)):
            print(f"reference {kind} @ {n_rows} rows ...", flush=True)
            row = M.run_isolated(reference_task, timeout=args.timeout, kind=kind, n_rows=n_rows, picks=picks,
                                 seed=args.seed)
            row.update(kind=kind, n_rows=n_rows, picks=picks, command=command)
            data["references"][kind] = row
    data["runs"].append({"command": command, "provenance": provenance(wall_seconds=time.perf_counter() - started,
                                                                               machine=M.machine())})
    write_json(OUT.with_suffix(".json"), data)
    write_text(OUT.with_suffix(".md"), markdown(data))
    print(markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
