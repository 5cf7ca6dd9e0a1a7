"""MASE and BASE: distances to the linear head's decision boundaries in feature space.

Closed form (Emam et al. 2021): for ℓ_k = w_kᵀz + b_k and ŷ = argmax ℓ, the hyperplane between
the predicted class and class c is at r_c(z) = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖ from z.  Only the
logits and the C×C matrix ‖w_i − w_j‖ are needed — never the (N × C × D) perturbation tensor
the authors' code builds — and the pool is streamed in chunks, so extra memory is bounded.

One pass over the pool does it all: per chunk, one GEMM for the logits, then a few in-place
(chunk × C) operations (:func:`alkit.scores.boundary_distances_`).  At N = 1.28 M, C = 1000 the
extra memory is a few (chunk × C) buffers plus O(N) vectors (d, ŷ, ℓ_ŷ, tie keys).
"""
from __future__ import annotations

import numpy as np
import torch

from alkit.pool import PoolState
from alkit.scores import (
    auto_chunk_rows, boundary_distances, boundary_distances_, class_weight_distances, iter_logits, read_rows,
    take_smallest,
)
from alkit.strategies.registry import register
from alkit.strategies.uncertainty import class_quotas

__all__ = ["mase", "base", "mase_distances", "base_class_scores", "boundary_distances"]


def _weight_distances(pool: PoolState) -> tuple[torch.Tensor, bool]:
    """‖w_i − w_j‖ as a tensor, and whether two different classes have identical weights."""
    weight_dist = torch.from_numpy(class_weight_distances(pool.weight))
    return weight_dist, bool((weight_dist == 0).sum() > weight_dist.shape[0])


def _boundary_pass(pool: PoolState, idx: np.ndarray, chunk_rows: int | None, on_chunk=None, weight_dist=None):
    """One chunked pass: ``(ŷ, d, ℓ_ŷ)`` for every point of ``idx``.

    ``on_chunk(start, r, pred, d)`` sees each chunk's r (a reused (n × C) tensor, r_ŷ = inf).
    """
    chunk_rows = chunk_rows or auto_chunk_rows(pool.num_classes, pool.dim)
    weight_dist, zero_off = weight_dist or _weight_distances(pool)
    pred = np.empty(idx.size, np.int64)
    dist = np.empty(idx.size, np.float32)
    top = np.empty(idx.size, np.float32)
    scratch = torch.empty(min(chunk_rows, max(idx.size, 1)) * pool.num_classes, dtype=torch.float32)
    with torch.no_grad():
        for start, chunk, r in iter_logits(pool, idx, chunk_rows):
            p, d, t = boundary_distances_(r, weight_dist, zero_off, scratch)
            stop = start + chunk.size
            pred[start:stop], dist[start:stop], top[start:stop] = p.numpy(), d.numpy(), t.numpy()
            if on_chunk is not None:
                on_chunk(start, r, p, d)
    return pred, dist, top


