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
256·K points), its Lloyd iterations run in faiss (``backend="faiss"``, the default) instead of
sklearn's unseeded KMeans / MiniBatchKMeans, then every point is assigned to its nearest centroid;
an exhausted cluster is skipped (their loop would fail) and, once every kept cluster is exhausted,
dropped clusters are used.  Within one active-learning run the clustering is computed once and
reused while K and the clustered rows stay the same (``reuse_clusters``; they always do at this
package's budgets: K reaches 500 in the first round and the clustered rows are the pool minus the
fixed validation split), where the authors' code re-clusters the same rows every round
(DEVIATIONS.md).

Two backends, the same formula: ``"faiss"`` (default) — faiss's Lloyd iterations and flat-index
assignment, nearest neighbours from one float32 symmetric product per cluster with the ranking
decided in float64 where float32 cannot (:mod:`alkit.strategies._exact_search`); ``"torch"`` — the
previous implementation, kept as the reference: :func:`kmeans_lloyd` (float64 means) and
:class:`_ClusterKNN` (float64 products).  Both draw the same fit points and seeds, so they differ
only in Lloyd's float32 vs float64 means and emptied-cluster rule, which can move near-tied points
between clusters; given the same clusters they pick the same points (tested).
Cost: k-means O(iters·256K·K·D + N·K·D), once per run; neighbours O(s²·D/2) per visited cluster of
size s, computed once per cluster, then each visit costs O(s·(k + visits)) from sorted neighbour lists.
Memory: the k-means fit rows (256·K·D float32, 1 GB at K = 500, D = 2048) and, for every visited
cluster, its lists (s × (k + 1 + 2·visits) float32 distances and int32 positions: 0.6 GB over
1.28 M points); a cluster's rows are read again for the float64 decisions rather than kept.
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
import torch

from alkit.checks import check_bool, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._dense import (
    DEFAULT_CACHE_BYTES,
    as_device,
    feature_store,
    gather_rows,
    row_sqnorms,
    with_well_scaled_features,
)
from alkit.strategies._exact_search import ClusterKNN, centred_fit_rows, fit_positions, kmeans_faiss, kmeans_pp_seeds
from alkit.strategies.registry import register

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20
POINTS_PER_CENTROID = 256
MAX_FIT_POINTS = 131_072
BACKENDS = ("faiss", "torch")


