"""TypiClust (Hacohen, Dekel, Weinshall, ICML 2022): the most typical point of uncovered clusters.

Beyond the paper reproduced here (Emam et al. 2021); a strong low-budget method on
self-supervised features.  Following the authors' code (``deep-al/pycls/al/typiclust.py``):
  * labelled ∪ eligible points (validation points excluded) are clustered by k-means into
    K = min(|L| + b, ``max_clusters`` = 500) clusters;
  * clusters of ≤ ``min_cluster_size`` = 5 points are dropped; the rest are sorted by number
    of labelled points (ascending), then size (descending), and visited cyclically;
  * each visit takes the available (eligible, not yet chosen) point of the cluster with the
    highest typicality(x) = 1 / (mean_{y ∈ kNN(x)} ‖x − y‖ + 1e-5), the k = min(20, n/2)
    nearest available points of the same cluster (n = their number).

Differences from the authors' code: the paper's formula uses Euclidean distances, their code
the squared ones returned by faiss ``IndexFlatL2`` (we follow the paper); k-means is seeded
(k-means++ seeds and the at most 256·K fit points drawn from the selection ``rng``, as faiss fits on
256·K points), its Lloyd iterations run in faiss instead of sklearn's unseeded KMeans /
MiniBatchKMeans, then every point is assigned to its nearest centroid; an exhausted cluster is
skipped (their loop would fail) and, once every kept cluster is exhausted, dropped clusters are
used; ties in typicality go to the lowest position.  Within one active-learning run the clustering
is computed once and reused while K and the clustered rows stay the same (``reuse_clusters``; they
always do at this package's budgets: K reaches 500 in the first round and the clustered rows are
the pool minus the fixed validation split), where the authors' code re-clusters the same rows every
round (DEVIATIONS.md).

:func:`typiclust_reference` states the selection in a few dense lines, given the clusters;
:func:`typiclust` runs the engine (:mod:`alkit.strategies._typiclust_engine`), which picks the same
points given the same clusters (tested): per-cluster neighbour lists from one float32 symmetric
product per cluster, the ranking decided in float64 where float32 cannot
(:class:`alkit.strategies._exact_search.ClusterKNN`).
Cost: k-means O(iters·256K·K·D + N·K·D), once per run; neighbours O(s²·D/2) per visited cluster of
size s, computed once per cluster, then each visit costs O(s·(k + visits)) from sorted neighbour lists.
Memory: the k-means fit rows (256·K·D float32, 1 GB at K = 500, D = 2048) and, for every visited
cluster, its lists (s × (k + 1 + 2·visits) float32 distances and int32 positions: 0.6 GB over
1.28 M points); a cluster's rows are read again for the float64 decisions rather than kept.
"""
from __future__ import annotations

import numpy as np

from alkit.checks import check_bool, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._dense import sqdist64
from alkit.strategies._typiclust_engine import typiclust_picks
from alkit.strategies.registry import register

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20


def typicality(features: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other rows + 1e-5), float64 (:func:`sqdist64`), dense."""
    d = np.sqrt(sqdist64(features, features))
    np.fill_diagonal(d, np.inf)
    k = max(1, min(k, d.shape[0] - 1))
    return 1.0 / (np.sort(d, axis=1)[:, :k].mean(axis=1) + 1e-5)


def typiclust_reference(
    features: np.ndarray,
    clusters: np.ndarray,
    eligible: np.ndarray,
    budget: int,
    *,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    k_nn: int = K_NN,
) -> np.ndarray:
    """TypiClust's picks by definition, given the clustering: positions into ``features``.

    ``features``: the clustered rows (labelled non-validation and eligible points); ``clusters``:
    their cluster ids (alkit's: :func:`~alkit.strategies._typiclust_engine.typiclust_kmeans` into
    K = min(|L| + b, 500) clusters); ``eligible``: the rows that may be picked, the rest labelled.
    Dense, for small sets: :func:`typiclust` picks the same points given the same clusters.
    """
    ids, sizes = np.unique(clusters, return_counts=True)
    labelled = np.array([np.sum((clusters == c) & ~eligible) for c in ids])
    order = ids[np.lexsort((ids, -sizes, labelled))].tolist()   # fewest labels, then largest, then lowest id
    big = set(ids[sizes > min_cluster_size].tolist())
    free, picks = np.array(eligible, bool), []
    # The small clusters are visited only once every larger one is exhausted.
    for cycle in ([c for c in order if c in big], [c for c in order if c not in big]):
        i = 0   # picks from this cycle: the authors' visit is cycle[i % len(cycle)]
        while cycle and len(picks) < budget:
            c = cycle[i % len(cycle)]
            pts = np.flatnonzero(free & (clusters == c))
            if pts.size == 0:   # exhausted: it leaves the cycle, i stays
                cycle.remove(c)
                continue
            k = min(k_nn, pts.size // 2)   # neighbours among the free points of the cluster
            best = pts[np.argmax(typicality(features[pts], k))] if k else pts[0]
            free[best] = False
            picks.append(best)
            i += 1
    return np.asarray(picks, np.int64)


@register("typiclust", reference="Hacohen, Dekel, Weinshall 2022 (ICML), TypiClust")
def typiclust(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    max_clusters: int = MAX_CLUSTERS,
    min_cluster_size: int = MIN_CLUSTER_SIZE,
    k_nn: int = K_NN,
    reuse_clusters: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
) -> np.ndarray:
    """TypiClust: k-means into min(|L|+b, 500) clusters; from the clusters with fewest labels, largest first, take the most typical point.

    Hacohen, Dekel, Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and
    Low Budgets", ICML 2022.  typicality(x) = (1/k Σ_{y∈kNN(x)} ‖z_x − z_y‖)⁻¹, k = min(20, n/2),
    the neighbours being the available points of x's cluster; clusters sorted by (labelled
    count ↑, size ↓), visited cyclically, one pick per visit.  See the module docstring.

    ``reuse_clusters``: within one run (``pool.cache`` set by the loop), later rounds reuse the
    clustering of the first round that had the same K and the same clustered rows; False
    re-clusters every round (the authors' code; their unseeded k-means then differs between rounds
    only by its random start).
    """
    check_int(max_clusters, "max_clusters", low=1)
    check_int(min_cluster_size, "min_cluster_size", low=1)
    check_int(k_nn, "k_nn", low=1)
    check_bool(reuse_clusters, "reuse_clusters")
    check_int(chunk_rows, "chunk_rows", low=1)
    return typiclust_picks(pool, budget, rng, max_clusters=max_clusters, min_cluster_size=min_cluster_size, k_nn=k_nn,
                           reuse_clusters=reuse_clusters, chunk_rows=chunk_rows, device=device)
