"""The streaming engine of MASE and BASE (the methods and their plain references are in
:mod:`alkit.strategies.boundary`).

One pass over the pool does it all: per chunk, one GEMM for the logits, then a few in-place
(chunk × C) operations (:func:`alkit.scores.boundary_distances_`) give ŷ, d(z) and the radii r_c(z);
BASE offers each chunk's per-class scores to :class:`PerClassTopK`, which keeps only the few best
per class.  At N = 1.28 M, C = 1000 the extra memory is a few (chunk × C) buffers plus O(N) vectors
(d, ŷ, ℓ_ŷ, tie keys) and O(Σ q_c) candidates.  Steps:

* :func:`boundary_pass` — the chunked pass (ŷ, d, ℓ_ŷ for every point; a hook sees each chunk's r);
* :func:`mase_distances` / :func:`mase_picks` — MASE;
* :class:`PerClassTopK` — streaming per-class top-k with seeded tie keys;
* :func:`default_slack`, :func:`refill` — how many candidates each class keeps, and the exact
  second pass when earlier classes took too many of them;
* :func:`base_picks` — BASE from those pieces;
* :class:`BoundaryStats` — what a call of either reports, once, at its end.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from alkit.checks import check_finite_logits
from alkit.pool import PoolState
from alkit.scores import (SCORE_BLOCK_ROWS, auto_chunk_rows, boundary_distances_, class_weight_distances, iter_logits,
                          take_smallest)
from alkit.strategies.uncertainty import class_quotas


@dataclass(frozen=True)
class BoundaryStats:
    """What one :func:`mase_picks` or :func:`base_picks` call reports to its ``report`` callback,
    at its end.  Pass times are measured chunk by chunk in the same run, so the ratio of
    ``logits_s`` to ``pass_s`` is robust to the machine's load."""

    method: str        # "mase" or "base"
    logits_s: float    # reading features + the logits GEMM, summed over the passes
    pass_s: float      # the passes, whole
    passes: int        # 1 + refills
    refills: int       # BASE's exact second passes (:func:`refill`); 0 for MASE
    total_s: float     # the whole call


@dataclass
class _PassTimes:
    """The pass times of one call, summed over its passes (the engine's private accumulator)."""

    logits_s: float = 0.0
    pass_s: float = 0.0
    passes: int = 0


def weight_distances(pool: PoolState) -> tuple[torch.Tensor, bool]:
    """‖w_i − w_j‖ as a tensor, and whether two different classes have identical weights."""
    weight_dist = torch.from_numpy(class_weight_distances(pool.weight))
    return weight_dist, bool((weight_dist == 0).sum() > weight_dist.shape[0])


def boundary_pass(pool: PoolState, idx: np.ndarray, chunk_rows: int | None, on_chunk=None, weight_dist=None,
                  times: _PassTimes | None = None):
    """One chunked pass: ``(ŷ, d, ℓ_ŷ)`` for every point of ``idx``.

    ``on_chunk(start, r, pred, d)`` sees the r of each block of :data:`SCORE_BLOCK_ROWS` rows of a
    chunk (a view of a reused (n × C) tensor, r_ŷ = inf) right after its distances, while it is
    still in cache.
    ``times`` accumulates this pass's ``logits_s`` (reading features + the GEMM) and ``pass_s``.
    """
    started = time.perf_counter()
    chunk_rows = chunk_rows or auto_chunk_rows(pool.num_classes, pool.dim)
    weight_dist, zero_off = weight_dist or weight_distances(pool)
    pred = np.empty(idx.size, np.int64)
    dist = np.empty(idx.size, np.float32)
    top = np.empty(idx.size, np.float32)
    scratch = torch.empty(min(chunk_rows, SCORE_BLOCK_ROWS, max(idx.size, 1)) * pool.num_classes, dtype=torch.float32)
    given_logits = pool.logits is not None
    logits_s = 0.0
    with torch.no_grad():
        chunks = iter_logits(pool, idx, chunk_rows)
        while True:
            tick = time.perf_counter()
            item = next(chunks, None)
            logits_s += time.perf_counter() - tick
            if item is None:
                break
            start, chunk, r = item
            # A cache-sized block of rows at a time (the numbers are per row, so the same): the
            # finiteness test and the distances then read the block from cache, not memory.
            for b0 in range(0, chunk.size, SCORE_BLOCK_ROWS):
                block, rows = r[b0:b0 + SCORE_BLOCK_ROWS], chunk[b0:b0 + SCORE_BLOCK_ROWS]
                if given_logits:
                    check_finite_logits(block, rows, "logits")
                p, d, t = boundary_distances_(block, weight_dist, zero_off, scratch)
                if not given_logits:
                    # Through a head, a non-finite feature makes the row's largest logit non-finite:
                    # ±inf, or NaN (0·inf, inf − inf), which argmax takes for the largest.  So ℓ_ŷ
                    # tests the row, without a pass over every logit.
                    check_finite_logits(t[:, None], rows, "features")
                at, stop = start + b0, start + b0 + block.shape[0]
                pred[at:stop], dist[at:stop], top[at:stop] = p.numpy(), d.numpy(), t.numpy()
                if on_chunk is not None:
                    on_chunk(at, block, p, d)
    if times is not None:
        times.logits_s += logits_s
        times.pass_s += time.perf_counter() - started
        times.passes += 1
    return pred, dist, top


