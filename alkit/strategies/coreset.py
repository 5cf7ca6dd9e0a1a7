"""Coreset (Sener & Savarese, ICLR 2018): k-center greedy on frozen-feature distances.

With C the centres — at first the labelled points that are not held out for validation — and U
the eligible candidates, each step adds the candidate farthest from its nearest centre,

    u = argmax_{x ∈ U ∖ C} min_{c ∈ C} ‖z_x − z_c‖²,        C ← C ∪ {u},

until the budget is spent: the greedy 2-approximation of the k-center problem (choose b points
so that no point of the pool lies far from a labelled or chosen one).  With nothing labelled the
first centre is a candidate drawn uniformly with the selection rng (the authors start from the
1-center, which needs the N × N matrix).

What alkit promises, on the whole pool (no subsampling):

* **Ties**: an exact tie goes to the candidate that comes first in the eligible order
  (``np.argmax`` over float64 distances in :func:`k_center_greedy_reference`).
* **Exact picks**: :func:`coreset` gives the picks of :func:`k_center_greedy_reference`, which
  states the method on the full float64 pairwise matrix.  The engine it runs
  (:mod:`alkit.strategies._coreset_engine`) works in float32 on mean-centred rows, keeps only
  upper bounds of the distances and refreshes them lazily, but a candidate counts only once it
  has met every centre, and every candidate within 2·tol of the float32 maximum (tol =
  ``TIE_RTOL`` · (max ‖x‖² + max ‖c‖²), the float32 error assumed for one distance) is
  re-ranked in float64 with the reference's own distance function (``sqdist64``).  With more
  than ``MAX_REFINE`` (1,024) candidates in that band, the float32 maximum stands.
* **Independent of how it runs**: chunk sizes, the row cache (float32, float16 memory map or
  streamed), the device, how many labelled centres are compared up front, and whether a round
  starts from the bounds the previous round of the run left (``pool.cache.run``) do not change
  the picks.

:func:`k_center_greedy_reference` is the specification (and the tests hold the engine to it);
:func:`coreset` is the registered strategy, a thin wrapper over the engine's
:func:`~alkit.strategies._coreset_engine.k_center_greedy`.
"""
from __future__ import annotations

import numpy as np

from alkit.checks import check_bool, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._coreset_engine import k_center_greedy, merge_nearest
from alkit.strategies._dense import DEFAULT_CACHE_BYTES, check_indices, sqdist64, with_well_scaled_features
from alkit.strategies.registry import register

__all__ = ["coreset", "coreset_centers", "k_center_greedy_reference", "k_center_greedy", "merge_nearest"]


def k_center_greedy_reference(
    features: np.ndarray,
    center_indices: np.ndarray,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Plain k-center greedy on the full float64 pairwise matrix (the specification of
    :func:`k_center_greedy`; O((|cand| + |centres|)·|cand|) memory — small pools only)."""
    cand, cent = check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    x = np.asarray(features[cand], np.float64)
    pairwise = sqdist64(x, x)
    if cent.size:
        mind = sqdist64(x, np.asarray(features[cent], np.float64)).min(axis=1)
    else:
        mind = np.full(cand.size, np.inf)
    picks: list[int] = []
    if cent.size == 0:
        first = int(rng.integers(cand.size))
        picks.append(first)
        mind = np.minimum(mind, pairwise[:, first])
        mind[first] = -np.inf
    while len(picks) < k:
        j = int(np.argmax(mind))   # the farthest from its nearest centre; the first on a tie
        picks.append(j)
        mind = np.minimum(mind, pairwise[:, j])
        mind[picks] = -np.inf
    return cand[np.asarray(picks, np.int64)]


def coreset_centers(pool: PoolState) -> np.ndarray:
    """Labelled points that are not held out for validation (the authors' coreset set)."""
    return np.flatnonzero(pool.labeled & ~pool.held_out).astype(np.int64)


@register("coreset", reference="Sener & Savarese 2018 (ICLR), k-center greedy")
def coreset(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
    reuse_distances: bool = True,
) -> np.ndarray:
    """Coreset: k-center greedy — repeatedly take the eligible point farthest from all labelled/chosen points.

    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
    ICLR 2018 (greedy 2-approximation of the k-center problem).  With S the labelled set plus the
    points chosen so far, each step picks u = argmax_{x eligible} min_{s∈S} ‖z_x − z_s‖₂ over
    frozen features z.  With no labelled point, the first centre is a random eligible point.
    Exact on the whole pool: the picks of :func:`k_center_greedy_reference`, computed by
    :func:`k_center_greedy` (the engine, which also reports its set-up / pick split and
    counters to a ``report=`` callback).

    ``reuse_distances``: within one run (``pool.cache`` set by the loop), a round starts from the
    distances the previous round left (``carry`` of :func:`k_center_greedy`, kept in the run's
    ``cache.run``) and compares the candidates with the newly labelled points only; same picks,
    without one pass over every candidate × labelled pair per round.
    """
    check_int(chunk_rows, "chunk_rows", low=1)
    check_int(cache_bytes, "cache_bytes", low=0)
    check_bool(reuse_distances, "reuse_distances")
    pool = with_well_scaled_features(pool, chunk_rows)   # extreme scales: no float32 overflow, same picks
    carry = None
    if reuse_distances and pool.cache is not None:
        carry = pool.cache.run.setdefault(("coreset", "carry"), {})
    return k_center_greedy(pool.features, coreset_centers(pool), pool.eligible_indices(), budget, rng,
                           chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device, carry=carry)
