"""Pure scoring functions over logits and features (one row per point).

Every strategy computes scores with these, then one shared, seeded routine
(:func:`take_smallest`) picks the points.  Lower score = more wanted.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch

from alkit.checks import ParameterError
from alkit.rows import as_tensor as _as_tensor
from alkit.rows import read_rows


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _torch_view(logits: np.ndarray):
    """A torch view of float32 logits (the fast path), or None for other dtypes (numpy path).

    float32 chunks from the streaming pass are scored with torch's vectorised, multi-threaded
    softmax (several times faster than numpy here); float64 input keeps the numpy formulas.
    """
    if isinstance(logits, np.ndarray) and logits.dtype == np.float32 and logits.ndim == 2 and logits.shape[1] >= 2:
        return _as_tensor(logits)
    return None


def least_confidence_scores(logits: np.ndarray) -> np.ndarray:
    """max_k p_k: the least confident points have the smallest value."""
    t = _torch_view(logits)
    if t is not None:
        with torch.no_grad():
            return torch.softmax(t, dim=1).amax(dim=1).numpy()
    return softmax(logits).max(axis=1)


def margin_scores(logits: np.ndarray) -> np.ndarray:
    """p₍₁₎ − p₍₂₎, the gap between the two most probable classes (0 for a single class)."""
    t = _torch_view(logits)
    if t is not None:
        with torch.no_grad():
            # The largest p, then the largest once it is masked: the two values top-2 gives (a tie
            # gives p twice, a gap of 0), in two cheap passes instead of a top-k.
            probs = torch.softmax(t, dim=1)
            first, where = probs.max(dim=1)
            probs.scatter_(1, where[:, None], -1.0)
            return (first - probs.amax(dim=1)).numpy()
    probs = softmax(logits)
    if probs.shape[1] < 2:
        return np.zeros(probs.shape[0], probs.dtype)
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy −Σ p log p of the predicted distribution (natural log)."""
    t = _torch_view(logits)
    if t is not None:
        with torch.no_grad():
            log_probs = torch.log_softmax(t, dim=1)
            return -(log_probs.exp().mul_(log_probs)).sum(dim=1).numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    return -(np.exp(log_probs) * log_probs).sum(axis=1)


def class_weight_distances(weight: np.ndarray) -> np.ndarray:
    """(C, C) matrix of ‖w_i − w_j‖, from Gram entries (C² memory, no C²·D tensor)."""
    w = np.asarray(weight, dtype=np.float64)
    sq = (w * w).sum(axis=1)
    gram = w @ w.T
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    np.fill_diagonal(dist2, 0.0)
    return np.sqrt(dist2).astype(np.float32)


