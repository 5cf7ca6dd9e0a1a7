"""Margin-Clustering (Citovsky et al., NeurIPS 2021, "Cluster-Margin"), as used by Emam et al.

Cluster-Margin: take the k_m lowest-margin eligible points as candidates, cluster them with
hierarchical agglomerative clustering (average linkage, Euclidean), sort the clusters by size
ascending and visit them round-robin, taking one point per visit, until b points are chosen.

Choices here (defaults follow Citovsky et al.; keywords switch to Emam et al.'s code):
  * candidates k_m = ``candidate_factor`` · b lowest margins (Citovsky's k_m ≈ 10·b); with
    ``candidate_factor=None`` every eligible point is a candidate (Emam et al.'s code clusters
    all unlabelled points);
  * ``n_clusters`` clusters (default b: every cluster gives at most one point per visit, so the
    b picks spread over the candidates; Emam et al. use 20);
  * ``within="random"`` (Citovsky: a random point of the cluster per visit) or ``"margin"``
    (Emam et al.: the lowest-margin point of the cluster);
  * average linkage needs the condensed distance matrix (m²/2 float64, 400 MB at m = 10 000):
    at most ``max_cluster_points`` candidates (a random subset, rng) are clustered and the
    rest join the cluster with the nearest mean.  Citovsky cluster the pool once, before the
    first round; Emam et al. use sklearn's default Ward linkage: both listed as deviations.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from alkit.checks import ParameterError, check_float, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.scores import margin_scores, take_smallest
from alkit.strategies._dense import gather_rows
from alkit.strategies.registry import register
from alkit.strategies.uncertainty import score_eligible

MAX_CLUSTER_POINTS = 10_000


def condensed_sqrt_distances(x: np.ndarray, chunk_rows: int = 2048) -> np.ndarray:
    """Condensed Euclidean distance vector (as ``scipy.spatial.distance.pdist``) via float64 GEMM blocks.

    d(i, j) = sqrt(max(0, (‖x_i‖² + ‖x_j‖²) − 2·(x_i·x_j))).  The GEMM is one full-width call per
    block of ``chunk_rows`` rows: BLAS results may depend on the operands' shapes and offsets, so
    this call is kept as it was (the numbers, hence the linkage and the picks, must not move);
    only each row's j > i part is then combined, written straight into the output.
    """
    x = np.asarray(x, np.float64)
    m = x.shape[0]
    sq = (x * x).sum(1)
    out = np.empty(m * (m - 1) // 2, np.float64)
    pos = 0
    for start in range(0, m, chunk_rows):
        stop = min(start + chunk_rows, m)
        g = x[start:stop] @ x.T
        for i in range(start, min(stop, m - 1)):
            seg = out[pos:pos + m - 1 - i]
            row = g[i - start, i + 1:]
            row *= 2.0  # exact
            np.add(sq[i], sq[i + 1:], out=seg)
            np.subtract(seg, row, out=seg)
            pos += seg.size
    np.maximum(out, 0.0, out=out)
    np.sqrt(out, out=out)
    return out


def average_linkage_clusters(
    x: np.ndarray, n_clusters: int, rng: np.random.Generator, max_points: int = MAX_CLUSTER_POINTS
) -> np.ndarray:
    """Cluster ids in [0, n_clusters') of the rows of ``x`` (HAC, average linkage, Euclidean).

    At most ``max_points`` rows (a random subset drawn with ``rng``) are clustered; the others
    are assigned to the cluster whose mean is nearest.
    """
    m = x.shape[0]
    n_clusters = max(1, min(int(n_clusters), m))
    if m == 1:
        return np.zeros(1, np.int64)
    fit = np.sort(rng.choice(m, size=max_points, replace=False)) if m > max_points else np.arange(m)
    tree = linkage(condensed_sqrt_distances(x[fit]), method="average")
    ids = fcluster(tree, t=n_clusters, criterion="maxclust") - 1
    _, ids = np.unique(ids, return_inverse=True)
    if fit.size == m:
        return ids.astype(np.int64)
    labels = np.full(m, -1, np.int64)
    labels[fit] = ids
    k = ids.max() + 1
    # Cluster sums, row by row in order, as np.add.at adds them (same float64 numbers), but one
    # vectorised bincount per feature instead of np.add.at's slow unbuffered loop.
    xt_fit = np.ascontiguousarray(np.asarray(x[fit]).T, dtype=np.float64)
    means = np.stack([np.bincount(ids, weights=col, minlength=k) for col in xt_fit], axis=1)
    means /= np.bincount(ids, minlength=k)[:, None]
    rest = np.flatnonzero(labels < 0)
    mt = torch.from_numpy(means)
    msq = (mt * mt).sum(1)
    step = max(1, (1 << 24) // max(k, 1))  # rows per block: block × k float64 stays ≤ 128 MB
    for start in range(0, rest.size, step):
        rows = rest[start:start + step]
        xt = torch.from_numpy(np.asarray(x[rows], np.float64))
        labels[rows] = torch.addmm(msq[None, :], xt, mt.T, alpha=-2.0).argmin(dim=1).numpy()
    return labels


def round_robin(clusters: np.ndarray, order_key: np.ndarray, budget: int) -> np.ndarray:
    """Positions chosen by visiting clusters from the smallest (ties: lower id) round-robin,
    each visit taking the cluster's next point by ``order_key`` (ascending, then position).

    Vectorised: a point's visit is (its rank inside its cluster, its cluster's place in the
    order), and the picks are the first ``budget`` points in that lexicographic order.
    """
    clusters = np.asarray(clusters)
    ids, inv, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    place = np.empty(ids.size, np.int64)
    place[np.lexsort((ids, sizes))] = np.arange(ids.size)
    cp = place[inv]
    by_cluster = np.lexsort((np.arange(cp.size), order_key, cp))
    starts = np.searchsorted(cp[by_cluster], np.arange(ids.size))
    rank = np.empty(cp.size, np.int64)
    rank[by_cluster] = np.arange(cp.size) - starts[cp[by_cluster]]
    return np.lexsort((cp, rank))[:budget].astype(np.int64)


@register("margin_clustering", reference="Citovsky et al. 2021 (NeurIPS, Cluster-Margin); Emam et al. 2021")
def margin_clustering(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    candidate_factor: float | None = 10.0,
    n_clusters: int | None = None,
    within: str = "random",
    max_cluster_points: int = MAX_CLUSTER_POINTS,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> np.ndarray:
    """Margin-Clustering: cluster the lowest-margin points (average-linkage HAC), then round-robin over clusters from the smallest.

    Citovsky et al., "Batch Active Learning at Scale", NeurIPS 2021.  Candidates: the
    k_m = ``candidate_factor``·b eligible points with the smallest margin p₍₁₎ − p₍₂₎; clusters
    by average linkage; visit clusters by ascending size round-robin, each visit taking one
    point (random by default, the lowest margin with ``within="margin"`` as Emam et al.).
    """
    check_float(candidate_factor, "candidate_factor", low=1, none=True)
    check_int(n_clusters, "n_clusters", low=1, none=True)
    check_int(max_cluster_points, "max_cluster_points", low=1)
    check_int(chunk_rows, "chunk_rows", low=1)
    pool.require_model("margin_clustering")
    if within not in ("random", "margin"):
        raise ParameterError(f"within must be 'random' or 'margin', got {within!r}", param="within")
    idx, margins = score_eligible(pool, margin_scores, chunk_rows)
    if candidate_factor is None:
        cand = np.arange(idx.size)
    else:
        k_m = min(idx.size, max(budget, int(np.ceil(float(candidate_factor) * budget))))
        cand = np.sort(take_smallest(margins, k_m, rng))
    feats = gather_rows(pool.features, idx[cand], chunk_rows)
    clusters = average_linkage_clusters(feats, budget if n_clusters is None else n_clusters, rng, max_cluster_points)
    key = margins[cand] if within == "margin" else rng.random(cand.size)
    return idx[cand[round_robin(clusters, key, budget)]]