def mase_distances(pool: PoolState, chunk_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(eligible indices, d(z) = min_{c≠ŷ} r_c(z))`` in one chunked pass."""
    pool.require_head("mase")
    idx = pool.eligible_indices()
    _, dist, _ = _boundary_pass(pool, idx, chunk_rows)
    return idx, dist


@register("mase", reference="Emam et al. 2021 (MASE, margin in feature space)")
def mase(pool: PoolState, budget: int, rng: np.random.Generator, chunk_rows: int | None = None) -> np.ndarray:
    """MASE: the ``budget`` points with the smallest d(z) = min_{c≠ŷ} |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖."""
    idx, dist = mase_distances(pool, chunk_rows)
    return idx[take_smallest(dist, budget, rng)]


def base_class_scores(r: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """BASE's per-class score s_c(z): d(z) if ŷ = c, else r_c(z) — shape (n, C)."""
    scores = r.copy()
    rows = np.arange(r.shape[0])
    scores[rows, pred] = r.min(axis=1)
    return scores


class _PerClassTopK:
    """Streaming ``keep[c]`` smallest (score, tie key) of each column c, over chunks of rows.

    Per chunk: one comparison against each column's current threshold (its keep-th best so
    far) and a ``nonzero`` — only candidates that can still enter a list are copied out.  While
    a column's list is not yet full, the chunk's own keep-th smallest value (``torch.topk``
    along the rows) is the threshold, so the first chunk adds about Σ keep entries, not
    chunk × C.  Candidates are buffered and compacted (sorted by class, score, key; cut to
    ``keep``) once the buffer exceeds a bound: memory O(Σ keep) whatever the pool size.
    """

    def __init__(self, keep: np.ndarray, keys: np.ndarray) -> None:
        self.keep = np.asarray(keep, np.int64)
        self.keys = keys
        self.threshold = torch.full((self.keep.size,), float("inf"))
        self.threshold[torch.from_numpy(self.keep == 0)] = -float("inf")
        self.unfilled = self.keep > 0
        self.max_buffer = max(2 * int(self.keep.sum()), 1 << 16)
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.cls = np.empty(0, np.int32)
        self.score = np.empty(0, np.float32)
        self.pos = np.empty(0, np.int64)

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
        flat = np.flatnonzero((scores <= threshold[None, :]).numpy())
        if flat.size:
            width = scores.shape[1]
            values = scores.reshape(-1)[torch.from_numpy(flat)].numpy()
            self.parts.append(((flat % width).astype(np.int32), values, flat // width + start))
            self.buffered += flat.size
        if self.buffered > self.max_buffer or self.unfilled.any():
            self.compact()

    def compact(self) -> None:
        if not self.parts:
            return
        cls = np.concatenate([self.cls] + [p[0] for p in self.parts])
        score = np.concatenate([self.score] + [p[1] for p in self.parts])
        pos = np.concatenate([self.pos] + [p[2] for p in self.parts])
        self.parts, self.buffered = [], 0
        order = np.lexsort((self.keys[pos], score, cls))
        cls, score, pos = cls[order], score[order], pos[order]
        starts = np.searchsorted(cls, np.arange(self.keep.size))
        kept = (np.arange(cls.size) - starts[cls]) < self.keep[cls]
        self.cls, self.score, self.pos = cls[kept], score[kept], pos[kept]
        # A class whose list is full only admits candidates at or below its last entry.
        counts = np.bincount(self.cls, minlength=self.keep.size)
        ends = np.cumsum(counts) - 1
        full = (counts >= self.keep) & (self.keep > 0)
        self.threshold[torch.from_numpy(full)] = torch.from_numpy(self.score[ends[full]])
        self.unfilled = (self.keep > 0) & ~full

    def ranked(self, c: int) -> np.ndarray:
        """Positions of class ``c``'s list, best first."""
        lo, hi = np.searchsorted(self.cls, [c, c + 1])
        return self.pos[lo:hi]


def _default_slack(quotas: np.ndarray) -> np.ndarray:
    """Extra candidates kept per class beyond its quota before the exact fallback is needed."""
    return np.maximum(2 * quotas, 16)


#: Classes recomputed together when one exhausts its candidate list (one extra read of the pool).
REFILL_CLASSES = 64


def _refill(pool: PoolState, idx: np.ndarray, classes: np.ndarray, keep: np.ndarray, keys: np.ndarray,
            pred: np.ndarray, dist: np.ndarray, top: np.ndarray, taken: np.ndarray, chunk_rows: int | None,
            weight_dist: tuple[torch.Tensor, bool]) -> _PerClassTopK:
    """Fresh per-class lists of length ``keep`` for ``classes``, from their logit columns only.

    One more read of the pool with a narrow GEMM (len(classes) columns).  For the first class
    the points already ``taken`` score +inf, so its list is exact whatever earlier classes took.
    """
    chunk_rows = chunk_rows or auto_chunk_rows(pool.num_classes, pool.dim)
    cols = torch.from_numpy(classes)
    wd_cols = weight_dist[0][:, cols].contiguous()  # ‖w_ŷ − w_c‖ for each ŷ and each c in classes
    zero_off = weight_dist[1]
    lists = _PerClassTopK(keep, keys)
    w = b = None
    if pool.logits is None:
        w = torch.from_numpy(np.ascontiguousarray(pool.weight[classes], np.float32))
        b = torch.from_numpy(np.ascontiguousarray(pool.bias[classes], np.float32))
    rows = min(chunk_rows, max(idx.size, 1))
    feature_buffer = torch.empty(rows * pool.dim, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, idx.size, chunk_rows):
            chunk = idx[start:start + chunk_rows]
            stop = start + chunk.size
            if pool.logits is None:
                logits = torch.addmm(b, read_rows(pool.features, chunk, feature_buffer), w.T)
            else:
                logits = read_rows(pool.logits, chunk)[:, cols]
            p = torch.from_numpy(pred[start:stop])
            s = (torch.from_numpy(top[start:stop])[:, None] - logits).abs_()
            denom = wd_cols.index_select(0, p)
            s.div_(denom)
            if zero_off:
                s.masked_fill_(denom == 0, float("inf"))
            own = p[:, None] == cols[None, :]
            s = torch.where(own, torch.from_numpy(dist[start:stop])[:, None], s)
            s[torch.from_numpy(taken[start:stop]), 0] = float("inf")
            lists.add(s, start)
    lists.compact()
    return lists


@register("base", reference="Emam et al. 2021 (BASE, balanced selection)")
def base(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    chunk_rows: int | None = None,
    slack: int | None = None,
) -> np.ndarray:
    """BASE: per class c, the ⌊b/C⌋ points nearest the c-vs-ŷ boundary (balanced selection).

    Emam et al. 2021.  Quota q_c = ⌊b/C⌋, plus 1 for b mod C random classes; class
    c takes the q_c smallest s_c(z) not yet taken, with s_c = d(z) if ŷ = c else r_c(z),
    r_c = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖.  Classes are served in index order, as in the authors' code.

    Exact and streaming, in one pass over the pool: each class keeps its q_c + slack smallest
    scores (default slack max(2·q_c, 16)), never an N × C matrix.  If earlier classes take so
    many of a class's candidates that fewer than q_c remain, that class is recomputed exactly
    from its logit column with the taken points excluded (one more read of the pool, a narrow
    GEMM; up to 63 later classes with truncated lists get four times longer lists in the same
    read).  So the picks equal the plain per-class computation whatever the slack.  If the eligible pool runs out of
    points for late classes, the remaining quota is filled with the smallest d(z) among untaken
    points.
    """
    pool.require_head("base")
    num_classes = pool.num_classes
    quotas = class_quotas(budget, num_classes, rng)
    bound = np.where(quotas > 0, np.cumsum(quotas), 0)  # the exact bound: enough in any case
    extra = _default_slack(quotas) if slack is None else np.full(num_classes, int(slack))
    keep = np.where(quotas > 0, np.minimum(bound, quotas + extra), 0)
    idx = pool.eligible_indices()
    keys = rng.random(idx.size)
    lists = _PerClassTopK(keep, keys)

    def offer(start: int, r: torch.Tensor, pred: torch.Tensor, dist: torch.Tensor) -> None:
        r.scatter_(1, pred[:, None], dist[:, None])  # s_ŷ = d, s_c = r_c elsewhere
        lists.add(r, start)

    weight_dist = _weight_distances(pool)
    pred, dist, top = _boundary_pass(pool, idx, chunk_rows, offer, weight_dist)
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
            # Recompute c exactly (taken points excluded) and, in the same read of the pool,
            # give the next truncated classes four times longer lists.
            later = np.flatnonzero(truncated & (np.arange(num_classes) > c))[: REFILL_CLASSES - 1]
            batch = np.concatenate([[c], later]).astype(np.int64)
            longer = np.minimum(bound[later], quotas[later] + 4 * extra[later])
            fresh = _refill(pool, idx, batch, np.concatenate([[need], longer]), keys, pred, dist, top, taken,
                            chunk_rows, weight_dist)
            for j, cls in enumerate(batch):
                ranked[int(cls)] = fresh.ranked(j)
            truncated[c] = False
            truncated[later] = longer < bound[later]
            extra[later] *= 4
            refills += 1
            free = ranked[c][~taken[ranked[c]]]
        chosen = free[:need]
        taken[chosen] = True
        picks.append(chosen)
    base.last_refills = refills  # type: ignore[attr-defined]  (diagnostics for the benchmarks)
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    if chosen.size < budget:  # tiny pools: fill from the overall smallest d(z)
        rest = np.flatnonzero(~taken)
        order = rest[np.lexsort((keys[rest], dist[rest]))]
        chosen = np.concatenate([chosen, order[: budget - chosen.size]])
    return idx[chosen].astype(np.int64)
