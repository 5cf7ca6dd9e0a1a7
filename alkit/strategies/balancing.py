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

:func:`balancing_reference` states the method in float64, sharing no code with the engine (the
tests hold the engine to it); :func:`balancing` is the registered strategy, a thin wrapper over the engine's
:func:`~alkit.strategies._balancing_engine.balancing_greedy` (incremental class sums and distances
on the whole pool, near ties re-ranked with the reference's scores, so the picks are the reference's).
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np

from alkit.checks import check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._balancing_engine import BalancingStats, balancing_greedy
from alkit.strategies._dense import DEFAULT_CACHE_BYTES, TIE_RTOL, sqdist64
from alkit.strategies.registry import register

__all__ = ["TIE_RTOL", "BalancingStats", "Predictor", "balancing", "balancing_greedy", "balancing_mode",
           "balancing_reference"]

#: Predicted class of rows: an (N,) int array, or ``f(global_indices) -> classes``; None: unknown.
Predictor = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]


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
    cand = np.asarray(candidate_indices, np.int64)
    x = np.asarray(features[cand], np.float64)
    classes = np.asarray(labeled_classes, np.int64)
    counts = np.bincount(classes, minlength=num_classes)
    sums = np.zeros((num_classes, features.shape[1]))  # per class Σ of its rows, added in labelled order
    np.add.at(sums, classes, np.asarray(features[np.asarray(labeled_indices, np.int64)], np.float64))
    avail = np.ones(cand.size, bool)
    picks = []
    k = min(int(k), cand.size)
    for step in range(k):
        free = np.flatnonzero(avail)
        if balancing_mode(counts, k - step):
            j = int(free[np.argmin(_balancing_scores(x[free], sums, counts))])
        else:
            j = int(free[rng.integers(free.size)])
        avail[j] = False
        picks.append(j)
        c = _predicted_class(predicted, int(cand[j]))
        if c >= 0:  # a pick counts under the model's prediction, never its true label
            counts[c] += 1
            sums[c] += x[j]
    return cand[np.asarray(picks, np.int64)]


def balancing_mode(counts: np.ndarray, remaining: int) -> bool:
    """True when R ≤ |m|·(avg_{c∈M} n_c − avg_{c∈m} n_c): a balancing step (no majority class: random)."""
    major = counts > counts.mean()
    if not major.any():
        return False
    minor = ~major
    return bool(remaining <= minor.sum() * (counts[major].mean() - counts[minor].mean()))


def _balancing_scores(x: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """‖x − μ_r‖² / min_{c∈M} ‖x − μ_c‖² per row, float64 (numerator 1 if r has no point; ∞ where den = 0)."""
    rarest = int(np.argmin(counts))
    major = np.flatnonzero(counts > counts.mean())
    num = np.ones(len(x)) if counts[rarest] == 0 else sqdist64(x, sums[rarest:rarest + 1] / counts[rarest])[:, 0]
    den = sqdist64(x, sums[major] / counts[major, None]).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.inf)


def _predicted_class(predicted: Predictor, row: int) -> int:
    """The class a picked row counts under: the model's prediction; -1 (not counted) without a model."""
    if predicted is None:
        return -1
    if callable(predicted):
        return int(np.asarray(predicted(np.array([row], np.int64)))[0])
    return int(predicted[row])


@register("balancing", reference="Aggarwal et al. 2020 (WACV); Emam et al. 2021 (Balancing)")
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
    centre; no true-label leak.  The incremental fast path: :mod:`alkit.strategies._balancing_engine`.
    """
    check_int(chunk_rows, "chunk_rows", low=1)
    check_int(cache_bytes, "cache_bytes", low=0)
    centres = np.flatnonzero(pool.labeled & ~pool.held_out).astype(np.int64)
    predicted = None
    if pool.has_model:
        predicted = lambda rows: pool.logits_of(rows).argmax(axis=1)  # noqa: E731
    return balancing_greedy(pool.features, centres, pool.labels[centres], pool.eligible_indices(), pool.num_classes,
                            budget, rng, predicted, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device)