def _assign(store, sq, centers: torch.Tensor, rows_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre (id, squared distance) of every row of ``store``."""
    csq = (centers.double() ** 2).sum(1).float()
    ids = torch.empty(store.n, dtype=torch.int64, device=centers.device)
    dist = torch.empty(store.n, dtype=torch.float32, device=centers.device)
    for start, stop, block in store.chunks(rows_per_block):
        d2 = torch.addmm(sq[start:stop, None] + csq[None, :], block, centers.T, alpha=-2.0)
        v, a = d2.min(dim=1)
        ids[start:stop], dist[start:stop] = a, v.clamp(min=0)
    return ids, dist


def _cluster_sums(x: torch.Tensor, ids: torch.Tensor, k: int, x64: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, D) float64 sums and (k,) counts of the rows of ``x`` per cluster id.

    On the CPU each cluster's rows are added one after another in index order, in float64
    (``x64``: ``x`` as float64, passed in so that Lloyd's iterations convert it once): a sparse
    one-hot (k × n) matrix times ``x64``, which adds in exactly that order and is several times
    faster than ``np.add.reduceat`` over the sorted rows, with bit-identical sums."""
    counts = torch.bincount(ids, minlength=k)
    if x.device.type != "cpu":
        return torch.zeros((k, x.shape[1]), dtype=torch.float64, device=x.device).index_add_(0, ids, x.double()), counts
    if x64 is None:
        x64 = x.numpy().astype(np.float64)
    n = x64.shape[0]
    order = np.argsort(ids.numpy(), kind="stable")   # ascending row index within each cluster
    indptr = np.concatenate([[0], np.cumsum(counts.numpy())])
    onehot = sp.csr_matrix((np.ones(n), order, indptr), shape=(k, n))
    return torch.from_numpy(np.asarray(onehot @ x64)), counts


def kmeans(
    features: np.ndarray,
    indices: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    backend: str = "faiss",
    max_iter: int = 20,
    points_per_centroid: int = POINTS_PER_CENTROID,
    max_fit_points: int = MAX_FIT_POINTS,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
) -> np.ndarray:
    """Seeded k-means of ``features[indices]``; returns a cluster id per index (deterministic given rng).

    k-means++ seeds and up to ``max_iter`` Lloyd iterations on at most
    min(``points_per_centroid``·K, ``max_fit_points``) points drawn with ``rng`` (all if fewer),
    then every point assigned to its nearest centre.  ``backend``: "faiss" (:func:`kmeans_faiss`)
    or "torch" (:func:`kmeans_lloyd`, the reference); both draw the same fit points and seeds.
    ``normalize`` clusters the L2-normalised rows.
    """
    check_backend(backend)
    fn = kmeans_faiss if backend == "faiss" else kmeans_lloyd
    return fn(features, indices, n_clusters, rng, max_iter=max_iter, points_per_centroid=points_per_centroid,
              max_fit_points=max_fit_points, normalize=normalize, chunk_rows=chunk_rows, cache_bytes=cache_bytes,
              device=device)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def kmeans_lloyd(
    features: np.ndarray,
    indices: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    max_iter: int = 20,
    points_per_centroid: int = POINTS_PER_CENTROID,
    max_fit_points: int = MAX_FIT_POINTS,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
) -> np.ndarray:
    """The reference k-means (``backend="torch"``): k-means++ seeding then Lloyd iterations
    (float32 distances, float64 means) on at most min(``points_per_centroid``·K, ``max_fit_points``)
    points drawn with ``rng`` (all if fewer); then every point is assigned to its nearest centre.
    An emptied cluster is re-seeded at a random fit point.  ``normalize`` clusters the L2-normalised
    rows.
    """
    indices = np.asarray(indices, np.int64)
    n = indices.size
    k = max(1, min(int(n_clusters), n))
    dev = as_device(device)
    fit = fit_positions(n, k, rng, points_per_centroid, max_fit_points)
    x, mu_t, sq = centred_fit_rows(features, indices[fit], normalize, chunk_rows)
    mu = mu_t.numpy()
    m = fit.size
    chosen = kmeans_pp_seeds(x.numpy(), sq.numpy().astype(np.float64), k, rng)
    x, sq = x.to(dev), sq.to(dev)
    centers = x[torch.as_tensor(chosen, device=dev)].clone()
    rows_per_block = max(1, (1 << 24) // k)

    class _One:  # the fit rows as a single-block store
        def __init__(self, t):
            self.n, self._t = t.shape[0], t

        def chunks(self, step):
            for s in range(0, self.n, step):
                yield s, min(s + step, self.n), self._t[s:s + step]

    fit_rows = _One(x)
    x64 = x.numpy().astype(np.float64) if x.device.type == "cpu" else None
    ids, _ = _assign(fit_rows, sq, centers, rows_per_block)
    for _ in range(max_iter):
        sums, counts = _cluster_sums(x, ids, k, x64)
        empty = torch.nonzero(counts == 0).flatten().cpu().numpy()
        centers = (sums / counts.clamp(min=1)[:, None]).float()
        for e in empty:
            centers[int(e)] = x[int(rng.integers(m))]
        new_ids, _ = _assign(fit_rows, sq, centers, rows_per_block)
        if torch.equal(new_ids, ids) and empty.size == 0:
            break
        ids = new_ids
    if fit.size == n:
        return ids.cpu().numpy()
    store = feature_store(features, indices, center=mu, normalize=normalize, chunk_rows=chunk_rows,
                          cache_bytes=cache_bytes, device=dev)
    all_ids, _ = _assign(store, row_sqnorms(store), centers, rows_per_block)
    return all_ids.cpu().numpy()


def typicality(features: np.ndarray, k: int) -> np.ndarray:
    """1 / (mean Euclidean distance to the k nearest other rows + 1e-5), exact (small sets)."""
    x = np.asarray(features, np.float64)
    d = np.sqrt(np.maximum((x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T, 0))
    np.fill_diagonal(d, np.inf)
    k = max(1, min(k, x.shape[0] - 1))
    return 1.0 / (np.sort(d, axis=1)[:, :k].mean(axis=1) + 1e-5)


class _ClusterKNN:
    """The ``width`` nearest neighbours (sorted) of each of a cluster's points, within the cluster.

    Computed in row blocks (block × s distances, then top-``width``), so memory is O(s·width)
    plus one block, never s²."""

    def __init__(self, x: np.ndarray, width: int, block_rows: int = 1024) -> None:
        xt = torch.from_numpy(np.asarray(x, np.float64))
        xt = xt - xt.mean(0)
        sq = (xt * xt).sum(1)
        s = xt.shape[0]
        self.width = width = min(width, s)
        self.dist = np.empty((s, width))
        self.nbr = np.empty((s, width), np.int64)
        for start in range(0, s, block_rows):
            stop = min(start + block_rows, s)
            d = (sq[start:stop, None] + sq[None, :] - 2 * xt[start:stop] @ xt.T).clamp(min=0).sqrt()
            d[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")
            vals, nbrs = torch.topk(d, width, dim=1, largest=False, sorted=True)
            self.dist[start:stop], self.nbr[start:stop] = vals.numpy(), nbrs.numpy()

    def mean_knn(self, avail: np.ndarray, k: int) -> np.ndarray | None:
        """Mean distance to the k nearest available neighbours of every point (None: widen)."""
        ok = avail[self.nbr] & np.isfinite(self.dist)
        rank = np.cumsum(ok, axis=1)
        take = ok & (rank <= k)
        if (take.sum(1)[avail] < k).any():
            return None
        return np.where(take, self.dist, 0.0).sum(1) / k

    def most_typical(self, free: np.ndarray, k: int) -> int | None:
        """Position of the free point of highest typicality (first of ties); None: widen."""
        mean = self.mean_knn(free, k)
        if mean is None:
            return None
        return int(np.argmax(np.where(free, 1.0 / (mean + 1e-5), -np.inf)))


def _clusters(pool: PoolState, relevant: np.ndarray, n_clusters: int, rng: np.random.Generator,
              reuse: bool, backend: str, chunk_rows: int, device: str | None) -> np.ndarray:
    """k-means ids of ``relevant``; kept in the run's ``pool.cache`` and reused while K and the rows
    stay the same (the key: K, a digest of the clustered row ids and the backend; the cache is
    bound to the features).  A reused clustering draws nothing from ``rng``."""
    if not reuse or pool.cache is None:
        return kmeans(pool.features, relevant, n_clusters, rng, backend=backend, chunk_rows=chunk_rows, device=device)
    key = ("typiclust", "kmeans", int(n_clusters), hashlib.blake2b(relevant.tobytes(), digest_size=16).hexdigest(),
           backend)
    kept = pool.cache.run
    if key not in kept:
        kept[key] = kmeans(pool.features, relevant, n_clusters, rng, backend=backend, chunk_rows=chunk_rows,
                           device=device)
    return kept[key]


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
    backend: str = "faiss",
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
    only by its random start).  ``backend``: "faiss" (default) or "torch", the previous
    implementation kept as the reference (module docstring).
    """
    check_int(max_clusters, "max_clusters", low=1)
    check_int(min_cluster_size, "min_cluster_size", low=1)
    check_int(k_nn, "k_nn", low=1)
    check_bool(reuse_clusters, "reuse_clusters")
    check_int(chunk_rows, "chunk_rows", low=1)
    pool = with_well_scaled_features(pool, chunk_rows)   # extreme scales: no float32 overflow, same picks
    check_backend(backend)
    relevant = np.flatnonzero(pool.labeled & ~pool.held_out | pool.eligible).astype(np.int64)
    n_clusters = min(int((pool.labeled & ~pool.held_out).sum()) + budget, int(max_clusters), relevant.size)
    clusters = _clusters(pool, relevant, n_clusters, rng, reuse_clusters, backend, chunk_rows, device)
    eligible = pool.eligible[relevant]
    ids, sizes = np.unique(clusters, return_counts=True)
    labelled_counts = np.bincount(clusters[~eligible], minlength=ids.max() + 1)[ids]
    order = ids[np.lexsort((ids, -sizes, labelled_counts))]
    big = np.isin(order, ids[sizes > min_cluster_size])
    cycle, fallback = list(order[big]), list(order[~big])
    avail = eligible.copy()
    members = {int(c): np.flatnonzero(clusters == c) for c in ids}
    visits_planned = -(-budget // max(len(cycle), 1)) + 1

    def neighbours(pts: np.ndarray, width: int):
        ids = relevant[pts]
        x = gather_rows(pool.features, ids, chunk_rows)
        if backend == "torch":
            return _ClusterKNN(x, width)
        # the rows are re-read for the rare float64 decisions instead of kept (the pool's size in RAM)
        return ClusterKNN(x, width, device=device, rows=lambda pos: gather_rows(pool.features, ids[pos], chunk_rows))

    knn: dict = {}
    picks: list[int] = []
    i = 0
    while len(picks) < budget:
        if not cycle:
            cycle, fallback = fallback, []
            i = 0
            if not cycle:
                break
        c = int(cycle[i % len(cycle)])
        pts = members[c][eligible[members[c]]]  # the cluster's eligible points (fixed order)
        free = avail[pts]
        if not free.any():
            cycle.remove(c)
            continue
        n_free = int(free.sum())
        k = min(k_nn, n_free // 2)
        if k == 0:
            best = int(np.flatnonzero(free)[0])
        else:
            if c not in knn:
                knn[c] = neighbours(pts, k_nn + 1 + 2 * visits_planned)
            best = knn[c].most_typical(free, k)
            while best is None:  # more removals than planned: rebuild wider
                knn[c] = neighbours(pts, min(pts.size, 2 * knn[c].width + k_nn))
                best = knn[c].most_typical(free, k)
        avail[pts[best]] = False
        picks.append(int(relevant[pts[best]]))
        i += 1
    if len(picks) < budget:  # cannot happen (every eligible point is in some cluster) but stay safe
        rest = np.setdiff1d(pool.eligible_indices(), picks)
        picks.extend(rng.choice(rest, size=budget - len(picks), replace=False).tolist())
    return np.asarray(picks, np.int64)
