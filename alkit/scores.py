"""Pure scoring functions over logits and features (one row per point).

Every strategy computes scores with these, then one shared, seeded routine
(:func:`take_smallest`) picks the points.  Lower score = more wanted.
"""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def least_confidence_scores(logits: np.ndarray) -> np.ndarray:
    """max_k p_k: the least confident points have the smallest value."""
    return softmax(logits).max(axis=1)


def margin_scores(logits: np.ndarray) -> np.ndarray:
    """p₍₁₎ − p₍₂₎, the gap between the two most probable classes (0 for a single class)."""
    probs = softmax(logits)
    if probs.shape[1] < 2:
        return np.zeros(probs.shape[0], probs.dtype)
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(logits: np.ndarray) -> np.ndarray:
    """Shannon entropy −Σ p log p of the predicted distribution (natural log)."""
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
