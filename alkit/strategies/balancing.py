"""Balancing (Aggarwal, Popescu, Hudelot, WACV 2020), as in Emam et al.'s code, with its bugs fixed.

Greedy, one point at a time.  With n_c the labelled count of class c, n̄ = mean_c n_c, the
majority classes M = {c : n_c > n̄} and minority classes m = {c : n_c ≤ n̄}: if the remaining
budget R satisfies R ≤ |m|·(avg_{c∈M} n_c − avg_{c∈m} n_c), pick

    x* = argmin_x ‖z_x − μ_r‖² / min_{c∈M} ‖z_x − μ_c‖²,

with r = argmin_c n_c the rarest class and μ_c the mean feature of its labelled points (the
numerator is 1 when the rarest class has no labelled point); otherwise pick a uniformly
random eligible point.  If there is no majority class (all counts equal, e.g. nothing
labelled yet) the step is random.

Label use: true labels of *labelled* points only.  A point picked earlier in the same batch is
counted (and moves its class centre) under the model's predicted class ŷ — the authors' code
read its true label at once, an oracle leak.  The denominator is the *nearest* majority
centre (the paper's intent and the authors' own variable name; their code takes the farthest).

Fast path (:func:`balancing_greedy`): features are streamed once per change, never N × C:
  * numerator: one pass (N·D) when the rarest class or its centre changes;
  * denominator: per point the distance to, and identity of, its nearest majority centre,
    kept in sync incrementally: a majority centre that moves or leaves M invalidates only the
    points it was nearest to (recomputed against M: |those|·|M|·D), a centre that joins or
    moves is folded into every point with one pass (N·D).
So a balancing step costs 1–2 passes of N·D plus a recomputation for ~N/|M| points; a random
step costs O(k).  The first balancing step costs N·|M|·D (one blocked GEMM).  Float32 near-ties
of the argmin are re-ranked in float64, so the picks equal :func:`balancing_reference`'s.
"""
from __future__ import annotations

from typing import Callable, Union

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

#: Predicted class of rows: an (N,) int array, or ``f(global_indices) -> classes``; None: unknown.
Predictor = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]
TIE_RTOL = 1e-5


def balancing_mode(counts: np.ndarray, remaining: int) -> bool:
    """True when the remaining budget is small relative to the imbalance (take a balancing step)."""
    mean = counts.mean()
    major = counts > mean
    if not major.any():
        return False
    minor = ~major
    gap = counts[major].mean() - counts[minor].mean()
    return bool(remaining <= minor.sum() * gap)


def _predict(predictor: Predictor, row: int) -> int:
    if predictor is None:
        return -1
    if callable(predictor):
        return int(np.asarray(predictor(np.array([row], np.int64)))[0])
    return int(predictor[row])


def _nth_free(t: int, taken_sorted: list[int]) -> int:
    """The t-th (0-based) position not in ``taken_sorted`` (ascending)."""
    pos = t
    for p in taken_sorted:
        if p <= pos:
            pos += 1
        else:
            break
    return pos


def _class_sums(features, rows, classes, num_classes, chunk_rows) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    sums = torch.zeros((num_classes, features.shape[1]), dtype=torch.float64)
    for start in range(0, rows.size, chunk_rows):
        block = torch.from_numpy(gather_rows(features, rows[start:start + chunk_rows], chunk_rows, np.float64))
        sums.index_add_(0, torch.from_numpy(classes[start:start + chunk_rows].astype(np.int64)), block)
    return counts, sums.numpy()


