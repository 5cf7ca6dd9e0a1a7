"""BADGE (Ash et al., ICLR 2020): k-means++ (D²) seeding on last-layer gradient embeddings.

For a point with features z, probabilities p = softmax(ℓ) and predicted label ŷ = argmax ℓ, the
gradient of the cross-entropy (target ŷ) with respect to the last layer's weights is

    g = (p − e_ŷ) ⊗ z,        a C·D vector (per sample: no mean-reduction factor).

With C the centres chosen so far, BADGE picks the first centre as the eligible point with the
largest ‖g‖ (as the authors' code), then draws each next one with the k-means++ probability

    P(x) = D²(x) / Σ_y D²(y),        D²(x) = min_{c ∈ C} ‖g_x − g_c‖²,

(one uniform number per draw, inverse CDF, :func:`~alkit.strategies._dense.d2_draw`) until the
budget is spent.  ``labeled_centers=True`` follows Emam et al.'s code: the labelled points are the
first centres and every pick is drawn.  ``pool_shape``: the authors' partitioned variant, which
average-pools the (C, D) gradient first.

What alkit promises, on the whole pool (no subsampling): :func:`kmeans_pp_reference` states the
method on explicit float64 embeddings; the registered :func:`badge` is a thin wrapper over the
engine's :func:`~alkit.strategies._badge_engine.kmeans_pp_gradient`, which never forms g and gives
the reference's picks for the same seed with ``lazy=False``, and the same distribution per pick
(fewer passes) with ``lazy=True``, the default.
"""
from __future__ import annotations

import numpy as np
import torch

from alkit.checks import check_bool, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._badge_engine import (
    AUTHORS_POOL_AREA,
    AUTHORS_POOL_H,
    LAZY_MAX_TRIALS,
    BoundedD2Sampler,
    LogitsSource,
    _logits_rows,
    adaptive_pool_matrix,
    authors_pool_shape,
    gradient_factor,
    kmeans_pp_gradient,
)
from alkit.strategies._dense import DEFAULT_CACHE_BYTES, check_indices, d2_draw, d2_probabilities, sqdist64
from alkit.strategies.registry import register

__all__ = ["AUTHORS_POOL_AREA", "AUTHORS_POOL_H", "LAZY_MAX_TRIALS", "BoundedD2Sampler", "LogitsSource", "badge",
           "adaptive_pool_matrix", "authors_pool_shape", "d2_draw", "d2_probabilities", "gradient_embedding",
           "gradient_factor", "kmeans_pp_gradient", "kmeans_pp_reference", "pool_logits_source"]


def gradient_embedding(features: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Explicit g = (p − e_ŷ) ⊗ z, shape (n, C·D), float64 (reference / small pools only)."""
    r = gradient_factor(logits)
    z = np.asarray(features, np.float64)
    return (r[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)


def kmeans_pp_reference(
    features: np.ndarray,
    logits: LogitsSource,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    center_indices: np.ndarray | None = None,
    pool_shape: tuple[int, int] | None = None,
):
    """Plain k-means++ on explicit (n, C·D) float64 gradient embeddings (small pools only).

    Same rules and the same random draws as :func:`kmeans_pp_gradient`.  With ``pool_shape``
    the explicit (C, D) gradients are average-pooled with torch's ``adaptive_avg_pool2d``.
    """
    cand, cent = check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)

    def embed(rows: np.ndarray) -> np.ndarray:
        z = np.asarray(features[rows], np.float64)
        lg = _logits_rows(logits, rows, features, DEFAULT_CHUNK_ROWS)
        g = gradient_embedding(z, lg)
        if pool_shape is not None:
            g3 = torch.from_numpy(g.reshape(rows.size, lg.shape[1], z.shape[1]))
            g = torch.nn.functional.adaptive_avg_pool2d(g3, tuple(int(s) for s in pool_shape)).reshape(rows.size, -1).numpy()
        return g

    g = embed(cand)
    chosen = np.zeros(cand.size, bool)
    if cent is not None and cent.size:
        d2 = sqdist64(g, embed(cent)).min(axis=1)
        picks: list[int] = []
    else:
        first = int(rng.integers(cand.size)) if cent is not None else int(np.argmax((g * g).sum(axis=1)))
        picks = [first]
        chosen[first] = True
        d2 = sqdist64(g, g[first:first + 1])[:, 0]
    while len(picks) < k:
        j = d2_draw(d2, chosen, rng.random())
        picks.append(j)
        chosen[j] = True
        d2 = np.minimum(d2, sqdist64(g, g[j:j + 1])[:, 0])
    return cand[np.asarray(picks, np.int64)]


def pool_logits_source(pool: PoolState) -> LogitsSource:
    """The pool's logits: the precomputed array if any, else computed chunk-wise from the head."""
    pool.require_model("badge")
    if pool.logits is not None:
        return pool.logits
    return lambda rows, feats: pool.logits_of(rows, feats)


@register("badge", reference="Ash et al. 2020 (ICLR), BADGE")
def badge(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    labeled_centers: bool = False,
    pool_shape: tuple[int, int] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
    lazy: bool = True,
) -> np.ndarray:
    """BADGE: k-means++ (D²) seeding on gradient embeddings g = (p − e_ŷ) ⊗ z.

    Ash, Zhang, Krishnamurthy, Langford, Agarwal, "Deep Batch Active Learning by Diverse,
    Uncertain Gradient Lower Bounds", ICLR 2020.  g is the gradient of the cross-entropy with
    the predicted label ŷ as target w.r.t. the linear head, per sample.  As in the BADGE code,
    the first centre is the eligible point with the largest ‖g‖; each next centre is drawn with
    P(x) = D²(x) / Σ D², D²(x) = min over chosen centres ‖g_x − g_c‖² (k-means++ seeding).
    ``labeled_centers=True`` follows Emam et al.'s code instead: the labelled points are the
    initial centres and every pick is D²-drawn.  Exact on the whole pool, never forming g.
    ``lazy`` (default): D² kept as upper bounds and draws by rejection — the same distribution
    per pick at a fraction of the cost (see :func:`kmeans_pp_gradient`); ``lazy=False`` draws
    exactly as :func:`kmeans_pp_reference` for the same seed.
    """
    check_bool(labeled_centers, "labeled_centers")
    check_int(chunk_rows, "chunk_rows", low=1)
    check_int(cache_bytes, "cache_bytes", low=0)
    check_bool(lazy, "lazy")
    centers = np.flatnonzero(pool.labeled & ~pool.held_out).astype(np.int64) if labeled_centers else None
    return kmeans_pp_gradient(pool.features, pool_logits_source(pool), pool.eligible_indices(), budget, rng,
                              center_indices=centers, pool_shape=pool_shape, chunk_rows=chunk_rows,
                              cache_bytes=cache_bytes, device=device, lazy=lazy)
