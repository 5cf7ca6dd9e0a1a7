"""The fast exact engine of BADGE's k-means++ seeding (the method, its rules and the plain
reference are in :mod:`alkit.strategies.badge`).

Never forms the C·D gradient embeddings g = r ⊗ z (r = softmax(ℓ) − e_ŷ): with

    ⟨g_i, g_j⟩ = ⟨r_i, r_j⟩·⟨z_i, z_j⟩,   ‖g_i − g_j‖² = ‖g_i‖² + ‖g_j‖² − 2⟨r_i, r_j⟩⟨z_i, z_j⟩,

each new centre costs one chunked pass over the features (N×D) and over r (N×C); r is cached in
float32 if N×C×4 fits ``cache_bytes``, else recomputed from the logits on every pass.

The steps, in the order :func:`kmeans_pp_gradient` runs them:

* :func:`gradient_factor` — r for a block of logits (:func:`_logits_rows` reads them);
* the first centre (largest ‖g‖, a uniform draw, or the labelled centres), then per pick a D²
  draw: exact (:func:`~alkit.strategies._dense.d2_draw` over the current D²) or, ``lazy``, by
  rejection from upper bounds (:class:`BoundedD2Sampler`, :func:`_lazy_picks`) — the same
  distribution per pick;
* :func:`_update_rows` — D² ← min(D², ‖g − g_c‖²) over a block of rows for the new centres;
* with ``pool_shape``, the authors' average pooling of the (C, D) gradient, kept factorised
  (:func:`adaptive_pool_matrix`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CENTER_BLOCK,
    RowStore,
    as_device,
    check_indices,
    d2_draw,
    feature_store,
    gather_rows,
    row_sqnorms,
)

#: Logits of the rows: an (N, C) array (memmap allowed) or ``f(global_indices, float32 features)``.
LogitsSource = Union[np.ndarray, Callable[[np.ndarray, np.ndarray], np.ndarray]]
#: The authors' adaptive pooling of the (C, D) gradient (partitioned BADGE): 16 rows, 512 cells.
AUTHORS_POOL_H, AUTHORS_POOL_AREA = 16, 512


def gradient_factor(logits: np.ndarray) -> np.ndarray:
    """r = softmax(ℓ) − e_ŷ, row by row, in float64 (ŷ = first argmax)."""
    logits = np.asarray(logits, np.float64)
    r = logits - logits.max(axis=1, keepdims=True)
    np.exp(r, out=r)
    r /= r.sum(axis=1, keepdims=True)
    r[np.arange(r.shape[0]), logits.argmax(axis=1)] -= 1.0
    return r


def adaptive_pool_matrix(length: int, out: int) -> np.ndarray:
    """(length, out) matrix A with x @ A = torch's ``adaptive_avg_pool1d(x, out)``.

    Bin i averages x[floor(i·L/out) : ceil((i+1)·L/out)].  Average pooling of the (C, D)
    gradient r ⊗ z over a rectangle of bins is the product of the 1-D averages, so the pooled
    embedding is (r A_C) ⊗ (z A_D) and stays factorised.
    """
    a = np.zeros((length, out), np.float64)
    for i in range(out):
        lo, hi = (i * length) // out, -((-(i + 1) * length) // out)
        a[lo:hi, i] = 1.0 / (hi - lo)
    return a


def authors_pool_shape(num_classes: int, dim: int) -> tuple[int, int]:
    """(h, w) of the authors' partitioned-BADGE pooling: h = min(16, C), w = ⌊512 / h⌋.

    As with torch's adaptive pooling, w may exceed D (bins then repeat features)."""
    h = min(AUTHORS_POOL_H, num_classes)
    return h, AUTHORS_POOL_AREA // h


def _logits_rows(source: LogitsSource, rows: np.ndarray, features: np.ndarray, chunk_rows: int) -> np.ndarray:
    if callable(source):
        return np.asarray(source(rows, gather_rows(features, rows, chunk_rows)), np.float32)
    return gather_rows(source, rows, chunk_rows)


