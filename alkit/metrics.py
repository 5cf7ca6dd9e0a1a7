"""Test metrics of a classifier and class-imbalance metrics of a labelled set or batch."""
from __future__ import annotations

import numpy as np

from alkit.checks import ParameterError


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """top-1, top-5, balanced accuracy (mean per-class recall) and per-class accuracy.

    Classes absent from ``labels`` get NaN per-class accuracy and are left out of the balance.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ParameterError(f"logits must be (n, C) with n = len(labels) = {labels.shape[0]}, got {logits.shape}",
                             param="logits")
    pred = logits.argmax(axis=1)
    correct = pred == labels
    k = min(5, logits.shape[1])
    topk = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    in_top5 = (topk == labels[:, None]).any(axis=1)
    support = np.bincount(labels, minlength=num_classes).astype(np.float64)
    hits = np.bincount(labels, weights=correct, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, hits / support, np.nan)
    return {
        "top1": float(correct.mean()),
        "top5": float(in_top5.mean()),
        "balanced_accuracy": float(np.nanmean(per_class)),
        "per_class_accuracy": per_class,
    }


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, np.int64), minlength=num_classes)


def normalized_entropy(counts: np.ndarray) -> float:
    """H(counts/Σ) / log C: 1 for perfectly balanced, 0 when one class has everything."""
    counts = np.asarray(counts, np.float64)
    total = counts.sum()
    if total == 0 or counts.size < 2:
        return float("nan") if total == 0 else 1.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(counts.size))


def gini_coefficient(counts: np.ndarray) -> float:
    """Gini of the class counts: 0 balanced, → 1 when one class holds everything."""
    x = np.sort(np.asarray(counts, np.float64))
    n, total = x.size, x.sum()
    if total == 0:
        return float("nan")
    ranks = np.arange(1, n + 1)
    return float((2.0 * (ranks * x).sum()) / (n * total) - (n + 1.0) / n)


def kl_divergence(counts: np.ndarray, reference: np.ndarray, eps: float = 1e-12) -> float:
    """KL(p ‖ q) of the set's class distribution p from the reference distribution q (nats)."""
    p = np.asarray(counts, np.float64)
    q = np.asarray(reference, np.float64)
    if p.sum() == 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / np.maximum(q[mask], eps))).sum())


def imbalance_metrics(labels: np.ndarray, num_classes: int, pool_distribution: np.ndarray | None = None) -> dict:
    """Imbalance of a set of labels: counts, max/min ratio, normalised entropy, Gini,
    classes with no label, distinct classes, KL from the pool's class distribution.

    ``max_min_ratio`` is inf when some class has no label (its count is 0).
    """
    counts = class_counts(labels, num_classes)
    nonzero = counts[counts > 0]
    out = {
        "counts": counts,
        "max_min_ratio": float(counts.max() / counts.min()) if counts.min() > 0 else float("inf"),
        "normalized_entropy": normalized_entropy(counts),
        "gini": gini_coefficient(counts),
        "classes_without_label": int((counts == 0).sum()),
        "distinct_classes": int(nonzero.size),
    }
    if pool_distribution is not None:
        out["kl_from_pool"] = kl_divergence(counts, pool_distribution)
    return out
