"""Coreset (Sener & Savarese, ICLR 2018): k-center greedy on frozen-feature distances.

Exact and scalable: the minimum squared distance of every candidate to the current centres is
kept in one float32 vector and updated incrementally, one new centre at a time, in a chunked
pass (``torch.addmv``) over the candidates' features.  The initial distances to the labelled
centres are computed block by block over both sides (candidate chunk × centre block), so the
extra memory never grows with N or with the labelled set.  Near ties of the float32 argmax are
settled in float64 (:func:`alkit.strategies._dense.sqdist64`), so the picks are those of the
plain full-pairwise-matrix version (:func:`k_center_greedy_reference`).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._dense import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CENTER_BLOCK,
    as_device,
    feature_store,
    gather_rows,
    mean_rows,
    row_sqnorms,
    sqdist64,
)
from alkit.strategies.registry import register

#: Relative float32 error assumed for a squared distance ‖x‖² + ‖c‖² − 2⟨x, c⟩ (of ‖x‖² + ‖c‖²,
#: centred features).  Candidates within twice this of the float32 maximum are re-ranked in float64.
TIE_RTOL = 1e-5
#: At most this many near-tied candidates are re-ranked exactly per pick (duplicates aside, 1–3).
MAX_REFINE = 1024


def _check_indices(candidate_indices: np.ndarray, center_indices: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    cand = np.asarray(candidate_indices, np.int64).ravel()
    cent = np.asarray(center_indices, np.int64).ravel()
    for name, idx in (("candidate_indices", cand), ("center_indices", cent)):
        if idx.size and (idx.min() < 0 or idx.max() >= n_rows):
            raise ValueError(f"{name} must lie in [0, {n_rows}) (rows of features)")
        if np.unique(idx).size != idx.size:
            raise ValueError(f"{name} must not repeat an index")
    if cand.size and cent.size and np.intersect1d(cand, cent).size:
        raise ValueError("candidate_indices and center_indices must be disjoint")
    return cand, cent


def merge_nearest(current: tuple[torch.Tensor, ...], found: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Combine two (min, argmin, runner-up) summaries of distances to centres, row by row.

    The runner-up is the smallest distance to a centre other than the argmin.  A centre met twice
    (same argmin in both) is counted once, so a repeated comparison never fakes a near tie."""
    m1, i1, r1 = current
    m2, i2, r2 = found
    same = i1 == i2
    closer = (m2 < m1) & ~same
    runner_up = torch.where(same, torch.minimum(r1, r2),
                            torch.where(closer, torch.minimum(m1, r2), torch.minimum(r1, m2)))
    return torch.minimum(m1, m2), torch.where(closer, i2, i1), runner_up


#: Candidates with the largest stored minima kept aside, so that a pick scans these, not all N.
TOP_ROWS = 4096
#: Stale candidates brought up to date together when the current maximum is stale (one GEMM).
REFRESH_ROWS = 256
#: Candidates still missing most centres that a refresh takes along when it must read every pending
#: centre anyway (one GEMM of a few rows costs about as much as one of this many).
PREFETCH_ROWS = 64
#: Labelled centres compared with every candidate up front when there are too many to compare
#: eagerly (|cand| · |centres| · D above :data:`EAGER_WORK`); the others are compared lazily.
LAZY_FIRST_CENTERS = 1024
EAGER_WORK = 1 << 36
#: ... and when there are more than this many candidates per pick: a lazy refresh then reads every
#: pending centre, which costs more than one eager GEMM when picks are not few.
LAZY_SETUP_RATIO = 64
#: Each pending labelled centre joins the groups of this many of its nearest pivots (see
#: ``tighten_by_pivot_groups``): on a 4,000-candidate sample of the 1.28 M pool with 1,024 pivots,
#: 1 → 24 % of starting bounds exact, 8 → 84 %, 16 → 95 % (work ∝ this number;
#: ``benchmarks/coreset_pivot_bounds.py``).
PIVOT_SHARE = 16


