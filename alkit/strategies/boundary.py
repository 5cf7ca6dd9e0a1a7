"""MASE and BASE: distances to the linear head's decision boundaries in feature space.

Closed form (Emam et al. 2021): for ℓ_k = w_kᵀz + b_k and ŷ = argmax ℓ, the hyperplane between
the predicted class and class c is at r_c(z) = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖ from z.  Only the
logits and the C×C matrix ‖w_i − w_j‖ are needed — never the (N × C × D) perturbation tensor
the authors' code builds — and the pool is streamed in chunks, so extra memory is bounded.
"""
from __future__ import annotations

import numpy as np

from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.scores import boundary_distances, class_weight_distances, take_smallest
from alkit.strategies.registry import register
from alkit.strategies.uncertainty import class_quotas


def mase_distances(pool: PoolState, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """``(eligible indices, d(z) = min_{c≠ŷ} r_c(z))`` in one chunked pass."""
    pool.require_head("mase")
    weight_dist = class_weight_distances(pool.weight)
    idx = pool.eligible_indices()
    dist = np.empty(idx.size, np.float32)
    for start in range(0, idx.size, chunk_rows):
        chunk = idx[start:start + chunk_rows]
        r, _ = boundary_distances(pool.logits_of(chunk), weight_dist)
        dist[start:start + chunk.size] = r.min(axis=1)
    return idx, dist


@register("mase", reference="Emam et al. 2021 (MASE, margin in feature space)")
def mase(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """MASE: the ``budget`` points with the smallest d(z) = min_{c≠ŷ} |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖."""
    idx, dist = mase_distances(pool)
    return idx[take_smallest(dist, budget, rng)]


def base_class_scores(r: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """BASE's per-class score s_c(z): d(z) if ŷ = c, else r_c(z) — shape (n, C)."""
    scores = r.copy()
    rows = np.arange(r.shape[0])
    scores[rows, pred] = r.min(axis=1)
    return scores


class _PerClassTopK:
    """Streaming k_c smallest (score, tiebreak) per class, with a shared candidate buffer.

    Candidates at or below each class's current k_c-th best are appended; the buffer is
    compacted (sorted by class, score, tiebreak and cut to k_c per class) when it grows past a
    bound, so memory stays O(Σ k_c) whatever the pool size.
    """

    def __init__(self, keep: np.ndarray, max_buffer: int) -> None:
        self.keep = keep
        self.threshold = np.full(keep.size, np.inf, np.float32)
        self.threshold[keep == 0] = -np.inf
        self.max_buffer = max(max_buffer, 1)
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.buffered = 0
        self.cls = self.score = self.key = self.index = np.empty(0)

    def add(self, scores: np.ndarray, keys: np.ndarray, indices: np.ndarray) -> None:
        rows, cols = np.nonzero(scores <= self.threshold[None, :])
        if rows.size:
            self.parts.append((cols.astype(np.int32), scores[rows, cols], keys[rows], indices[rows]))
            self.buffered += rows.size
        if self.buffered > self.max_buffer:
            self.compact()

    def compact(self) -> None:
        if self.parts:
            cls, score, key, index = (np.concatenate([p[i] for p in self.parts]) for i in range(4))
            self.parts, self.buffered = [], 0
            cls = np.concatenate([self.cls, cls]).astype(np.int32)
            score = np.concatenate([self.score, score]).astype(np.float32)
            key = np.concatenate([self.key, key])
            index = np.concatenate([self.index, index]).astype(np.int64)
            order = np.lexsort((key, score, cls))
            cls, score, key, index = cls[order], score[order], key[order], index[order]
            starts = np.searchsorted(cls, np.arange(self.keep.size))
            rank = np.arange(cls.size) - starts[cls]
            kept = rank < self.keep[cls]
            self.cls, self.score, self.key, self.index = cls[kept], score[kept], key[kept], index[kept]
            # A class whose list is full only admits candidates at or below its last entry.
            counts = np.bincount(self.cls, minlength=self.keep.size)
            ends = np.cumsum(counts) - 1
            full = (counts >= self.keep) & (self.keep > 0)
            self.threshold[full] = self.score[ends[full]]

    def ranked(self, c: int) -> np.ndarray:
        lo, hi = np.searchsorted(self.cls, [c, c + 1])
        return self.index[lo:hi]


@register("base", reference="Emam et al. 2021 (BASE, balanced selection)")
def base(pool: PoolState, budget: int, rng: np.random.Generator, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """BASE: per class c, the ⌊b/C⌋ points nearest the c-vs-ŷ boundary (balanced selection).

    Emam et al. 2021.  Quota q_c = ⌊b/C⌋, plus 1 for b mod C random classes; class
    c takes the q_c smallest s_c(z) not yet taken, with s_c = d(z) if ŷ = c else r_c(z),
    r_c = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖.  Classes are served in index order, as in the authors' code.

    Exact and streaming: class c can lose at most Σ_{c'<c} q_{c'} of its best points to earlier
    classes, so keeping its q_c + Σ_{c'<c} q_{c'} smallest scores suffices — no N × C matrix.
    If the eligible pool runs out of points for late classes, the remaining quota is filled
    with the smallest d(z) among untaken points.
    """
    pool.require_head("base")
    quotas = class_quotas(budget, pool.num_classes, rng)
    keep = np.where(quotas > 0, np.cumsum(quotas), 0)
    weight_dist = class_weight_distances(pool.weight)
    idx = pool.eligible_indices()
    keys = rng.random(idx.size)
    top = _PerClassTopK(keep, max_buffer=max(4 * int(keep.sum()), 4 * chunk_rows))
    min_dist = np.empty(idx.size, np.float32)
    for start in range(0, idx.size, chunk_rows):
        chunk = idx[start:start + chunk_rows]
        r, pred = boundary_distances(pool.logits_of(chunk), weight_dist)
        scores = base_class_scores(r, pred)
        min_dist[start:start + chunk.size] = scores[np.arange(chunk.size), pred]
        top.add(scores, keys[start:start + chunk.size], chunk)
    top.compact()
    taken: set[int] = set()
    picks: list[int] = []
    for c in range(pool.num_classes):
        need = int(quotas[c])
        for i in top.ranked(c):
            if need == 0:
                break
            if int(i) not in taken:
                taken.add(int(i))
                picks.append(int(i))
                need -= 1
    if len(picks) < budget:  # tiny pools: fill from the overall smallest d(z)
        rest = np.flatnonzero(~np.isin(idx, np.asarray(picks, np.int64)))
        order = rest[np.lexsort((keys[rest], min_dist[rest]))]
        picks.extend(idx[order[: budget - len(picks)]].tolist())
    return np.asarray(picks, np.int64)
