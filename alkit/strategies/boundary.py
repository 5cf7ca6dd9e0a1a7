"""MASE and BASE: distances to the linear head's decision boundaries in feature space.

For a linear head ℓ_k(z) = w_kᵀz + b_k and the predicted class ŷ = argmax_k ℓ_k(z), the hyperplane
between ŷ and class c lies at

    r_c(z) = |ℓ_ŷ(z) − ℓ_c(z)| / ‖w_ŷ − w_c‖          (c ≠ ŷ)

from z, and d(z) = min_{c≠ŷ} r_c(z) is the exact distance from z to the boundary of its predicted
region (Emam et al. 2021).

* **MASE** (margin in feature space) picks the b eligible points with the smallest d(z).
* **BASE** (balanced selection) gives each class c a quota q_c = ⌊b/C⌋, plus 1 for b mod C random
  classes, scores every eligible point by s_c(z) = d(z) if ŷ = c else r_c(z), and lets classes, in
  index order as in the authors' code, take the q_c smallest s_c not yet taken.

Only the logits and the C×C matrix ‖w_i − w_j‖ are needed — never the (N × C × D) perturbation
tensor the authors' code builds.  :func:`mase_reference` and :func:`base_reference` state the
method in a few lines (an N × C float64 matrix: small pools); the registered functions run the
streaming engine of :mod:`alkit.strategies._boundary_engine`, held to these references by the tests.
Ties are broken by the seeded keys of :func:`alkit.scores.take_smallest` (MASE) or drawn per point
(BASE), in the same order in the reference and the engine.
"""
from __future__ import annotations

import numpy as np

from alkit.checks import check_int
from alkit.pool import PoolState
from alkit.scores import boundary_distances, take_smallest
from alkit.strategies import _boundary_engine as engine
from alkit.strategies.registry import register
from alkit.strategies.uncertainty import class_quotas

__all__ = ["mase", "base", "mase_reference", "base_reference", "boundary_radii", "base_class_scores",
           "boundary_distances"]


def boundary_radii(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ŷ, r) in float64: r[i, c] = |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖ for c ≠ ŷ, and +inf at c = ŷ."""
    z, w, b = (np.asarray(a, np.float64) for a in (features, weight, bias))
    logits = z @ w.T + b
    pred = logits.argmax(axis=1)
    rows = np.arange(z.shape[0])
    gap = np.abs(logits[rows, pred][:, None] - logits)
    norm = np.linalg.norm(w[pred][:, None, :] - w[None, :, :], axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(norm > 0, gap / norm, np.inf)
    r[rows, pred] = np.inf
    return pred, r


def base_class_scores(r: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """BASE's per-class score s_c(z): d(z) if ŷ = c, else r_c(z) — shape (n, C)."""
    scores = r.copy()
    rows = np.arange(r.shape[0])
    scores[rows, pred] = r.min(axis=1)
    return scores


def mase_reference(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Plain MASE: d(z) = min_c r_c(z) from the explicit radii; the ``budget`` smallest."""
    idx = pool.eligible_indices()
    _, r = boundary_radii(pool.features_of(idx), pool.weight, pool.bias)
    return idx[take_smallest(r.min(axis=1), budget, rng)]


def base_reference(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Plain BASE: the quotas, then one class at a time, the q_c smallest s_c(z) not yet taken
    (ties: the per-point random keys)."""
    quotas = class_quotas(budget, pool.num_classes, rng)
    idx = pool.eligible_indices()
    keys = rng.random(idx.size)
    pred, r = boundary_radii(pool.features_of(idx), pool.weight, pool.bias)
    scores = base_class_scores(r, pred)
    taken = np.zeros(idx.size, bool)
    picks = []
    for c in range(pool.num_classes):
        order = np.lexsort((keys, np.where(taken, np.inf, scores[:, c]), taken))
        chosen = order[: quotas[c]]
        taken[chosen] = True
        picks.append(chosen)
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    if chosen.size < budget:   # tiny pools: the overall smallest d(z) among untaken points
        rest = np.flatnonzero(~taken)
        d = r.min(axis=1)
        chosen = np.concatenate([chosen, rest[np.lexsort((keys[rest], d[rest]))][: budget - chosen.size]])
    return idx[chosen].astype(np.int64)


@register("mase", reference="Emam et al. 2021 (MASE, margin in feature space)", checks_inputs=True)
def mase(pool: PoolState, budget: int, rng: np.random.Generator, chunk_rows: int | None = None) -> np.ndarray:
    """MASE: the ``budget`` points with the smallest d(z) = min_{c≠ŷ} |ℓ_ŷ − ℓ_c| / ‖w_ŷ − w_c‖.

    Streams the pool in chunks of ``chunk_rows`` (default: from C and D); the same picks as
    :func:`mase_reference` (:func:`alkit.strategies._boundary_engine.mase_picks`)."""
    check_int(chunk_rows, "chunk_rows", low=1, none=True)
    pool.require_head("mase")
    return engine.mase_picks(pool, budget, rng, chunk_rows)


@register("base", reference="Emam et al. 2021 (BASE, balanced selection)", checks_inputs=True)
def base(pool: PoolState, budget: int, rng: np.random.Generator, chunk_rows: int | None = None,
         slack: int | None = None) -> np.ndarray:
    """BASE: per class c, the ⌊b/C⌋ points nearest the c-vs-ŷ boundary (balanced selection).

    Quota q_c = ⌊b/C⌋ (+1 for b mod C random classes); class c takes the q_c smallest
    s_c(z) = d(z) if ŷ = c else r_c(z) not yet taken, classes in index order.  Exact and streaming
    (:func:`alkit.strategies._boundary_engine.base_picks`; ``slack``: candidates kept per class
    beyond its quota, any value gives the same picks as :func:`base_reference`)."""
    check_int(chunk_rows, "chunk_rows", low=1, none=True)
    check_int(slack, "slack", low=0, none=True)
    pool.require_head("base")
    return engine.base_picks(pool, budget, rng, chunk_rows, slack)