def boundary_distances(logits: np.ndarray, weight_dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance in feature space from each point to every c-vs-ŷ decision hyperplane.

    For a linear head ℓ_k = w_kᵀz + b_k and predicted class ŷ, the hyperplane ℓ_ŷ = ℓ_c lies at
    r_c(z) = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖ (Emam et al. 2021, MASE).  Returns ``(r, pred)`` where
    ``r`` is (n, C) float32 with r_ŷ = inf, and also inf where w_ŷ = w_c (no hyperplane:
    the two classes can never be told apart, as in the authors' code where 0/0 becomes inf).
    """
    pred = logits.argmax(axis=1)
    rows = np.arange(logits.shape[0])
    gap = np.abs(logits[rows, pred][:, None] - logits)
    denom = weight_dist[pred]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = gap / denom
    r[~(denom > 0)] = np.inf
    r[rows, pred] = np.inf
    return r.astype(np.float32, copy=False), pred


def take_smallest(scores: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the ``k`` smallest scores; exact ties broken uniformly at random by ``rng``.

    The random key is drawn for every point (so the draw does not depend on the scores), then
    only the candidates at or below the k-th value are sorted: O(n) plus O(k log k).
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    k = min(int(k), n)
    tiebreak = rng.random(n)
    if k <= 0:
        return np.empty(0, np.int64)
    if k < n:
        kth = np.partition(scores, k - 1)[k - 1]
        candidates = np.flatnonzero(scores <= kth) if not np.isnan(kth) else np.arange(n)
    else:
        candidates = np.arange(n)
    order = np.lexsort((tiebreak[candidates], scores[candidates]))
    return candidates[order[:k]].astype(np.int64)


# --------------------------------------------------------------------------- streaming
# The score-based strategies make one pass over the pool: read a chunk of features (float16
# memory maps are converted chunk by chunk), compute its logits with one GEMM, score them, drop
# them.  These helpers do that pass with torch (MKL GEMM and vectorised float16 conversion,
# both several times faster than numpy here) and keep every (chunk × C) buffer preallocated.

#: Bytes of one (chunk × C) float32 buffer: a few of them stay in the last-level cache.
_CHUNK_TARGET_BYTES = 16 * 1024 * 1024

#: Rows of a chunk's logits scored at a time (softmax, top-k, boundary distances): a (1024 × 1000)
#: float32 block is 4 MB, so the several passes of a score read it from cache (2-3× faster than
#: over a whole chunk at C = 1000).  Every score is a function of its own row: same numbers.
SCORE_BLOCK_ROWS = 1024


@dataclass
class LogitsTime:
    """Seconds the calls made under :func:`logits_timer` spent producing logits from features
    (reading the rows, converting them to float32, the GEMM), and over how many chunks."""

    seconds: float = 0.0
    chunks: int = 0


_ACTIVE_TIMER: ContextVar[LogitsTime | None] = ContextVar("alkit_logits_timer", default=None)


@contextmanager
def logits_timer():
    """``with logits_timer() as t: select(pool, "margin", ...)``: afterwards ``t.seconds`` is the
    time that call spent in its logits pass (the score strategies' floor), so that the cost of
    scoring is ``call − t.seconds``, measured inside one call (benchmarks/bench_score_floor.py)."""
    timer = LogitsTime()
    token = _ACTIVE_TIMER.set(timer)
    try:
        yield timer
    finally:
        _ACTIVE_TIMER.reset(token)


def count_logits_time(started: float) -> None:
    """Add the time since ``started`` (a ``time.perf_counter()``) to the active :func:`logits_timer`."""
    timer = _ACTIVE_TIMER.get()
    if timer is not None:
        timer.seconds += time.perf_counter() - started
        timer.chunks += 1


def auto_chunk_rows(num_classes: int, dim: int = 0) -> int:
    """Rows per chunk so that a (rows × C) float32 block is about 16 MB (256 to 16,384 rows)."""
    rows = _CHUNK_TARGET_BYTES // (4 * max(int(num_classes), int(dim) // 2, 1))
    return int(min(16_384, max(256, 1 << (int(rows).bit_length() - 1))))


def iter_logits(pool, indices: np.ndarray, chunk_rows: int | None = None, with_features: bool = False):
    """Yield ``(start, indices_chunk, logits)`` over ``indices`` (or ``(..., logits, features)``).

    ``logits`` (a float32 torch tensor, rows × C) and ``features`` live in buffers that are
    *reused* by the next chunk: copy what must outlive the iteration.  Uses the pool's precomputed logits when it
    has them, else ℓ = z Wᵀ + b with ``torch.addmm`` in float32.
    """
    if chunk_rows is None:
        chunk_rows = auto_chunk_rows(pool.num_classes, pool.dim)
    if pool.logits is None and pool.weight is None:
        raise ParameterError("the pool has neither logits nor a linear head (weight, bias)", param="weight")
    weight_t = bias_t = None
    if pool.logits is None:
        weight_t = torch.from_numpy(np.ascontiguousarray(pool.weight, np.float32))
        bias_t = torch.from_numpy(np.ascontiguousarray(pool.bias, np.float32))
    rows = min(chunk_rows, max(indices.size, 1))
    buffer = torch.empty((rows, pool.num_classes), dtype=torch.float32)
    feature_buffer = torch.empty(rows * pool.dim, dtype=torch.float32)
    # No torch.no_grad here: none of these tensors needs a gradient, and a generator left suspended
    # inside one (a consumer stopped by an error) would switch autograd off for the whole process
    # whenever it is collected.
    for start in range(0, indices.size, chunk_rows):
        idx = indices[start:start + chunk_rows]
        feats = None
        out = buffer[: idx.size]
        if pool.logits is not None:
            out.copy_(read_rows(pool.logits, idx))
            if with_features:
                feats = read_rows(pool.features, idx, feature_buffer)
        else:
            started = time.perf_counter()
            feats = read_rows(pool.features, idx, feature_buffer)
            torch.addmm(bias_t, feats, weight_t.T, out=out)
            count_logits_time(started)
        yield (start, idx, out, feats) if with_features else (start, idx, out)


def boundary_distances_(logits, weight_dist, zero_offdiagonal: bool | None = None, scratch=None):
    """In-place torch version of :func:`boundary_distances` on a (n × C) float32 tensor.

    Overwrites ``logits`` with r (r_ŷ = inf) and returns ``(pred, d)`` with d = min_c r_c.
    Same float32 arithmetic as the numpy version (|ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖), so the values
    agree bit for bit given the same logits.  ``zero_offdiagonal``: whether some ‖w_i − w_j‖,
    i ≠ j, is 0 (then 0/0 entries are set to inf); computed when None.  ``scratch``: an
    optional float32 tensor with at least n × C elements, reused for ‖w_ŷ − w_c‖ rows.
    """
    n = logits.shape[0]
    if zero_offdiagonal is None:
        zero_offdiagonal = bool((weight_dist == 0).sum() > weight_dist.shape[0])
    pred = logits.argmax(dim=1)  # first maximum, as numpy (and faster than max(dim) here)
    top = logits.gather(1, pred[:, None])[:, 0]
    torch.sub(top[:, None], logits, out=logits)  # ℓ_ŷ − ℓ_c ≥ 0 exactly (ℓ_ŷ is the maximum)
    if scratch is not None:
        denom = scratch.view(-1)[: logits.numel()].view(logits.shape)
        torch.index_select(weight_dist, 0, pred, out=denom)
    else:
        denom = weight_dist.index_select(0, pred)
    logits.div_(denom)
    if zero_offdiagonal:
        logits.masked_fill_(denom == 0, float("inf"))
    del denom
    logits.scatter_(1, pred[:, None], float("inf"))
    d = logits.amin(dim=1) if n else torch.empty(0)
    return pred, d, top