def _score(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = num / den
    return np.where(den > 0, s, np.inf)


def _exact_scores(features, rows, sums, counts, rarest, major, chunk_rows) -> np.ndarray:
    x = gather_rows(features, rows, chunk_rows, np.float64)
    num = np.ones(rows.size) if counts[rarest] == 0 else sqdist64(x, sums[rarest:rarest + 1] / counts[rarest])[:, 0]
    maj = np.flatnonzero(major)
    den = sqdist64(x, sums[maj] / counts[maj, None]).min(axis=1)
    return _score(num, den)


def balancing_reference(
    features: np.ndarray,
    labeled_indices: np.ndarray,
    labeled_classes: np.ndarray,
    candidate_indices: np.ndarray,
    num_classes: int,
    k: int,
    rng: np.random.Generator,
    predicted: Predictor = None,
) -> np.ndarray:
    """Plain greedy balancing: every step recomputes all distances in float64 (small pools)."""
    lab = np.asarray(labeled_indices, np.int64)
    cand = np.asarray(candidate_indices, np.int64)
    counts, sums = _class_sums(features, lab, np.asarray(labeled_classes, np.int64), num_classes, DEFAULT_CHUNK_ROWS)
    x = np.asarray(features[cand], np.float64)
    avail = np.ones(cand.size, bool)
    picks = []
    k = min(int(k), cand.size)
    for step in range(k):
        if balancing_mode(counts, k - step):
            major = counts > counts.mean()
            rarest = int(np.argmin(counts))
            free = np.flatnonzero(avail)
            num = np.ones(free.size) if counts[rarest] == 0 else sqdist64(x[free], sums[rarest:rarest + 1] / counts[rarest])[:, 0]
            maj = np.flatnonzero(major)
            den = sqdist64(x[free], sums[maj] / counts[maj, None]).min(axis=1)
            j = int(free[np.argmin(_score(num, den))])
        else:
            free = np.flatnonzero(avail)
            j = int(free[rng.integers(free.size)])
        avail[j] = False
        picks.append(j)
        c = _predict(predicted, int(cand[j]))
        if c >= 0:
            counts[c] += 1
            sums[c] += x[j]
    return cand[np.asarray(picks, np.int64)]


@threads_by_size(rows_work())
def balancing_greedy(
    features: np.ndarray,
    labeled_indices: np.ndarray,
    labeled_classes: np.ndarray,
    candidate_indices: np.ndarray,
    num_classes: int,
    k: int,
    rng: np.random.Generator,
    predicted: Predictor = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    center_block: int = DEFAULT_CENTER_BLOCK,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | torch.device | None = None,
    tie_rtol: float = TIE_RTOL,
    timings: dict | None = None,
) -> np.ndarray:
    """Fast, exact greedy balancing (same picks as :func:`balancing_reference`); global row ids.

    ``timings``, if a dict, receives the number of ``balancing_steps`` and ``random_steps``."""
    lab = np.asarray(labeled_indices, np.int64)
    cand = np.asarray(candidate_indices, np.int64)
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    counts, sums = _class_sums(features, lab, np.asarray(labeled_classes, np.int64), num_classes, chunk_rows)
    dev = as_device(device)
    n = cand.size
    store = None  # built lazily: runs with random steps only never touch the features
    state: dict = {}
    picks: list[int] = []
    taken_sorted: list[int] = []
    avail = np.ones(n, bool)

    def setup() -> None:
        nonlocal store
        mu = mean_rows(features, cand, chunk_rows).astype(np.float32)
        store = feature_store(features, cand, center=mu, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
        state.update(mu=mu, sq=row_sqnorms(store), num_key=None, snap={}, best=None, arg=None)
        state["max_sq"] = float(state["sq"].max())

    def centre(classes: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((sums[classes] / counts[classes, None] - state["mu"]).astype(np.float32)).to(dev)

    def dist_to(classes: np.ndarray, rows: torch.Tensor | None = None, sq: torch.Tensor | None = None):
        """(min distance², argmin class) of the given rows (default: all, chunked) to centres."""
        cen = centre(classes)
        csq = (cen.double() ** 2).sum(1).float()
        state["max_csq"] = max(state.get("max_csq", 0.0), float(csq.max()))
        cls_t = torch.from_numpy(classes.astype(np.int64)).to(dev)
        blocks = [(0, rows.shape[0], rows)] if rows is not None else store.chunks(max(1, (1 << 24) // max(len(classes), 1)))
        best = torch.empty(rows.shape[0] if rows is not None else n, dtype=torch.float32, device=dev)
        arg = torch.empty_like(best, dtype=torch.int64)
        sq_all = state["sq"] if sq is None else sq
        for start, stop, block in blocks:
            vals = torch.full((stop - start,), float("inf"), device=dev)
            who = torch.zeros(stop - start, dtype=torch.int64, device=dev)
            for c0 in range(0, len(classes), center_block):
                d2 = torch.addmm(sq_all[start:stop, None] + csq[None, c0:c0 + center_block], block,
                                 cen[c0:c0 + center_block].T, alpha=-2.0)
                v, a = d2.min(dim=1)
                better = v < vals
                vals = torch.where(better, v, vals)
                who = torch.where(better, cls_t[c0:c0 + center_block][a], who)
            best[start:stop], arg[start:stop] = vals, who
        return best, arg

    def sync_majority(major: np.ndarray) -> None:
        snap: dict = state["snap"]
        current = {int(c): int(counts[c]) for c in np.flatnonzero(major)}
        if state["best"] is None:
            state["best"], state["arg"] = dist_to(np.flatnonzero(major))
        else:
            removed = [c for c, v in snap.items() if current.get(c) != v]
            added = [c for c, v in current.items() if snap.get(c) != v]
            if removed:
                stale = torch.isin(state["arg"], torch.tensor(removed, device=dev))
                pos = torch.nonzero(stale).flatten()
                if pos.numel() > n // 2:
                    state["best"], state["arg"] = dist_to(np.flatnonzero(major))
                    added = []
                elif pos.numel():
                    maj = np.flatnonzero(major)
                    for p0 in range(0, pos.numel(), chunk_rows):
                        p = pos[p0:p0 + chunk_rows]
                        b, a = dist_to(maj, store.rows(p.cpu().numpy()), state["sq"][p])
                        state["best"][p], state["arg"][p] = b, a
            if added:
                b, a = dist_to(np.asarray(added, np.int64))
                better = b < state["best"]
                state["best"] = torch.where(better, b, state["best"])
                state["arg"] = torch.where(better, a, state["arg"])
        state["snap"] = current

    def numerator(rarest: int) -> torch.Tensor:
        key = (rarest, int(counts[rarest]))
        if state["num_key"] != key:
            if counts[rarest] == 0:
                state["num"] = torch.ones(n, dtype=torch.float32, device=dev)
                state["num_csq"] = 0.0
            else:
                state["num"], _ = dist_to(np.array([rarest]))
            state["num_key"] = key
        return state["num"]

    n_balancing = 0
    for step in range(k):
        if balancing_mode(counts, k - step):
            n_balancing += 1
            if store is None:
                setup()
            major = counts > counts.mean()
            rarest = int(np.argmin(counts))
            sync_majority(major)
            num = numerator(rarest).double()
            den = state["best"].double()
            mask = torch.from_numpy(avail).to(dev)
            score = torch.where(mask & (den > 0), num / den, torch.tensor(float("inf"), dtype=torch.float64, device=dev))
            j = int(torch.argmin(score))
            if tie_rtol > 0:
                tol = tie_rtol * (state["max_sq"] + state.get("max_csq", 0.0))
                tn = 0.0 if counts[rarest] == 0 else tol
                lower = torch.where(mask, (num - tn).clamp(min=0) / (den + tol), torch.tensor(float("inf"), dtype=torch.float64, device=dev))
                upper = float("inf") if not (den[j] - tol > 0) else float((num[j] + tn) / (den[j] - tol))
                near = torch.nonzero(lower <= upper).flatten().cpu().numpy()
                if 1 < near.size <= 4096:
                    j = int(near[np.argmin(_exact_scores(features, cand[near], sums, counts, rarest, major, chunk_rows))])
        else:
            j = _nth_free(int(rng.integers(n - step)), taken_sorted)
        avail[j] = False
        picks.append(j)
        taken_sorted.insert(int(np.searchsorted(taken_sorted, j)), j)
        c = _predict(predicted, int(cand[j]))
        if c >= 0:
            counts[c] += 1
            sums[c] += gather_rows(features, cand[j:j + 1], chunk_rows, np.float64)[0]
    if timings is not None:
        timings.update(balancing_steps=n_balancing, random_steps=k - n_balancing)
    return cand[np.asarray(picks, np.int64)]


@register("balancing", reference="Aggarwal et al. 2020 (WACV); Emam et al. 2021 (Balancing)")
@threads_by_size(pool_work)
def balancing(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
) -> np.ndarray:
    """Balancing: while labels are too imbalanced for the remaining budget, pick near the rarest class, far from majority classes; else random.

    Aggarwal, Popescu, Hudelot, "Active Learning for Imbalanced Datasets", WACV 2020, as in
    Emam et al. 2021's code.  Greedy: if R ≤ |m|·(avg_{M} n_c − avg_{m} n_c) (R remaining
    budget, M / m the classes with n_c > n̄ / ≤ n̄), pick argmin_x ‖z − μ_rarest‖² /
    min_{c∈M} ‖z − μ_c‖² (numerator 1 if the rarest class has no label), else a random point.
    Uses true labels of labelled points and the model's prediction ŷ for points picked earlier
    in the batch (no model: those are not counted).  Fixes: nearest (not farthest) majority
    centre; no true-label leak.  See the module docstring for the incremental fast path.
    """
    centres = np.flatnonzero(pool.labeled & ~pool.held_out).astype(np.int64)
    predicted = None
    if pool.has_model:
        predicted = lambda rows: pool.logits_of(rows).argmax(axis=1)  # noqa: E731
    return balancing_greedy(pool.features, centres, pool.labels[centres], pool.eligible_indices(), pool.num_classes,
                            budget, rng, predicted, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device)