def mase_distances(pool: PoolState, chunk_rows: int | None = None, times: _PassTimes | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(eligible indices, d(z) = min_{c≠ŷ} r_c(z))`` in one chunked pass."""
    pool.require_head("mase")
    idx = pool.eligible_indices()
    _, dist, _ = boundary_pass(pool, idx, chunk_rows, times=times)
    return idx, dist


def mase_picks(pool: PoolState, budget: int, rng: np.random.Generator, chunk_rows: int | None = None,
               report: Callable[[BoundaryStats], None] | None = None) -> np.ndarray:
    """The ``budget`` eligible points with the smallest d(z), ties broken by ``rng``.  ``report``,
    if given, is called once, at the end, with a :class:`BoundaryStats` of the call."""
    started = time.perf_counter()
    times = _PassTimes()
    idx, dist = mase_distances(pool, chunk_rows, times)
    picks = idx[take_smallest(dist, budget, rng)]
    if report is not None:
        report(BoundaryStats(method="mase", logits_s=times.logits_s, pass_s=times.pass_s, passes=times.passes,
                             refills=0, total_s=time.perf_counter() - started))
    return picks


def _sortable(score: np.ndarray) -> np.ndarray:
    """float32 → uint32 in the same order (−0.0 taken as +0.0, as comparisons do; no NaN)."""
    bits = (score + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(1 << 31))


def class_score_key_order(cls: np.ndarray, score: np.ndarray, key: np.ndarray) -> np.ndarray:
    """``np.lexsort((key, score, cls))``: by class, then score, then tie key; 4× faster.

    (class, score) packed in one uint64 takes one sort instead of lexsort's three; rows equal on
    both, rare with float scores, are then put in key order within their run."""
    packed = (cls.astype(np.uint64) << np.uint64(32)) | _sortable(np.asarray(score, np.float32)).astype(np.uint64)
    order = np.argsort(packed, kind="stable")
    ranked = packed[order]
    tie = ranked[1:] == ranked[:-1]
    if tie.any():
        slots = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])   # every slot of a run of equals
        tied = order[slots]
        order[slots] = tied[np.lexsort((key[tied], packed[tied]))]
    return order


class PerClassTopK:
    """Streaming ``keep[c]`` smallest (score, tie key) of each column c, over chunks of rows.

    Per chunk: one comparison against each column's current threshold (its keep-th best so
    far) and a ``nonzero`` — only candidates that can still enter a list are copied out.  While
    a column's list is not yet full, the chunk's own keep-th smallest value (``torch.topk``
    along the rows) is the threshold, so the first chunk adds about Σ keep entries, not
    chunk × C.  Candidates go into preallocated arrays (the compacted lists first, new
    candidates after them) and are compacted — sorted by class, score, key and cut to ``keep``
    — once Σ keep new ones have arrived: memory O(Σ keep) whatever the pool size, and no
    allocation churn per chunk (which fragments the heap: measured +1.3 GB at 1.28 M rows).
    """

    def __init__(self, keep: np.ndarray, keys: np.ndarray) -> None:
        self.keep = np.asarray(keep, np.int64)
        self.keys = keys
        self.threshold = torch.full((self.keep.size,), float("inf"))
        self.threshold[torch.from_numpy(self.keep == 0)] = -float("inf")
        self.unfilled = self.keep > 0
        self.room = max(int(self.keep.sum()), 1 << 16)  # new candidates between compactions
        self._allocate(int(self.keep.sum()) + self.room)
        self.kept = 0  # the first `kept` entries: the compacted lists, by (class, score, key)
        self.size = 0  # entries in use
        self._mask: torch.Tensor | None = None
        self._starts = np.zeros(self.keep.size + 1, np.int64)   # per class, where its list starts (compact)

    def _allocate(self, capacity: int) -> None:
        old = (self._cls, self._score, self._pos) if hasattr(self, "_cls") else None
        self._cls = np.empty(capacity, np.int32)
        self._score = np.empty(capacity, np.float32)
        self._pos = np.empty(capacity, np.int64)
        if old is not None:
            for new, previous in zip((self._cls, self._score, self._pos), old):
                new[: self.size] = previous[: self.size]

    def add(self, scores: torch.Tensor, start: int) -> None:
        """Offer the rows ``start .. start + n`` (positions into ``keys``) of an (n × C) block."""
        n = scores.shape[0]
        threshold = self.threshold
        if self.unfilled.any() and n:
            k = int(min(self.keep[self.unfilled].max(), n))
            kth = torch.topk(scores, k, dim=0, largest=False, sorted=True).values
            rank = torch.from_numpy(np.clip(np.minimum(self.keep, k) - 1, 0, None))
            cut = kth.gather(0, rank[None, :])[0]
            cut[torch.from_numpy(self.keep > k)] = float("inf")  # lists longer than k: no cut here
            threshold = torch.minimum(threshold, cut)
        if self._mask is None or self._mask.numel() < scores.numel():
            self._mask = torch.empty(scores.numel(), dtype=torch.bool)  # reused: no per-chunk allocation
        mask = self._mask[: scores.numel()].view(scores.shape)
        torch.le(scores, threshold[None, :], out=mask)
        flat = np.flatnonzero(mask.numpy())
        if flat.size:
            if self.size + flat.size > self._cls.size:
                self.compact()
                if self.size + flat.size > self._cls.size:
                    self._allocate(self.size + flat.size + self.room)
            width = scores.shape[1]
            stop = self.size + flat.size
            self._cls[self.size:stop] = flat % width
            self._score[self.size:stop] = scores.reshape(-1)[torch.from_numpy(flat)].numpy()
            self._pos[self.size:stop] = flat // width + start
            self.size = stop
        if self.size - self.kept > self.room or self.unfilled.any():
            self.compact()

    def compact(self) -> None:
        if self.size == self.kept:
            return
        cls, score, pos = self._cls[: self.size], self._score[: self.size], self._pos[: self.size]
        order = class_score_key_order(cls, score, self.keys[pos])
        sorted_cls = cls[order]
        starts = np.searchsorted(sorted_cls, np.arange(self.keep.size))
        order = order[(np.arange(order.size) - starts[sorted_cls]) < self.keep[sorted_cls]]
        m = order.size
        self._cls[:m], self._score[:m], self._pos[:m] = cls[order], score[order], pos[order]
        self.kept = self.size = m
        # A class whose list is full only admits candidates at or below its last entry.
        counts = np.bincount(self.cls, minlength=self.keep.size)
        self._starts[1:] = np.cumsum(counts)   # class c's list: [starts[c], starts[c + 1])
        ends = self._starts[1:] - 1
        full = (counts >= self.keep) & (self.keep > 0)
        self.threshold[torch.from_numpy(full)] = torch.from_numpy(self.score[ends[full]])
        self.unfilled = (self.keep > 0) & ~full

    @property
    def cls(self) -> np.ndarray:
        return self._cls[: self.kept]

    @property
    def score(self) -> np.ndarray:
        return self._score[: self.kept]

    @property
    def pos(self) -> np.ndarray:
        return self._pos[: self.kept]

    def ranked(self, c: int) -> np.ndarray:
        """Positions of class ``c``'s list, best first (after :meth:`compact`)."""
        return self.pos[self._starts[c]:self._starts[c + 1]]


