"""BASE and MASE: alkit's closed form against the authors' formulation, same data, same process.

    .venv/bin/python benchmarks/bench_base_mase.py            # N = 10 k (full reference), 100 k, 1.28 M
    .venv/bin/python benchmarks/bench_base_mase.py --quick    # small pool, < 1 min

Pool: the ImageNet-shaped synthetic pool (``alkit.data.imagenet_pool``: C = 1000, D = 2048, float16
memory map) at each N, with a linear probe trained on the paper's share of labelled points
(30 k of 1.28 M); budget: the paper's 10 k of 1.28 M, scaled.

The reference is the authors' ``mase_sampler.py`` / ``base_sampler.py`` computation: per batch
of rows an explicit (batch × C × D) tensor of weight differences, λ, the perturbations
ε = −Δw·λ/2 and their norms, kept as an N × C radius matrix; BASE then takes, class by class,
the q_c smallest of where(ŷ = c, d, r_c) with the taken points excluded (a full sort of the
pool per class).  To make the selections comparable, both sides use the same quotas and the
same random tie keys (as ``tests/strategies/test_boundary.py::base_authors_form``).  Where the explicit
stage would take too long (``--reference-rows K``), it runs on the first K rows and its time
is extrapolated linearly (its cost per row does not depend on N) — labelled "extrapolated";
the per-class selection stage then runs, timed, on the closed-form radii of all N rows.

Each N runs in a fresh process (``_measure.run_isolated``); peak memory per section as in
``_measure``.  Writes results/benchmarks/base_mase.json and .md.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _measure as M  # noqa: E402


# --------------------------------------------------------------------- the reference
def authors_radii(features, weight, bias, idx: np.ndarray, batch: int, out: np.ndarray | None = None):
    """Explicit per-class perturbations, batch by batch (the authors' ``compute_margins``).

    Returns (radius N×C float32 — or ``out`` filled —, predicted class, min radius).
    """
    import torch

    from alkit.scores import read_rows

    w = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    n, c = idx.size, w.shape[0]
    radius = np.empty((n, c), np.float32) if out is None else out
    pred_all = np.empty(n, np.int64)
    with torch.no_grad():
        for start in range(0, n, batch):
            z = read_rows(features, idx[start:start + batch])
            logits = torch.addmm(b, z, w.T)
            pred = logits.max(dim=1).indices
            weight_delta = w[pred][:, None, :] - w[None]                       # (B, C, D)
            bias_delta = b[pred, None] - b[None, :]                             # (B, C)
            lam_numerator = 2 * ((z[:, None, :] * weight_delta).sum(dim=2) + bias_delta)
            lam_denominator = (weight_delta ** 2).sum(dim=2)
            lam = lam_numerator / lam_denominator
            epsilon = -weight_delta * lam[:, :, None] / 2                       # (B, C, D)
            r = torch.linalg.norm(epsilon, dim=2)
            r = torch.where(torch.isnan(r), torch.tensor(float("inf")), r)
            radius[start:start + z.shape[0]] = r.numpy()
            pred_all[start:start + z.shape[0]] = pred.numpy()
    return radius, pred_all, radius.min(axis=1)


def authors_base_selection(radius: np.ndarray, pred: np.ndarray, min_margin: np.ndarray, quotas: np.ndarray,
                           keys: np.ndarray) -> np.ndarray:
    """The authors' per-class loop (a sort of the whole pool per class), ties by ``keys``.

    Positions are pre-ordered by key so that a stable sort orders by (score, key); taken
    points get NaN, which sorts after every number (the authors use inf and an unstable sort).
    """
    import torch

    perm = np.argsort(keys, kind="stable")
    radius_t = torch.from_numpy(radius)
    pred_t = torch.from_numpy(pred[perm])
    min_t = torch.from_numpy(min_margin[perm])
    perm_t = torch.from_numpy(perm)
    taken = torch.zeros(radius.shape[0], dtype=torch.bool)  # in permuted order
    picks = []
    for c in range(radius.shape[1]):
        q = int(quotas[c])
        if q == 0:
            continue
        dist = torch.where(pred_t == c, min_t, radius_t[:, c][perm_t])
        dist[taken] = float("nan")
        order = torch.sort(dist, stable=True).indices[:q]
        taken[order] = True
        picks.append(perm[order.numpy()])
    return np.concatenate(picks)


def authors_mase_selection(min_margin: np.ndarray, budget: int, keys: np.ndarray) -> np.ndarray:
    import torch

    perm = np.argsort(keys, kind="stable")
    order = torch.sort(torch.from_numpy(min_margin[perm]), stable=True).indices[:budget].numpy()
    return perm[order]


def closed_form_radii(state, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N × C closed-form radii (alkit's formula, kept whole: for the selection stage only)."""
    import torch

    from alkit.scores import boundary_distances_, class_weight_distances, iter_logits

    wd = torch.from_numpy(class_weight_distances(state.weight))
    radius = np.empty((idx.size, state.num_classes), np.float32)
    pred = np.empty(idx.size, np.int64)
    for start, chunk, logits in iter_logits(state, idx):
        p, _, _ = boundary_distances_(logits, wd)
        radius[start:start + chunk.size] = logits.numpy()
        pred[start:start + chunk.size] = p.numpy()
    return radius, pred, radius.min(axis=1)


def float64_radii(state, idx: np.ndarray) -> np.ndarray:
    """Closed-form radii in float64 from float64 logits: the yardstick for both float32 versions."""
    z = np.asarray(state.features[idx], np.float64)
    w = state.weight.astype(np.float64)
    logits = z @ w.T + state.bias.astype(np.float64)
    sq = (w * w).sum(1)
    wd = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * w @ w.T, 0))
    pred = logits.argmax(1)
    rows = np.arange(idx.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(logits[rows, pred][:, None] - logits) / wd[pred]
    r[~(wd[pred] > 0)] = np.inf
    r[rows, pred] = np.inf
    return r


def _digest(picks: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(picks, np.int64).tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------- the task
def task(n_total: int, num_classes: int, dim: int, seed: int, ref_batch: int, reference_rows: int | None,
         reference_selection: bool) -> dict:
    """One N, in a fresh process: logits-only pass, BASE, MASE, then the reference."""
    import torch

    from alkit.scores import iter_logits
    from alkit.strategies._boundary_engine import base_picks, mase_picks
    from alkit.strategies.uncertainty import class_quotas

    pool = M.imagenet_like(n_total, num_classes, dim)
    n_labeled, budget = M.schedule(n_total)
    if num_classes != 1000:
        budget = max(budget, 5 * num_classes)
        n_labeled = max(n_labeled, 2 * num_classes)
    labeled, weight, bias = M.labeled_and_head(pool, n_labeled)
    state = M.pool_state(pool, labeled, weight, bias)
    idx = state.eligible_indices()
    out = {"n_total": n_total, "num_classes": num_classes, "dim": dim, "eligible": int(idx.size),
           "n_labeled": int(labeled.size), "budget": int(budget), "feature_file_bytes": int(pool.features.nbytes),
           "pool": str(pool.path), "machine_start": M.machine()}

    def logits_pass() -> None:
        for _ in iter_logits(state, idx):
            pass

    logits_pass()  # warm the page cache and the allocator: every timed section reads from RAM
    sections = {}
    reports = {"base": [], "mase": []}
    for name, fn in [("logits", logits_pass),
                     ("base", lambda: base_picks(state, budget, np.random.default_rng(seed),
                                                 report=reports["base"].append)),
                     ("mase", lambda: mase_picks(state, budget, np.random.default_rng(seed),
                                                 report=reports["mase"].append)),
                     ("logits_again", logits_pass)]:
        record: dict = {}
        with M.section(record):
            result = fn()
        if name in ("base", "mase"):
            (stats,) = reports[name]
            record["digest"] = _digest(result)
            record["picks"] = result
            record["inner_timings"] = asdict(stats)
            # Same-run ratio: the whole call over the time its own passes spent reading features
            # and computing logits (chunk by chunk, so the machine's load cancels out).
            record["ratio_to_own_logits"] = record["seconds"] / (stats.logits_s / stats.passes)
        if name == "base":
            record["refills"] = stats.refills
        sections[name] = record
    logits_s = min(sections["logits"]["seconds"], sections["logits_again"]["seconds"])
    for name in ("base", "mase"):
        sections[name]["ratio_to_logits"] = sections[name]["seconds"] / logits_s
    out["sections"] = {k: {kk: vv for kk, vv in v.items() if kk != "picks"} for k, v in sections.items()}
    out["logits_seconds"] = logits_s
    out["targets_1.28M"] = {
        "base_wall_le_90s": sections["base"]["seconds"] <= 90,
        "base_le_1.5x_logits": sections["base"]["ratio_to_logits"] <= 1.5,
        "mase_le_1.5x_logits": sections["mase"]["ratio_to_logits"] <= 1.5,
        "base_le_1.5x_own_logits": sections["base"]["ratio_to_own_logits"] <= 1.5,
        "mase_le_1.5x_own_logits": sections["mase"]["ratio_to_own_logits"] <= 1.5,
        "peak_rss_le_file_plus_2GB": max(sections["base"]["peak_rss"], sections["mase"]["peak_rss"])
        <= pool.features.nbytes + 2 * 1024 ** 3,
    }

    if reference_rows == 0:
        return out
    # ------------------------------------------------------------- the reference
    rows = idx.size if reference_rows is None else min(int(reference_rows), idx.size)
    ref: dict = {"batch": ref_batch, "rows_explicit": rows, "extrapolated": rows < idx.size}
    radius = np.empty((idx.size, state.num_classes), np.float32) if rows == idx.size or reference_selection else None
    record = {}
    with M.section(record):
        r_part, pred_part, min_part = authors_radii(state.features, weight, bias, idx[:rows], ref_batch,
                                                    None if radius is None else radius[:rows])
    ref["radius_stage"] = record
    ref["radius_seconds"] = record["seconds"] * idx.size / rows
    # Same numbers as the closed form?
    check_rows = min(rows, 2048)
    closed, closed_pred, _ = closed_form_radii(state, idx[:check_rows])
    exact = float64_radii(state, idx[:check_rows])
    finite = np.isfinite(exact)
    scale = np.median(exact[finite]) if finite.any() else 1.0
    for name, values in (("explicit", r_part[:check_rows]), ("closed_form", closed)):
        err = np.abs(values[finite].astype(np.float64) - exact[finite])
        ref[f"{name}_max_abs_err_over_median_radius"] = float(err.max() / scale) if err.size else 0.0
        rel = err / np.maximum(exact[finite], 1e-300)
        ref[f"{name}_median_rel_err"] = float(np.median(rel)) if rel.size else 0.0
    diff = np.abs(r_part[:check_rows][finite] - closed[finite])
    ref["radius_max_abs_diff_over_median"] = float(diff.max() / scale) if diff.size else 0.0
    ref["radius_inf_pattern_equal"] = bool(np.array_equal(np.isinf(closed), np.isinf(r_part[:check_rows])))
    ref["pred_equal"] = bool(np.array_equal(closed_pred, pred_part[:check_rows]))
    if rows < idx.size and reference_selection:
        radius, pred_all, min_all = closed_form_radii(state, idx)  # closed form for the selection stage
        ref["selection_on"] = "closed-form radii (explicit stage extrapolated)"
    elif rows == idx.size:
        pred_all, min_all = pred_part, min_part
        ref["selection_on"] = "explicit radii"
    if rows == idx.size or reference_selection:
        rng = np.random.default_rng(seed)
        quotas = class_quotas(budget, state.num_classes, rng)
        keys = rng.random(idx.size)
        record = {}
        with M.section(record):
            ref_base = idx[authors_base_selection(radius, pred_all, min_all, quotas, keys)]
        ref["base_selection_stage"] = record
        record = {}
        with M.section(record):
            ref_mase = idx[authors_mase_selection(min_all, budget, np.random.default_rng(seed).random(idx.size))]
        ref["mase_selection_stage"] = record
        ref["base_seconds"] = ref["radius_seconds"] + ref["base_selection_stage"]["seconds"]
        ref["mase_seconds"] = ref["radius_seconds"] + ref["mase_selection_stage"]["seconds"]
        ref["base_identical"] = bool(np.array_equal(ref_base, sections["base"]["picks"]))
        ref["mase_identical"] = bool(np.array_equal(ref_mase, sections["mase"]["picks"]))
        ref["mase_same_set"] = bool(np.array_equal(np.sort(ref_mase), np.sort(sections["mase"]["picks"])))
        ref["base_same_set"] = bool(np.array_equal(np.sort(ref_base), np.sort(sections["base"]["picks"])))
        ref["base_overlap"] = int(np.intersect1d(ref_base, sections["base"]["picks"]).size)
        ref["mase_overlap"] = int(np.intersect1d(ref_mase, sections["mase"]["picks"]).size)
        ref["base_speedup"] = ref["base_seconds"] / sections["base"]["seconds"]
        ref["mase_speedup"] = ref["mase_seconds"] / sections["mase"]["seconds"]
        ref["base_peak_rss"] = max(ref["radius_stage"]["peak_rss"], ref["base_selection_stage"]["peak_rss"])
        ref["base_extra_anon"] = max(ref["radius_stage"]["extra_anon"], ref["base_selection_stage"]["extra_anon"])
    else:
        ref["base_seconds_lower_bound"] = ref["radius_seconds"]
        ref["base_speedup_lower_bound"] = ref["radius_seconds"] / sections["base"]["seconds"]
        ref["mase_speedup_lower_bound"] = ref["radius_seconds"] / sections["mase"]["seconds"]
    out["reference"] = ref
    out["machine_end"] = M.machine()
    del torch
    return out


# ---------------------------------------------------------------------- reporting
def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# BASE / MASE: closed form (alkit) vs the authors' explicit perturbations",
        "",
        f"Command: `{command}`  ",
        "Same data, same process, same quotas and tie keys.  Times in seconds on the machine in the JSON",
        "(shared 2-core CPU; load average recorded per section).  'extrapolated': the explicit stage ran",
        "on the first K rows and was scaled by N/K.  ×logits: BASE (MASE) time over a separate logits-only",
        "pass (reading the float16 features + GEMM; the faster of two, before and after), and over the time",
        "the call's own passes spent on exactly that, measured chunk by chunk in the same run (robust to",
        "the machine's changing load).  Radius error: largest |r − r_float64| over the first",
        "2048 rows, divided by the median radius (both float32 formulations against float64).",
        "",
        "| N | C × D | budget | logits only | BASE | ×logits (separate / same run) | MASE | ×logits (separate / same run) "
        "| BASE peak RSS / extra anon | refills | reference BASE | speed-up BASE / MASE | same picks BASE / MASE "
        "| max radius error, explicit / closed form |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('n_total')} | | | error: {r['error'][:80]} |")
            continue
        s = r["sections"]
        ref = r.get("reference", {})
        if "base_seconds" in ref:
            ref_t = M.fmt_seconds(ref["base_seconds"]) + (" (extrapolated)" if ref["extrapolated"] else "")
            speed = f"{ref['base_speedup']:.0f}× / {ref['mase_speedup']:.0f}×"
            same = " / ".join(("identical" if ref[f"{k}_identical"] else
                               "same set, order differs" if ref[f"{k}_same_set"] else f"overlap {ref[f'{k}_overlap']}")
                              for k in ("base", "mase"))
        elif "base_seconds_lower_bound" in ref:
            ref_t = "≥ " + M.fmt_seconds(ref["base_seconds_lower_bound"]) + " (extrapolated, radius stage only)"
            speed = f"≥ {ref['base_speedup_lower_bound']:.0f}×"
            same = "not run"
        else:
            ref_t, speed, same = "not run", "–", "–"
        lines.append(
            f"| {r['n_total']:,} | {r['num_classes']} × {r['dim']} | {r['budget']:,} | {M.fmt_seconds(r['logits_seconds'])} "
            f"| {M.fmt_seconds(s['base']['seconds'])} | {s['base']['ratio_to_logits']:.2f} / {s['base']['ratio_to_own_logits']:.2f} "
            f"| {M.fmt_seconds(s['mase']['seconds'])} | {s['mase']['ratio_to_logits']:.2f} / {s['mase']['ratio_to_own_logits']:.2f} "
            f"| {M.fmt_bytes(s['base']['peak_rss'])} / {M.fmt_bytes(s['base']['extra_anon'])} | {s['base']['refills']} "
            f"| {ref_t} | {speed} | {same} | {ref.get('explicit_max_abs_err_over_median_radius', float('nan')):.1e} / "
            f"{ref.get('closed_form_max_abs_err_over_median_radius', float('nan')):.1e} |")
    lines.append("")
    lines.append("Feature file sizes: " + ", ".join(f"N={r['n_total']:,}: {M.fmt_bytes(r.get('feature_file_bytes'))}"
                                                    for r in rows if "error" not in r) + ".")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from alkit.io import provenance, write_json, write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 3000, C = 100, D = 256, full reference (< 1 min)")
    parser.add_argument("--sizes", default="10000,100000,1281167", help="comma-separated N")
    parser.add_argument("--reference-rows", default="full,2048,0",
                        help="per size: 'full', a row count to extrapolate from, or 0 to skip the reference")
    parser.add_argument("--ref-batch", type=int, default=4, help="rows per explicit (batch × C × D) tensor")
    parser.add_argument("--max-selection-n", type=int, default=1_281_167,
                        help="largest N at which the reference's per-class selection stage runs (it holds an "
                             "N × C float32 matrix: 5 GB at 1.28 M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(M.RESULTS / "base_mase"))
    args = parser.parse_args(argv)
    if args.quick:
        sizes, refs, c, d = [3000], [None], 100, 256
        out = Path(args.out + "_quick")
    else:
        sizes = [int(s) for s in args.sizes.split(",")]
        refs = [None if r == "full" else int(r) for r in args.reference_rows.split(",")]
        c, d = 1000, 2048
        out = Path(args.out)
    started = time.perf_counter()
    rows = []
    for n, ref_rows in zip(sizes, refs):
        print(f"N = {n:,} (reference rows: {ref_rows or 'full' if ref_rows != 0 else 'none'}) ...", flush=True)
        M.imagenet_like(n, c, d, progress=True)  # generate outside the timed process
        row = M.run_isolated(task, n_total=n, num_classes=c, dim=d, seed=args.seed, ref_batch=args.ref_batch,
                             reference_rows=ref_rows, reference_selection=n <= args.max_selection_n)
        row.setdefault("n_total", n)
        rows.append(row)
        print({k: row.get(k) for k in ("logits_seconds", "error")}, flush=True)
    command = M.command(__file__, argv)
    payload = {"rows": rows, "provenance": provenance(wall_seconds=time.perf_counter() - started, machine=M.machine())}
    write_json(out.with_suffix(".json"), payload)
    write_text(out.with_suffix(".md"), markdown(rows, command))
    print(markdown(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
