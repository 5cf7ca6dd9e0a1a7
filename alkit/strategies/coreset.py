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
    pool_work,
    rows_work,
    sqdist64,
    threads_by_size,
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


@threads_by_size(rows_work())
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
    timings: dict | None = None,
) -> np.ndarray:
    """k-center greedy: ``k`` rows of ``candidate_indices`` (global row ids, in pick order).

    Centres start as ``center_indices`` (if empty, the first pick is a candidate drawn
    uniformly with ``rng``); each step picks argmax_x min_c ‖x − c‖² over the remaining
    candidates (first candidate on an exact tie) and adds it to the centres.

    Cost: the initial distances take |cand|·|centres|·D flops (GEMM, blocked over both sides);
    each pick is one pass of |cand|·D (a matrix-vector product, memory-bound).  Memory: the
    candidates' rows (float32 if they fit ``cache_bytes``, else their own dtype, else streamed
    from ``features``) + a |cand| float32 vector + one chunk × ``center_block`` block.
    ``timings``, if a dict, receives ``setup_s`` (caching + initial distances), ``picks_s``,
    ``cache_mode`` and ``refined`` (picks whose float32 near-tie was re-ranked in float64).
    """
    t0 = time.perf_counter()
    cand, cent = _check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    dev = as_device(device)
    # Centre the features on the candidates' mean: distances are unchanged, float32 error shrinks.
    mu = mean_rows(features, cand, chunk_rows).astype(np.float32)
    store = feature_store(features, cand, center=mu, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
    sq = row_sqnorms(store)
    max_sq = float(sq.max())
    mind = torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev)
    mu_t = torch.from_numpy(mu).to(dev)
    max_center_sq = 0.0
    # Initial min-distances to the labelled centres: blocks of centres × chunks of candidates.
    rows_per_block = max(1, min(chunk_rows, (1 << 24) // max(center_block, 1)))
    for c0 in range(0, cent.size, center_block):
        centers = torch.from_numpy(gather_rows(features, cent[c0:c0 + center_block], chunk_rows)).to(dev) - mu_t
        csq = (centers.double() ** 2).sum(1).float()
        max_center_sq = max(max_center_sq, float(csq.max()))
        for start, stop, block in store.chunks(rows_per_block):
            d2 = torch.addmm(sq[start:stop, None] + csq[None, :], block, centers.T, alpha=-2.0)
            torch.minimum(mind[start:stop], d2.min(dim=1).values, out=mind[start:stop])

    picks: list[int] = []
    refined = 0
    t1 = time.perf_counter()

    def add_center(pos: int) -> None:
        nonlocal max_center_sq
        x = store.rows(np.array([pos]))[0]
        x_sq = sq[pos]
        max_center_sq = max(max_center_sq, float(x_sq))
        for start, stop, block in store.chunks():
            d2 = torch.addmv(sq[start:stop] + x_sq, block, x, alpha=-2.0)
            torch.minimum(mind[start:stop], d2, out=mind[start:stop])
        mind[pos] = float("-inf")
        picks.append(pos)

    if cent.size == 0:
        add_center(int(rng.integers(cand.size)))
    while len(picks) < k:
        best = int(torch.argmax(mind))
        if tie_rtol > 0:
            tol = tie_rtol * (max_sq + max_center_sq)
            near = torch.nonzero(mind >= mind[best] - 2.0 * tol).flatten().cpu().numpy()
            if 1 < near.size <= MAX_REFINE:
                refined += 1
                best = int(near[np.argmax(_exact_min_sqdist(features, cand[near], np.concatenate(
                    [cent, cand[np.asarray(picks, np.int64)]]), center_block, chunk_rows))])
        add_center(best)
    if timings is not None:
        timings.update(setup_s=t1 - t0, picks_s=time.perf_counter() - t1, cache_mode=store.mode, refined=refined)
    return cand[np.asarray(picks, np.int64)]


def _exact_min_sqdist(features, rows, centers, center_block, chunk_rows) -> np.ndarray:
    """min over ``centers`` of the float64 squared distance, for each of ``rows`` (global ids)."""
    x = gather_rows(features, rows, chunk_rows, np.float64)
    best = np.full(rows.size, np.inf)
    for c0 in range(0, centers.size, center_block):
        c = gather_rows(features, centers[c0:c0 + center_block], chunk_rows, np.float64)
        np.minimum(best, sqdist64(x, c).min(axis=1), out=best)
    return best


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
@threads_by_size(pool_work)
def coreset(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
) -> np.ndarray:
    """Coreset: k-center greedy — repeatedly take the eligible point farthest from all labelled/chosen points.

    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018 (greedy 2-approximation of the k-center problem).  With S the labelled set plus the
    points chosen so far, each step picks u = argmax_{x eligible} min_{s∈S} ‖z_x − z_s‖₂ over
    frozen features z.  With no labelled point, the first centre is a random eligible point.
    Exact on the whole pool (no subsampling): see :func:`k_center_greedy`.
    """
    return k_center_greedy(pool.features, coreset_centers(pool), pool.eligible_indices(), budget, rng,
                           chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device)