def default_slack(quotas: np.ndarray) -> np.ndarray:
    """Extra candidates kept per class beyond its quota q_c.

    Earlier classes can take at most Σ_{c'<c} q_{c'} of class c's best candidates (the exact
    bound), but take far fewer: on the ImageNet-shaped pools at most 86 (N = 100 k, 781 picks,
    q_c ≤ 1, a weak head) and 28 (N = 1.28 M, 10 k picks, q_c = 10).  The default keeps
    max(2·q_c, 16) + min(⌈Σ_{c'<c} q_{c'} / 8⌉, 8·q_c + 128): a few times those margins, about
    200 candidates per class at ImageNet scale; if it is ever short, a refill keeps BASE exact.
    """
    earlier = np.cumsum(quotas) - quotas
    return np.maximum(2 * quotas, 16) + np.minimum(-(-earlier // 8), 8 * quotas + 128)


def refill(pool: PoolState, idx: np.ndarray, classes: np.ndarray, keep: np.ndarray, keys: np.ndarray,
            taken: np.ndarray, chunk_rows: int | None, weight_dist: tuple[torch.Tensor, bool],
            times: _PassTimes | None = None) -> PerClassTopK:
    """Fresh per-class lists of length ``keep`` for ``classes``: one more full pass.

    The pass repeats the first one chunk for chunk (same GEMM shapes, so bit-identical scores)
    and keeps only the columns of ``classes``.  For the first of them the points already
    ``taken`` score +inf, so its list is exact whatever earlier classes took.
    """
    cols = torch.from_numpy(classes)
    lists = PerClassTopK(keep, keys)

    def offer(start: int, r: torch.Tensor, pred: torch.Tensor, dist: torch.Tensor) -> None:
        r.scatter_(1, pred[:, None], dist[:, None])
        s = r.index_select(1, cols)
        s[torch.from_numpy(taken[start:start + r.shape[0]]), 0] = float("inf")
        lists.add(s, start)

    boundary_pass(pool, idx, chunk_rows, offer, weight_dist, times)
    lists.compact()
    return lists


def base_picks(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    chunk_rows: int | None = None,
    slack: int | None = None,
    report: Callable[[BoundaryStats], None] | None = None,
) -> np.ndarray:
    """BASE's picks, exact and streaming, in one pass over the pool.

    Each class keeps its q_c + slack smallest scores, never an N × C matrix (default slack:
    :func:`default_slack`; the exact bound q_c + Σ_{c'<c} q_{c'} is never needed in practice).  If
    earlier classes nevertheless take so many of a class's candidates that fewer than q_c remain,
    one more pass recomputes that class exactly (taken points excluded) and gives every later class
    whose list is truncated a four times larger slack.  So the picks equal the plain per-class
    computation (:func:`alkit.strategies.boundary.base_reference`) whatever the slack.  If the
    eligible pool runs out of points for late classes, the remaining quota is filled with the
    smallest d(z) among untaken points.  ``report``, if given, is called once, at the end, with a
    :class:`BoundaryStats` of the call (times summed over the first pass and the refills).
    """
    started = time.perf_counter()
    pool.require_head("base")
    num_classes = pool.num_classes
    quotas = class_quotas(budget, num_classes, rng)
    bound = np.where(quotas > 0, np.cumsum(quotas), 0)  # the exact bound: enough in any case
    extra = default_slack(quotas) if slack is None else np.full(num_classes, int(slack), np.int64)
    keep = np.where(quotas > 0, np.minimum(bound, quotas + extra), 0)
    idx = pool.eligible_indices()
    keys = rng.random(idx.size)
    lists = PerClassTopK(keep, keys)
    times = _PassTimes()

    def offer(start: int, r: torch.Tensor, pred: torch.Tensor, dist: torch.Tensor) -> None:
        r.scatter_(1, pred[:, None], dist[:, None])  # s_ŷ = d, s_c = r_c elsewhere
        lists.add(r, start)

    weight_dist = weight_distances(pool)
    _, dist, _ = boundary_pass(pool, idx, chunk_rows, offer, weight_dist, times)
    lists.compact()
    ranked = {c: lists.ranked(c) for c in range(num_classes)}
    truncated = np.array([ranked[c].size >= keep[c] and keep[c] < bound[c] for c in range(num_classes)])
    taken = np.zeros(idx.size, bool)
    picks: list[np.ndarray] = []
    refills = 0
    for c in range(num_classes):
        need = int(quotas[c])
        if need == 0:
            continue
        free = ranked[c][~taken[ranked[c]]]
        if free.size < need and truncated[c]:
            later = np.flatnonzero(truncated & (np.arange(num_classes) > c))
            extra[later] = np.maximum(4 * extra[later], 16)
            longer = np.minimum(bound[later], quotas[later] + extra[later])
            batch = np.concatenate([[c], later]).astype(np.int64)
            fresh = refill(pool, idx, batch, np.concatenate([[need], longer]).astype(np.int64), keys, taken,
                            chunk_rows, weight_dist, times)
            for j, cls in enumerate(batch):
                ranked[int(cls)] = fresh.ranked(j)
            truncated[c] = False
            truncated[later] = longer < bound[later]
            refills += 1
            free = ranked[c][~taken[ranked[c]]]
        chosen = free[:need]
        taken[chosen] = True
        picks.append(chosen)
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    if chosen.size < budget:  # tiny pools: fill from the overall smallest d(z)
        rest = np.flatnonzero(~taken)
        order = rest[np.lexsort((keys[rest], dist[rest]))]
        chosen = np.concatenate([chosen, order[: budget - chosen.size]])
    if report is not None:
        report(BoundaryStats(method="base", logits_s=times.logits_s, pass_s=times.pass_s, passes=times.passes,
                             refills=refills, total_s=time.perf_counter() - started))
    return idx[chosen].astype(np.int64)