class BoundedD2Sampler:
    """Exact D² draws from *upper bounds* of the weights, tightened on demand (rejection sampling).

    Holds bounds w_j ≥ D²_j ≥ 0.  A draw proposes j with probability w_j / Σw (inverse CDF over
    block sums, then within the block); if w_j is known to be exact the proposal is accepted,
    else the caller's ``exact(j)`` gives D²_j and j is accepted with probability D²_j / w_j — else
    w_j ← D²_j and the draw repeats.  Each trial accepts j with probability D²_j / Σw, so the
    accepted j has probability D²_j / Σ D², the k-means++ distribution, whatever the slack of the
    bounds; slack only costs trials.  Blocks make a proposal and an update O(N/B + B).
    """

    def __init__(self, bounds: np.ndarray, block: int = 4096) -> None:
        self.w = np.nan_to_num(np.maximum(np.asarray(bounds, np.float64), 0.0), nan=0.0, posinf=0.0)
        if not np.all(np.isfinite(np.asarray(bounds, np.float64)[self.w > 0])):
            raise ValueError("bounds must be finite")
        self.block = max(1, int(block))
        self.reset(self.w)

    def reset(self, bounds: np.ndarray) -> None:
        self.w = np.nan_to_num(np.maximum(np.asarray(bounds, np.float64), 0.0), nan=0.0, posinf=0.0)
        self.sums = np.add.reduceat(self.w, np.arange(0, self.w.size, self.block)) if self.w.size else np.zeros(0)

    def set(self, j: int, value: float) -> None:
        self.w[j] = max(float(value), 0.0)
        b0 = (j // self.block) * self.block
        self.sums[j // self.block] = self.w[b0:b0 + self.block].sum()   # exact, no drift

    def propose(self, u: float) -> int | None:
        """The position j with cumulative bound first exceeding u·Σw (None if Σw = 0)."""
        cum = np.cumsum(self.sums)
        total = cum[-1] if cum.size else 0.0
        if not total > 0.0:
            return None
        target = u * total
        b = min(int(np.searchsorted(cum, target, side="right")), cum.size - 1)
        while self.sums[b] == 0.0:   # rounding landed past the last positive block
            b -= 1
        b0 = b * self.block
        w = self.w[b0:b0 + self.block]
        inner = np.cumsum(w)
        j = int(np.searchsorted(inner, target - (cum[b - 1] if b else 0.0), side="right"))
        if j >= w.size or w[j] == 0.0:
            j = int(np.flatnonzero(w > 0)[-1])
        return b0 + j

    def draw(self, rng: np.random.Generator, is_exact: Callable[[int], bool], exact: Callable[[int], float],
             max_trials: int | None = None) -> tuple[int | None, int]:
        """(accepted position or None if every bound is 0, rejected trials).  Stops early, returning
        (None, trials) with trials = ``max_trials``, so the caller can tighten every bound at once."""
        trials = 0
        while max_trials is None or trials < max_trials:
            j = self.propose(rng.random())
            if j is None or is_exact(j):
                return j, trials
            value = max(float(exact(j)), 0.0)
            if rng.random() * self.w[j] < value:
                return j, trials
            self.set(j, value)
            trials += 1
        return None, trials


@dataclass(frozen=True)
class BadgeStats:
    """What one :func:`kmeans_pp_gradient` call reports to its ``report`` callback, at its end.
    A call with nothing to pick builds no row stores: its cache modes are None."""

    setup_s: float              # checks, row stores of z and r, ‖g‖², the first centre(s)
    picks_s: float              # the D² draws
    z_cache: str | None         # how the features' rows are held (``RowStore.mode``)
    r_cache: str | None         # how r = softmax(ℓ) − e_ŷ is held ("streamed": recomputed every pass)
    lazy: bool                  # the draws went through :class:`BoundedD2Sampler`
    rejections: int = 0         # lazy only: proposals rejected
    refreshes: int = 0          # lazy only: candidates compared with the centres they missed
    full_passes: int = 0        # lazy only: passes that brought every candidate up to date


def kmeans_pp_gradient(
    features: np.ndarray,
    logits: LogitsSource,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    center_indices: np.ndarray | None = None,
    pool_shape: tuple[int, int] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    center_block: int = DEFAULT_CENTER_BLOCK,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | torch.device | None = None,
    return_d2: bool = False,
    lazy: bool = False,
    report: Callable[[BadgeStats], None] | None = None,
):
    """k-means++ seeding on gradient embeddings without forming them; returns global row ids.

    ``center_indices=None`` (Ash et al.): the first centre is the candidate with the largest
    ‖g‖ (first on ties), as in the BADGE code; each next one is drawn with probability
    ∝ D²(g_i) = min_c ‖g_i − g_c‖² over the chosen centres.
    ``center_indices`` given (Emam et al.'s code): those rows (e.g. the labelled set) are the
    initial centres, so every pick is D²-drawn; if it is empty the first pick is uniform.
    One ``rng.random()`` is consumed per D² draw (``rng.integers`` for a uniform first pick), in
    the same order as :func:`kmeans_pp_reference`, so both give the same picks.
    ``pool_shape=(h, w)`` replaces g by the (h, w) adaptive average pooling of the (C, D)
    gradient, (r A_C) ⊗ (z A_D) — the authors' partitioned BADGE.
    ``return_d2`` also returns the D² weights (float64, over candidates; 0 for points chosen
    before it) that the last draw used.  ``report``, if given, is called once, at the end of the
    call, with a :class:`BadgeStats` (set-up / draw split, cache modes of z and r, lazy counters).

    ``lazy=True`` (exact in distribution, not draw for draw): instead of a pass over every
    candidate per new centre, each candidate keeps the D² over the centres it has been compared
    with — an upper bound of its D² — and draws go through :class:`BoundedD2Sampler`: a
    proposed candidate is compared with the centres it missed and accepted with probability
    D²/bound.  Every pick has the k-means++ distribution P(x) = D²(x)/Σ D², but the random
    stream is used differently, so the picks differ from :func:`kmeans_pp_reference`'s for
    the same seed.  After :data:`LAZY_MAX_TRIALS` rejections in one pick, every candidate is
    brought up to date in one pass (so a pick never costs much more than without ``lazy``).
    ``return_d2`` implies ``lazy=False``.
    """
    t0 = time.perf_counter()
    cand, cent = check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        if report is not None:
            report(BadgeStats(setup_s=time.perf_counter() - t0, picks_s=0.0, z_cache=None, r_cache=None, lazy=False))
        return (np.empty(0, np.int64), np.empty(0)) if return_d2 else np.empty(0, np.int64)
    dev = as_device(device)
    first_rows = _logits_rows(logits, cand[:1], features, chunk_rows)
    n_classes, dim = first_rows.shape[1], features.shape[1]
    pool_c = pool_z = None
    if pool_shape is not None:
        pool_c = adaptive_pool_matrix(n_classes, int(pool_shape[0]))
        pool_z = adaptive_pool_matrix(dim, int(pool_shape[1])).astype(np.float32)

    def r_rows(rows: np.ndarray) -> np.ndarray:
        r = gradient_factor(_logits_rows(logits, rows, features, chunk_rows))
        return (r if pool_c is None else r @ pool_c).astype(np.float32)

    def z_rows(rows: np.ndarray) -> np.ndarray:
        z = gather_rows(features, rows, chunk_rows)
        return z if pool_z is None else z @ pool_z

    if pool_z is None:
        zs = feature_store(features, cand, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
    else:
        zs = RowStore(cand.size, pool_z.shape[1], lambda s, e: z_rows(cand[s:e]), chunk_rows=chunk_rows,
                      cache_bytes=cache_bytes, device=dev)
    rs = RowStore(cand.size, n_classes if pool_c is None else pool_c.shape[1], lambda s, e: r_rows(cand[s:e]),
                  chunk_rows=chunk_rows, cache_bytes=max(cache_bytes - zs.nbytes, 0), device=dev)
    gnorm2 = row_sqnorms(zs, torch.float64) * row_sqnorms(rs, torch.float64)   # ‖g‖² = ‖r‖²‖z‖²
    d2 = torch.full((cand.size,), float("inf"), dtype=torch.float64, device=dev)
    chosen = np.zeros(cand.size, bool)
    picks: list[int] = []

    def update(zc: torch.Tensor, rc: torch.Tensor, gc: torch.Tensor, block_rows: int | None = None) -> None:
        """D² ← min(D², ‖g − g_c‖²) for a block of centres (columns of zc, rc)."""
        single = zc.shape[0] == 1
        for (start, stop, zb), (_, _, rb) in zip(zs.chunks(block_rows), rs.chunks(block_rows)):
            if single:  # one new centre: two matrix-vector products, no reduction
                inner = torch.mv(rb, rc[0]).double() * torch.mv(zb, zc[0]).double()
                dist = gnorm2[start:stop] + gc[0] - 2.0 * inner
            else:
                inner = (rb @ rc.T).double() * (zb @ zc.T).double()
                dist = (gnorm2[start:stop, None] + gc[None, :] - 2.0 * inner).min(dim=1).values
            torch.minimum(d2[start:stop], dist, out=d2[start:stop])

    def add_center(pos: int) -> None:
        zc, rc = zs.rows(np.array([pos])), rs.rows(np.array([pos]))
        update(zc, rc, gnorm2[pos:pos + 1])
        chosen[pos] = True
        picks.append(pos)

    # Ash et al.'s first centre joins the lazy loop from bounds, without a pass (see the helper).
    first_lazily = cent is None and lazy and not return_d2 and _first_centre_lazily(rs)
    if cent is not None and cent.size:
        rows_per_block = max(1, min(chunk_rows, (1 << 23) // max(center_block, 1)))
        for c0 in range(0, cent.size, center_block):
            rows = cent[c0:c0 + center_block]
            zc = torch.from_numpy(z_rows(rows)).to(dev)
            rc = torch.from_numpy(r_rows(rows)).to(dev)
            gc = (zc.double() ** 2).sum(1) * (rc.double() ** 2).sum(1)
            update(zc, rc, gc, rows_per_block)
    elif cent is not None:
        add_center(int(rng.integers(cand.size)))
    elif not first_lazily:
        add_center(int(torch.argmax(gnorm2)))
    last = None
    t1 = time.perf_counter()
    counters = {"rejections": 0, "refreshes": 0, "full_passes": 0}
    if lazy and not return_d2:
        first = int(torch.argmax(gnorm2)) if first_lazily else None
        _lazy_picks(k, rng, zs, rs, gnorm2, d2, chosen, picks, counters, first=first)
    while len(picks) < k:
        last = d2.cpu().numpy().copy()  # the draw's weights (the tensor is updated in place next)
        last[chosen] = 0.0
        add_center(d2_draw(last, chosen, rng.random()))
    out = cand[np.asarray(picks, np.int64)]
    if report is not None:
        report(BadgeStats(setup_s=t1 - t0, picks_s=time.perf_counter() - t1, z_cache=zs.mode, r_cache=rs.mode,
                          lazy=bool(lazy and not return_d2), **counters))
    if return_d2:
        if last is None:
            last = d2.cpu().numpy().copy()
            last[chosen] = 0.0
        return out, last
    return out


#: Rejected proposals in one lazy pick before every candidate is brought up to date at once.
LAZY_MAX_TRIALS = 32
#: Relative pad of the first centre's Cauchy–Schwarz bounds (float32 products round by ~1e-7).
_BOUND_PAD = 1e-5


def _first_centre_lazily(rs: RowStore) -> bool:
    """Whether Ash et al.'s first centre (largest ‖g‖) joins the lazy loop without a pass over the rows.

    Every candidate then starts from the bound (‖g‖ + ‖g_c‖)² ≥ ‖g − g_c‖² (Cauchy–Schwarz on both
    factors), which its first proposal tightens.  Only when r is streamed: that pass recomputes
    every logit (at 1.28 M, about a minute); with r cached it is cheap, and making it keeps the
    picks of earlier versions for the same seed (the draws' law is the same either way)."""
    return rs.mode == "streamed"


def _lazy_picks(k, rng, zs, rs, gnorm2, d2, chosen, picks, counters, first: int | None = None) -> None:
    """The lazy pick loop of :func:`kmeans_pp_gradient`: ``d2`` is exact for every candidate on entry,
    except with ``first`` (the first centre, not yet compared with anyone: ``d2`` becomes its bound)."""
    dev = d2.device
    zc = torch.empty((k, zs.width), dtype=torch.float32, device=dev)
    rc = torch.empty((k, rs.width), dtype=torch.float32, device=dev)
    gc = torch.empty(k, dtype=torch.float64, device=dev)
    n_new = 0                                        # centres picked in this loop: zc[:n_new]
    seen = np.zeros(d2.shape[0], np.int64)           # centres of this loop each candidate has seen
    if first is not None:
        zc[0], rc[0], gc[0] = zs.rows(np.array([first]))[0], rs.rows(np.array([first]))[0], gnorm2[first]
        n_new = 1
        # (‖g‖ + ‖g_c‖)², padded so that the float32 products' rounding cannot push the exact
        # value above it (the acceptance ratio must stay ≤ 1)
        torch.minimum(d2, (gnorm2.sqrt() + gc[0].sqrt()) ** 2 * (1 + _BOUND_PAD), out=d2)
        chosen[first] = True
        d2[first] = 0.0
        seen[first] = n_new
        picks.append(first)
    weights = d2.cpu().numpy().copy()
    weights[chosen] = 0.0
    sampler = BoundedD2Sampler(weights)

    def exact(j: int) -> float:
        s = int(seen[j])
        zj, rj = zs.rows(np.array([j]))[0], rs.rows(np.array([j]))[0]
        inner = torch.mv(rc[s:n_new], rj).double() * torch.mv(zc[s:n_new], zj).double()
        value = min(float(d2[j]), float((gnorm2[j] + gc[s:n_new] - 2.0 * inner).min()))
        d2[j] = value
        seen[j] = n_new
        counters["refreshes"] += 1
        return value

    def full_pass() -> None:
        counters["full_passes"] += 1
        for start in range(0, d2.shape[0], zs.chunk_rows):
            stop = min(start + zs.chunk_rows, d2.shape[0])
            low = int(seen[start:stop].min())
            if low < n_new:
                _update_rows(zs, rs, gnorm2, d2, start, stop, zc[low:n_new], rc[low:n_new], gc[low:n_new])
        seen[:] = n_new
        fresh = d2.cpu().numpy().copy()
        fresh[chosen] = 0.0
        sampler.reset(fresh)

    while len(picks) < k:
        j, trials = sampler.draw(rng, lambda i: seen[i] == n_new, exact, LAZY_MAX_TRIALS)
        counters["rejections"] += trials
        if j is None and trials >= LAZY_MAX_TRIALS:
            full_pass()
            j, _ = sampler.draw(rng, lambda i: True, exact)
        if j is None:   # every weight 0: uniform over the points not chosen yet (as d2_draw)
            free = np.flatnonzero(~chosen)
            j = int(free[min(int(rng.random() * free.size), free.size - 1)])
        zc[n_new], rc[n_new] = zs.rows(np.array([j]))[0], rs.rows(np.array([j]))[0]
        gc[n_new] = gnorm2[j]
        n_new += 1
        chosen[j] = True
        d2[j] = 0.0
        sampler.set(j, 0.0)
        seen[j] = n_new
        picks.append(j)


def _update_rows(zs, rs, gnorm2, d2, start, stop, zc, rc, gc) -> None:
    """D²[start:stop] ← min(D², ‖g − g_c‖²) over the centres (rows of zc, rc; ‖g_c‖² = gc)."""
    zb, rb = zs.block(start, stop), rs.block(start, stop)
    inner = (rb @ rc.T).double() * (zb @ zc.T).double()
    dist = (gnorm2[start:stop, None] + gc[None, :] - 2.0 * inner).min(dim=1).values
    torch.minimum(d2[start:stop], dist, out=d2[start:stop])