def _resume(carry: dict | None, features: np.ndarray, cand: np.ndarray, cent: np.ndarray) -> dict | None:
    """The lazy state a previous call left in ``carry``, mapped onto this call; None if it does not apply.

    It applies when the features are the very array the carry was made on (it keeps a reference:
    a carry lives for one run over one feature matrix), every earlier centre (labelled or picked)
    is still a centre and every candidate was a candidate then.  The centres are then ordered earlier centres first, in
    their earlier order, so each candidate's count of centres met (``seen``) and the centre ids
    in its (min, argmin, runner-up) stay valid; the new centres are pending."""
    if not carry or carry.get("features") is not features:
        return None
    old_centres, old_cand = carry["centre_ids"], carry["cand"]
    if not np.isin(old_centres, cent).all():
        return None
    order = np.argsort(old_cand, kind="stable")
    where = np.searchsorted(old_cand[order], cand)
    where[where == old_cand.size] = 0
    if not cand.size or not np.array_equal(old_cand[order][where], cand):
        return None
    positions = torch.from_numpy(order[where])
    fresh = cent[~np.isin(cent, old_centres)]
    return {"mu": carry["mu"], "centres": np.concatenate([old_centres, fresh]),
            "mind": carry["mind"][positions], "seen": carry["seen"][positions],
            "tracked": tuple(t[positions] for t in carry["tracked"])}


