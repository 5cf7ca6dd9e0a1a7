"""TypiClust's engine: the picks of :func:`alkit.strategies.typiclust.typiclust_reference`, at scale.

:func:`typiclust_picks` runs these steps:
  1. :func:`clustered_rows` and :func:`cluster_count`: the rows clustered (labelled ∪ eligible,
     validation excluded) and K = min(|L| + b, ``max_clusters``, their number);
  2. :func:`run_clustering`: :func:`typiclust_kmeans` of those rows, kept in the run's cache while
     K and the rows stay the same;
  3. :func:`visiting_order`: the kept clusters (fewest labels, then largest) and the dropped ones;
  4. :func:`picks_by_visits`: one pick per visit, cyclically, each the most typical free point of
     the visited cluster, by :class:`TypicalityLists` (per-cluster neighbour lists, built on a
     cluster's first visit and widened when picks outrun them).

The lists come from :class:`alkit.strategies._exact_search.ClusterKNN`: float32 candidates, the
ranking decided in float64 where float32 cannot, so each pick is the float64 argmax the reference
takes (tested).
"""
from __future__ import annotations

import hashlib

import numpy as np

from alkit.pool import PoolState
from alkit.strategies._dense import gather_rows, with_well_scaled_features
from alkit.strategies._exact_search import ClusterKNN, kmeans_faiss

NO_POINTS = np.empty(0, np.int64)   # the members of a cluster without eligible points


def typiclust_picks(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    max_clusters: int,
    min_cluster_size: int,
    k_nn: int,
    reuse_clusters: bool,
    chunk_rows: int,
    device: str | None,
) -> np.ndarray:
    """``budget`` global indices picked by TypiClust (see :mod:`alkit.strategies.typiclust`)."""
    pool = with_well_scaled_features(pool, chunk_rows)   # extreme scales: no float32 overflow, same picks
    rows = clustered_rows(pool)
    n_clusters = cluster_count(pool, budget, max_clusters, rows.size)
    clusters = run_clustering(pool, rows, n_clusters, rng, reuse_clusters, chunk_rows, device)
    eligible = pool.eligible[rows]
    kept, dropped = visiting_order(clusters, eligible, min_cluster_size)
    lists = TypicalityLists(pool.features, rows, k_nn, first_width=first_list_width(k_nn, budget, len(kept)),
                            chunk_rows=chunk_rows, device=device)
    positions = picks_by_visits(clusters, eligible, kept, dropped, budget, k_nn, lists)
    picks = rows[np.asarray(positions, np.int64)].tolist()
    if len(picks) < budget:  # cannot happen (every eligible point is in some cluster) but stay safe
        rest = np.setdiff1d(pool.eligible_indices(), picks)
        picks.extend(rng.choice(rest, size=budget - len(picks), replace=False).tolist())
    return np.asarray(picks, np.int64)


# ------------------------------------------------------------------------------ 1. what is clustered
def clustered_rows(pool: PoolState) -> np.ndarray:
    """Global indices of the labelled (not validation) and eligible points, ascending."""
    return np.flatnonzero(pool.labeled & ~pool.held_out | pool.eligible).astype(np.int64)


def cluster_count(pool: PoolState, budget: int, max_clusters: int, n_rows: int) -> int:
    """K = min(|L| + b, ``max_clusters``, the number of clustered rows); L excludes validation points."""
    return min(int((pool.labeled & ~pool.held_out).sum()) + budget, int(max_clusters), n_rows)


# ------------------------------------------------------------------------------ 2. the clustering
#: TypiClust's clustering: the seeded faiss k-means (its docstring: fit rows, seeds, iterations).
typiclust_kmeans = kmeans_faiss


def run_clustering(pool: PoolState, rows: np.ndarray, n_clusters: int, rng: np.random.Generator,
                   reuse: bool, chunk_rows: int, device: str | None) -> np.ndarray:
    """:func:`typiclust_kmeans` ids of ``rows``; kept in the run's ``pool.cache`` and reused while K
    and the rows stay the same (the cache is bound to the features).  A reused clustering draws
    nothing from ``rng``."""
    if not reuse or pool.cache is None:
        return typiclust_kmeans(pool.features, rows, n_clusters, rng, chunk_rows=chunk_rows, device=device)
    # The last part, "faiss", named the k-means when there were two: kept so that the clusterings in
    # run checkpoints written then are still found on resume (re-clustering would draw from rng).
    key = ("typiclust", "kmeans", int(n_clusters), hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest(),
           "faiss")
    kept = pool.cache.run
    if key not in kept:
        kept[key] = typiclust_kmeans(pool.features, rows, n_clusters, rng, chunk_rows=chunk_rows, device=device)
    return kept[key]