def k_center_greedy(
    features: np.ndarray,
    center_indices: np.ndarray,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    center_block: int = DEFAULT_CENTER_BLOCK,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | torch.device | None = None,
    tie_rtol: float = TIE_RTOL,
    lazy: bool = True,
    eager_centers: int | None = None,
    pivot_bounds: bool = True,
    carry: dict | None = None,
    timings: dict | None = None,
) -> np.ndarray:
    """k-center greedy: ``k`` rows of ``candidate_indices`` (global row ids, in pick order).

    Centres start as ``center_indices`` (if empty, the first pick is a candidate drawn
    uniformly with ``rng``); each step picks argmax_x min_c ‖x − c‖² over the remaining
    candidates (first candidate on an exact tie) and adds it to the centres.

    Lazy evaluation (``lazy=True``, exact): each candidate keeps the minimum over the centres it
    has been compared with so far, an *upper bound* of its true minimum (more centres can only
    lower it).  A step takes the largest stored value; if that candidate has seen every centre, it
    is the true maximum, since every other stored value bounds its own minimum from above.
    Otherwise the :data:`REFRESH_ROWS` largest stale candidates are compared with the centres
    they miss (one small GEMM) and the step repeats.  A new centre lowers few candidates' minima
    in practice (1.0 refreshes per pick on the 100 k ImageNet-shaped pool, ``bench_scale.py
    --lazy-vs-eager``), so
    a pick costs ~|centres added since| · D instead of a pass over all candidates; when refreshes
    pile up (more than a pass would cost) every stale candidate is brought up to date in one
    chunked pass, so a pick never costs much more than the eager version.  ``lazy=False`` is
    that eager version: every pick one pass over all candidates.

    ``eager_centers``: how many of the labelled centres are compared with every candidate up
    front (a blocked GEMM); the rest start pending and are compared lazily.  Default: all of
    them when |cand| · |centres| · D ≤ 2³⁶ multiply-adds or |cand| ≤ 64·k, else the first
    :data:`LAZY_FIRST_CENTERS`.  Those then serve as pivots (``pivot_bounds=True``): every
    candidate is also compared with the pending labelled centres nearest to its own nearest pivot
    (≈ |cand| · |centres| / |pivots| · D work), which makes most starting bounds exact, so the
    lazy loop refreshes few candidates against all pending centres.  Still exact: a candidate's
    value counts only once it has met every centre.

    ``carry`` (lazy only): a dict that successive calls of one active-learning run share.  Each
    call leaves its per-candidate state there (stored minima, centres met, nearest centre, and the
    features array itself); the next call starts from it when it reads that very array, its
    centres include every earlier centre and pick and its candidates were all candidates then (as from one round to the next), comparing candidates
    lazily with the new centres only instead of with every labelled centre again.  The stored
    values are upper bounds over centres that are still centres, so the picks are unchanged.

    Memory: the candidates' rows (float32 if they fit ``cache_bytes``, else their own dtype, else
    streamed from ``features``) + the centres' rows (float32, |centres| + k) + two |cand| vectors
    + one chunk × ``center_block`` block.  ``timings``, if a dict, receives ``setup_s``,
    ``picks_s``, ``cache_mode``, ``refined`` (picks whose float32 near-tie was re-ranked in
    float64), ``refreshes`` (lazy refresh GEMMs), ``refreshed_rows``, ``full_passes``, ``pivots`` and
    ``lone_refined`` (near-tied candidates re-ranked against their one nearest centre),
    ``refresh_s`` and ``refine_s`` (seconds spent in refreshes and in float64 re-ranking).
    """
    t0 = time.perf_counter()
    cand, cent = _check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    dev = as_device(device)
    dim = features.shape[1]
    resumed = _resume(carry, features, cand, cent) if lazy else None
    if resumed is not None:   # same centring as the stored values, centres in their stored order
        mu, cent = resumed["mu"], resumed["centres"]
    else:
        # Centre on the candidates' mean: distances are unchanged, float32 error shrinks.
        mu = mean_rows(features, cand, chunk_rows).astype(np.float32)
    store = feature_store(features, cand, center=mu, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
    sq = row_sqnorms(store)
    max_sq = float(sq.max())
    if resumed is not None:
        eager = 0
    elif not lazy:
        eager = cent.size
    elif eager_centers is None:
        # A lazy refresh reads every pending centre (~1 refresh per pick); eager set-up is one GEMM
        # over all candidates.  Lazy set-up pays only when candidates far outnumber the picks.
        small = cand.size * cent.size * dim <= EAGER_WORK or cand.size <= LAZY_SETUP_RATIO * k
        eager = cent.size if small else min(cent.size, LAZY_FIRST_CENTERS)
    else:
        eager = min(max(int(eager_centers), 0), cent.size)
    # With labelled centres left pending, the first `eager` of them double as pivots that tighten
    # every candidate's starting bound (see `tighten_by_pivot_groups`).  A fixed shuffle spreads the
    # pivots over the labelled set; the picks do not depend on the order of the centres.
    use_pivots = lazy and pivot_bounds and 0 < eager < cent.size
    if use_pivots:
        cent = cent[np.random.default_rng(0).permutation(cent.size)]
    # All centres, labelled first then picks, as centred float32 rows with their squared norms.
    centers = torch.empty((cent.size + k, dim), dtype=torch.float32, device=dev)
    center_sq = torch.empty(cent.size + k, dtype=torch.float32, device=dev)
    mu_t = torch.from_numpy(mu).to(dev)
    for c0 in range(0, cent.size, center_block):
        block = torch.from_numpy(gather_rows(features, cent[c0:c0 + center_block], chunk_rows)).to(dev) - mu_t
        centers[c0:c0 + block.shape[0]] = block
        center_sq[c0:c0 + block.shape[0]] = (block.double() ** 2).sum(1).float()
    n_centers = cent.size                  # centres known so far (labelled + picked)
    max_center_sq = float(center_sq[:n_centers].max()) if n_centers else 0.0
    mind = torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev)
    seen = torch.full((cand.size,), eager, dtype=torch.int64, device=dev)   # centres [0, seen) compared
    # Lazy only: over the centres each candidate has met in passes and refreshes (not the pivot
    # groups' extra comparisons), its float32 minimum, the centre attaining it and the runner-up.
    # A runner-up more than 2·tol above the minimum means the float64 re-ranking of near ties
    # needs one pair, not every centre (see `exact_min_sqdist`).
    tracked = (torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev),
               torch.zeros(cand.size, dtype=torch.int64, device=dev),
               torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev)) if lazy else None
    if resumed is not None:
        mind, seen = resumed["mind"].to(dev), resumed["seen"].to(dev)
        tracked = tuple(t.to(dev) for t in resumed["tracked"])
    rows_per_block = max(1, min(chunk_rows, (1 << 24) // max(center_block, 1)))

    def nearest(block: torch.Tensor, block_sq: torch.Tensor, c0: int, c1: int) -> tuple[torch.Tensor, ...]:
        """Per row of ``block``, over centres c0:c1 (float32): the smallest ‖row − centre‖², the
        centre attaining it, and the second smallest (+inf with one centre)."""
        best = torch.full((block.shape[0],), float("inf"), dtype=torch.float32, device=dev)
        arg = torch.zeros(block.shape[0], dtype=torch.int64, device=dev)
        second = best.clone()
        for b0 in range(c0, c1, center_block):
            b1 = min(b0 + center_block, c1)
            d2 = torch.addmm(block_sq[:, None] + center_sq[None, b0:b1], block, centers[b0:b1].T, alpha=-2.0)
            if b1 - b0 > 1:
                values, idx = torch.topk(d2, 2, dim=1, largest=False)
            else:
                values = torch.cat([d2, torch.full_like(d2, float("inf"))], 1)
                idx = torch.zeros_like(values, dtype=torch.int64)
            best, arg, second = merge_nearest((best, arg, second), (values[:, 0], idx[:, 0] + b0, values[:, 1]))
        return best, arg, second

    def track(positions: torch.Tensor | slice, found: tuple[torch.Tensor, ...]) -> None:
        """Fold (min, argmin, runner-up) over newly met centres into the stored values at ``positions``."""
        mind[positions] = torch.minimum(mind[positions], found[0])
        if tracked is not None:
            merged = merge_nearest((tracked[0][positions], tracked[1][positions], tracked[2][positions]), found)
            for store_t, value in zip(tracked, merged):
                store_t[positions] = value

    def compare(start: int, stop: int, block: torch.Tensor, c0: int, c1: int) -> None:
        """Stored values of rows start:stop ← their min with ‖row − centre‖² over centres c0:c1."""
        track(slice(start, stop), nearest(block, sq[start:stop], c0, c1))

    def tighten_by_pivot_groups(nearest_pivot: torch.Tensor) -> None:
        """Lower each candidate's bound with the pending labelled centres that have its nearest
        pivot among their :data:`PIVOT_SHARE` nearest pivots.

        Only a bound: ``seen`` stays at the pivots, so a candidate still meets every pending
        centre before its value counts as exact.  But its true nearest centre is usually in that
        group (95 % of candidates on the 1.28 M ImageNet-shaped pool), so the lazy loop refreshes
        little more than the candidates that get picked.  With the pivots alone the bounds are
        loose by more than the spread of the minima (distances concentrate in 2048 dimensions),
        so nearly every candidate would be refreshed against every pending centre."""
        share = min(PIVOT_SHARE, eager)
        pending = torch.arange(eager, cent.size, device=dev)
        pivot_of = []   # per pending centre, its `share` nearest pivots
        for ids in torch.split(pending, max(1, (1 << 24) // eager)):
            d2 = torch.addmm(center_sq[ids, None] + center_sq[None, :eager], centers[ids], centers[:eager].T, alpha=-2.0)
            pivot_of.append(torch.topk(d2, share, dim=1, largest=False).indices)
        pair_pivot = torch.cat(pivot_of).flatten()
        pair_centre = pending.repeat_interleave(share)

        def by_pivot(members: torch.Tensor, pivot: torch.Tensor) -> tuple[torch.Tensor, ...]:
            """``members`` split into one group per pivot (stable: ascending order kept within a group)."""
            return torch.split(members[torch.argsort(pivot, stable=True)], torch.bincount(pivot, minlength=eager).tolist())

        positions = torch.arange(cand.size, device=dev)
        for group, ids in zip(by_pivot(positions, nearest_pivot), by_pivot(pair_centre, pair_pivot)):
            if group.numel() == 0 or ids.numel() == 0:
                continue
            for rows in torch.split(group, rows_per_block):
                block = store.rows(rows.cpu().numpy())
                d2 = torch.addmm(sq[rows, None] + center_sq[None, ids], block, centers[ids].T, alpha=-2.0)
                mind[rows] = torch.minimum(mind[rows], d2.min(dim=1).values)

    if use_pivots:
        nearest_pivot = torch.empty(cand.size, dtype=torch.int64, device=dev)
        for start, stop, block in store.chunks(rows_per_block):
            found = nearest(block, sq[start:stop], 0, eager)
            track(slice(start, stop), found)
            nearest_pivot[start:stop] = found[1]
        tighten_by_pivot_groups(nearest_pivot)
        del nearest_pivot
    elif eager:
        for start, stop, block in store.chunks(rows_per_block):
            compare(start, stop, block, 0, eager)

    counters = {"refreshes": 0, "refreshed_rows": 0, "full_passes": 0, "lone_refined": 0, "refresh_s": 0.0,
                "refine_s": 0.0}

    def full_pass() -> None:
        """Bring every candidate up to date with all centres (eager, chunked)."""
        counters["full_passes"] += 1
        for start, stop, block in store.chunks(rows_per_block):
            low = int(seen[start:stop].min())
            if low < n_centers:
                compare(start, stop, block, low, n_centers)
        seen.fill_(n_centers)

    def refresh(positions: torch.Tensor) -> None:
        """Compare the candidates at ``positions`` with the centres they have not seen yet."""
        started = time.perf_counter()
        low = int(seen[positions].min())
        block = store.rows(positions.cpu().numpy())
        track(positions, nearest(block, sq[positions], low, n_centers))
        seen[positions] = n_centers
        counters["refreshes"] += 1
        counters["refreshed_rows"] += int(positions.numel())
        counters["refresh_s"] += time.perf_counter() - started

    def with_far_behind(stale: torch.Tensor) -> torch.Tensor:
        """``stale`` plus, if one of them still misses most centres, the :data:`PREFETCH_ROWS`
        largest candidates that do too: such a refresh reads every pending centre whatever the
        row count, and those candidates come up next (picks descend the stored values)."""
        if n_centers - int(seen[stale].min()) <= LAZY_FIRST_CENTERS:
            return stale
        ahead = largest(4 * PREFETCH_ROWS)
        far = ahead[n_centers - seen[ahead] > LAZY_FIRST_CENTERS][:PREFETCH_ROWS]
        return torch.cat([stale, far]).unique()

    # The TOP_ROWS largest stored values at the last rebuild, and the smallest of them, `floor`:
    # stored values only ever decrease, so every candidate outside `top` stays ≤ floor and the
    # maximum, near-ties and largest stale rows can be found in `top` (O(TOP_ROWS) per pick, not
    # O(N)) as long as some value in it is still > floor.
    top_state: dict = {"top": None, "floor": float("inf")}

    def rebuild_top() -> None:
        m = min(TOP_ROWS, cand.size)
        values, idx = torch.topk(mind, m)
        top_state["top"] = idx
        top_state["floor"] = float(values[-1]) if m < cand.size else float("-inf")

    def top_rows() -> torch.Tensor | None:
        """The top set if it certainly holds the maximum (after one rebuild if needed), else None."""
        for attempt in range(2):
            top = top_state["top"]
            if top is not None and float(mind[top].max()) > top_state["floor"]:
                return top
            if attempt == 0:
                rebuild_top()
        return None

    def argmax_stored() -> int:
        top = top_rows()
        if top is None:   # ties at the floor (e.g. all +inf): global argmax
            return int(torch.argmax(mind))
        local = mind[top]
        return int(top[local == local.max()].min())   # first position on an exact tie, as argmax

    def at_least(threshold: float) -> torch.Tensor:
        """Positions (ascending) whose stored value is ≥ threshold."""
        top = top_rows()
        if top is not None and threshold > top_state["floor"]:
            return torch.sort(top[mind[top] >= threshold]).values
        return torch.nonzero(mind >= threshold).flatten()

    def largest(width: int) -> torch.Tensor:
        top = top_rows()
        if top is not None:
            return top[torch.topk(mind[top], min(width, top.numel())).indices]
        return torch.topk(mind, width).indices

    pass_floor = [int(seen.min())]   # no candidate has seen fewer centres than this (cost of a full pass)

    def up_to_date(threshold: float, best: int, work: list[int]) -> bool:
        """Refresh stale candidates among ``best`` and those whose stored value is ≥ ``threshold``
        (at most 8·4^retry ≤ :data:`REFRESH_ROWS` of the largest); False if any was stale."""
        # Few candidates usually need it: start with a handful, widen on every retry of this pick.
        # Against many pending (labelled) centres a refresh reads them all whatever the row count,
        # so it then takes many rows at once.
        if n_centers - int(seen[best]) > LAZY_FIRST_CENTERS:
            width = min(TOP_ROWS, REFRESH_ROWS * 4 ** work[1], cand.size)
        else:
            width = min(REFRESH_ROWS, 8 * 4 ** work[1], cand.size)
        work[1] += 1
        rows = at_least(threshold) if threshold > float("-inf") else None
        if rows is None or rows.numel() > width:
            rows = largest(width)
        rows = torch.cat([rows, torch.tensor([best], device=rows.device)]).unique()
        stale = rows[seen[rows] < n_centers]
        if stale.numel() == 0:
            return True
        work[0] += int(stale.numel()) * (n_centers - int(seen[stale].min()))
        if work[0] > cand.size * max(n_centers - pass_floor[0], 1):
            full_pass()   # refreshes cost more than one pass would: do the pass
            pass_floor[0] = n_centers
        else:
            refresh(with_far_behind(stale))
        return False

    picks: list[int] = []
    refined = 0
    t1 = time.perf_counter()

    def exact_min_sqdist(positions: np.ndarray, tol: float) -> np.ndarray:
        """Float64 min over all centres of ‖x − c‖², for the candidates at ``positions``.

        The float32 distances to every centre shortlist, per candidate, the centres within
        2·tol of its float32 minimum: if each float32 distance is within tol of the exact one,
        the exact nearest centre is among them.  Only those pairs are computed in float64, from
        the raw rows, with the very function the reference uses (so equal pairs give equal
        numbers)."""
        center_ids = np.concatenate([cent, cand[np.asarray(picks, np.int64)]])
        out = np.empty(positions.size)
        if tracked is not None:   # a runner-up beyond 2·tol: the argmin is the only centre to check
            pos_t = torch.from_numpy(positions).to(dev)
            lone = (tracked[2][pos_t] > tracked[0][pos_t] + 2.0 * tol).cpu().numpy()
            raw = gather_rows(features, cand[positions[lone]], chunk_rows, np.float64)
            partner = gather_rows(features, center_ids[tracked[1][pos_t[lone]].cpu().numpy()], chunk_rows, np.float64)
            out[lone] = [sqdist64(raw[i:i + 1], partner[i:i + 1])[0, 0] for i in range(raw.shape[0])]
            counters["lone_refined"] += int(lone.sum())
        else:
            lone = np.zeros(positions.size, bool)
        rest = np.flatnonzero(~lone)
        for g0 in range(0, rest.size, 64):
            group = positions[rest[g0:g0 + 64]]
            pos_t = torch.from_numpy(group).to(dev)
            xs = store.rows(group)
            d32 = torch.cat([torch.addmm(sq[pos_t, None] + center_sq[None, b0:min(b0 + center_block, n_centers)], xs,
                                         centers[b0:min(b0 + center_block, n_centers)].T, alpha=-2.0)
                             for b0 in range(0, n_centers, center_block)], dim=1)
            shortlist = d32 <= d32.min(dim=1, keepdim=True).values + 2.0 * tol
            raw = gather_rows(features, cand[group], chunk_rows, np.float64)
            for i in range(group.size):
                close = torch.nonzero(shortlist[i]).flatten().cpu().numpy()
                out[rest[g0 + i]] = sqdist64(raw[i:i + 1], gather_rows(features, center_ids[close], chunk_rows, np.float64)).min()
        return out

    def add_center(pos: int) -> None:
        nonlocal n_centers, max_center_sq
        x = store.rows(np.array([pos]))[0]
        centers[n_centers] = x
        center_sq[n_centers] = sq[pos]
        n_centers += 1
        max_center_sq = max(max_center_sq, float(sq[pos]))
        mind[pos] = float("-inf")
        picks.append(pos)
        if not lazy:
            for start, stop, block in store.chunks():
                d2 = torch.addmv(sq[start:stop] + sq[pos], block, x, alpha=-2.0)
                torch.minimum(mind[start:stop], d2, out=mind[start:stop])
            seen.fill_(n_centers)

    if cent.size == 0:
        add_center(int(rng.integers(cand.size)))
    while len(picks) < k:
        work = [0, 0]   # refresh work this pick (row × centre pairs), retries
        while True:
            best = argmax_stored()
            if int(seen[best]) < n_centers:   # stale maximum: refresh the top stale candidates
                up_to_date(float("-inf"), best, work)
                continue
            tol = tie_rtol * (max_sq + max_center_sq) if tie_rtol > 0 else 0.0
            # Every candidate within 2·tol of the maximum must be up to date before ranking ties.
            if tie_rtol > 0 and not up_to_date(float(mind[best]) - 2.0 * tol, best, work):
                continue
            break
        if tie_rtol > 0:
            near = at_least(float(mind[best]) - 2.0 * tol).cpu().numpy()
            if 1 < near.size <= MAX_REFINE:
                refined += 1
                started = time.perf_counter()
                best = int(near[np.argmax(exact_min_sqdist(near, tol))])
                counters["refine_s"] += time.perf_counter() - started
        add_center(best)
    if carry is not None and lazy:
        carry.clear()
        carry.update(features=features, cand=cand, mu=mu,
                     centre_ids=np.concatenate([cent, cand[np.asarray(picks, np.int64)]]),
                     mind=mind.cpu(), seen=seen.cpu(), tracked=tuple(t.cpu() for t in tracked))
    if timings is not None:
        timings.update(setup_s=t1 - t0, picks_s=time.perf_counter() - t1, cache_mode=store.mode, refined=refined,
                       eager_centers=eager, pivots=eager if use_pivots else 0, resumed=resumed is not None,
                       **counters)
    return cand[np.asarray(picks, np.int64)]


def k_center_greedy_reference(
    features: np.ndarray,
    center_indices: np.ndarray,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Plain k-center greedy on the full float64 pairwise matrix (the specification of
    :func:`k_center_greedy`; O((|cand| + |centres|)·|cand|) memory — small pools only)."""
    cand, cent = _check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    x = np.asarray(features[cand], np.float64)
    pairwise = sqdist64(x, x)
    if cent.size:
        mind = sqdist64(x, np.asarray(features[cent], np.float64)).min(axis=1)
    else:
        mind = np.full(cand.size, np.inf)
    picks: list[int] = []
    if cent.size == 0:
        first = int(rng.integers(cand.size))
        picks.append(first)
        mind = np.minimum(mind, pairwise[:, first])
        mind[first] = -np.inf
    while len(picks) < k:
        j = int(np.argmax(mind))
        picks.append(j)
        mind = np.minimum(mind, pairwise[:, j])
        mind[picks] = -np.inf
    return cand[np.asarray(picks, np.int64)]


def coreset_centers(pool: PoolState) -> np.ndarray:
    """Labelled points that are not held out for validation (the authors' coreset set)."""
    return np.flatnonzero(pool.labeled & ~pool.held_out).astype(np.int64)


@register("coreset", reference="Sener & Savarese 2018 (ICLR), k-center greedy")
def coreset(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
    reuse_distances: bool = True,
) -> np.ndarray:
    """Coreset: k-center greedy — repeatedly take the eligible point farthest from all labelled/chosen points.

    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018 (greedy 2-approximation of the k-center problem).  With S the labelled set plus the
    points chosen so far, each step picks u = argmax_{x eligible} min_{s∈S} ‖z_x − z_s‖₂ over
    frozen features z.  With no labelled point, the first centre is a random eligible point.
    Exact on the whole pool (no subsampling): see :func:`k_center_greedy` (which also reports
    its set-up / pick split and counters, ``timings=``).

    ``reuse_distances``: within one run (``pool.cache`` set by the loop), a round starts from the
    distances the previous round left (``carry`` of :func:`k_center_greedy`, kept in the run's
    ``cache.run``) and compares the candidates with the newly labelled points only; same picks,
    without one pass over every candidate × labelled pair per round.
    """
    carry = None
    if reuse_distances and pool.cache is not None:
        carry = pool.cache.run.setdefault(("coreset", "carry"), {})
    return k_center_greedy(pool.features, coreset_centers(pool), pool.eligible_indices(), budget, rng,
                           chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device, carry=carry)