# ------------------------------------------------------------------------------ 3. the order of visits
def visiting_order(clusters: np.ndarray, eligible: np.ndarray, min_cluster_size: int) -> tuple[list[int], list[int]]:
    """Cluster ids by (labelled count ↑, size ↓, id ↑): those larger than ``min_cluster_size``,
    visited first, and the rest, visited once every larger one is exhausted."""
    ids, sizes = np.unique(clusters, return_counts=True)
    labelled_counts = np.bincount(clusters[~eligible], minlength=ids.max() + 1)[ids]
    order = ids[np.lexsort((ids, -sizes, labelled_counts))]
    big = np.isin(order, ids[sizes > min_cluster_size])
    return order[big].tolist(), order[~big].tolist()


def first_list_width(k_nn: int, budget: int, n_kept: int) -> int:
    """Length of a cluster's first neighbour lists: ``k_nn``, the point itself, and room to skip
    twice the points picked from the cluster in the visits the budget plans for it (plus one)."""
    planned_visits = -(-budget // max(n_kept, 1)) + 1
    return k_nn + 1 + 2 * planned_visits


# ------------------------------------------------------------------------------ 4. the picks
def picks_by_visits(clusters: np.ndarray, eligible: np.ndarray, kept: list[int], dropped: list[int], budget: int,
                    k_nn: int, lists: TypicalityLists) -> list[int]:
    """Positions (into the clustered rows) of up to ``budget`` picks: visit ``cycle[i % len(cycle)]``
    (i: picks so far from this cycle), take its most typical free point; a cluster with no free point
    leaves the cycle (i unchanged); the dropped clusters form the cycle once the kept ones are gone."""
    members = eligible_members(clusters, eligible)
    free = eligible.copy()
    cycle, later = list(kept), list(dropped)
    picks: list[int] = []
    i = 0
    while len(picks) < budget:
        if not cycle:
            cycle, later, i = later, [], 0
            if not cycle:
                break
        c = cycle[i % len(cycle)]
        pts = members.get(c, NO_POINTS)
        if not free[pts].any():
            cycle.remove(c)
            continue
        best = pts[most_typical_free(c, pts, free[pts], k_nn, lists)]
        free[best] = False
        picks.append(int(best))
        i += 1
    return picks


def eligible_members(clusters: np.ndarray, eligible: np.ndarray) -> dict[int, np.ndarray]:
    """Each cluster's eligible positions, ascending: the fixed order its neighbour lists index.
    A cluster without eligible points is absent."""
    positions = np.flatnonzero(eligible)
    by_cluster = np.argsort(clusters[positions], kind="stable")   # stable: ascending within a cluster
    ids, starts = np.unique(clusters[positions][by_cluster], return_index=True)
    return dict(zip(ids.tolist(), np.split(positions[by_cluster], starts[1:])))


def most_typical_free(cluster: int, pts: np.ndarray, free: np.ndarray, k_nn: int, lists: TypicalityLists) -> int:
    """Position in ``pts`` of the free point of highest typicality, k = min(``k_nn``, free/2)
    neighbours among the free points; with k = 0 (one free point, or two) the first free one."""
    k = min(k_nn, int(free.sum()) // 2)
    if k == 0:
        return int(np.flatnonzero(free)[0])
    return lists.most_typical(cluster, pts, free, k)


class TypicalityLists:
    """Per cluster, the sorted neighbour lists of its eligible points (:class:`ClusterKNN`), built
    on its first visit ``first_width`` long, and rebuilt wider when more of its points have been
    picked than the lists can skip over."""

    def __init__(self, features, rows: np.ndarray, k_nn: int, *, first_width: int, chunk_rows: int,
                 device: str | None) -> None:
        self.features, self.rows, self.k_nn = features, rows, k_nn
        self.first_width, self.chunk_rows, self.device = first_width, chunk_rows, device
        self.by_cluster: dict[int, ClusterKNN] = {}

    def most_typical(self, cluster: int, pts: np.ndarray, free: np.ndarray, k: int) -> int:
        """Position in ``pts`` (the cluster's eligible positions) of the free point of highest
        typicality with ``k`` neighbours (:meth:`ClusterKNN.most_typical`)."""
        if cluster not in self.by_cluster:
            self.by_cluster[cluster] = self._build(pts, self.first_width)
        best = self.by_cluster[cluster].most_typical(free, k)
        while best is None:  # more removals than planned: rebuild wider
            wider = min(pts.size, 2 * self.by_cluster[cluster].width + self.k_nn)
            self.by_cluster[cluster] = self._build(pts, wider)
            best = self.by_cluster[cluster].most_typical(free, k)
        return best

    def _build(self, pts: np.ndarray, width: int) -> ClusterKNN:
        ids = self.rows[pts]
        x = gather_rows(self.features, ids, self.chunk_rows)
        # the rows are re-read for the rare float64 decisions instead of kept (the pool's size in RAM)
        return ClusterKNN(x, width, device=self.device,
                          rows=lambda pos: gather_rows(self.features, ids[pos], self.chunk_rows))
