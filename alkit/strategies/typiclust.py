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
the squared ones returned by faiss ``IndexFlatL2`` (we follow the paper); k-means here is our
own seeded Lloyd (k-means++ init, fitted on at most 256·K points as faiss does, then every
point assigned) instead of sklearn's KMeans / MiniBatchKMeans; an exhausted cluster is skipped
(their loop would fail) and, once every kept cluster is exhausted, dropped clusters are used.
Within one active-learning run the clustering is computed once and reused while K and the
clustered rows stay the same (``reuse_clusters``; they always do at this package's budgets: K
reaches 500 in the first round and the clustered rows are the pool minus the fixed validation
split), where the authors' code re-clusters the same rows every round (DEVIATIONS.md).
Cost: k-means O(iters·256K·K·D + N·K·D), once per run; typicality O(s²·D) per visited cluster of size s,
computed once per cluster, then each visit costs O(s·(k + visits)) from sorted neighbour lists.
"""
from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._dense import (
    as_device,
    feature_store,
    gather_rows,
    row_sqnorms,
)
from alkit.strategies.registry import register

MAX_CLUSTERS = 500
MIN_CLUSTER_SIZE = 5
K_NN = 20
POINTS_PER_CENTROID = 256
MAX_FIT_POINTS = 131_072


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
    max_iter: int = 20,
    points_per_centroid: int = POINTS_PER_CENTROID,
    max_fit_points: int = MAX_FIT_POINTS,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = 2 * 1024**3,
    device: str | None = None,
) -> np.ndarray:
    """Seeded k-means of ``features[indices]``; returns a cluster id per index (deterministic given rng).

    k-means++ seeding then Lloyd iterations (float32 distances, float64 means) on at most
    min(``points_per_centroid``·K, ``max_fit_points``) points drawn with ``rng`` (all if fewer);
    then every point is assigned to its nearest centre.  An emptied cluster is re-seeded at a
    random fit point.  ``normalize`` clusters the L2-normalised rows.
    """
    indices = np.asarray(indices, np.int64)
    n = indices.size
    k = max(1, min(int(n_clusters), n))
    dev = as_device(device)
    n_fit = max(k, min(points_per_centroid * k, max_fit_points))
    fit = np.sort(rng.choice(n, size=n_fit, replace=False)) if n > n_fit else np.arange(n)
    raw = feature_store(features, indices[fit], normalize=normalize, chunk_rows=chunk_rows, cache_bytes=0, device=dev)
    x = raw.block(0, fit.size)
    mu_t = x.double().mean(0).float()
    x = x - mu_t
    mu = mu_t.cpu().numpy()
    sq = (x.double() ** 2).sum(1).float()
    m = fit.size
    # k-means++ seeding (D² sampling, inverse CDF with one rng.random() per centre), in numpy
    xn = x.cpu().numpy()
    sqn = sq.cpu().numpy().astype(np.float64)
    first = int(rng.integers(m))
    chosen = [first]
    d2 = np.maximum(sqn + sqn[first] - 2.0 * (xn @ xn[first]), 0.0)
    d2[first] = 0.0
    for _ in range(1, k):
        cdf = np.cumsum(d2)
        if not cdf[-1] > 0:
            free = np.setdiff1d(np.arange(m), chosen)
            j = int(free[rng.integers(free.size)])
        else:
            j = min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), m - 1)
        chosen.append(j)
        np.minimum(d2, np.maximum(sqn + sqn[j] - 2.0 * (xn @ xn[j]), 0.0), out=d2)
        d2[chosen] = 0.0
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


def _clusters(pool: PoolState, relevant: np.ndarray, n_clusters: int, rng: np.random.Generator,
              reuse: bool, chunk_rows: int, device: str | None) -> np.ndarray:
    """k-means ids of ``relevant``; kept in the run's ``pool.cache`` and reused while K and the rows
    stay the same (the key: K and a digest of the clustered row ids; the cache is bound to the
    features).  A reused clustering draws nothing from ``rng``."""
    if not reuse or pool.cache is None:
        return kmeans(pool.features, relevant, n_clusters, rng, chunk_rows=chunk_rows, device=device)
    key = ("typiclust", "kmeans", int(n_clusters), hashlib.blake2b(relevant.tobytes(), digest_size=16).hexdigest())
    kept = pool.cache.run
    if key not in kept:
        kept[key] = kmeans(pool.features, relevant, n_clusters, rng, chunk_rows=chunk_rows, device=device)
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
    relevant = np.flatnonzero(pool.labeled & ~pool.held_out | pool.eligible).astype(np.int64)
    n_clusters = min(int((pool.labeled & ~pool.held_out).sum()) + budget, int(max_clusters), relevant.size)
    clusters = _clusters(pool, relevant, n_clusters, rng, reuse_clusters, chunk_rows, device)
    eligible = pool.eligible[relevant]
    ids, sizes = np.unique(clusters, return_counts=True)
    labelled_counts = np.bincount(clusters[~eligible], minlength=ids.max() + 1)[ids]
    order = ids[np.lexsort((ids, -sizes, labelled_counts))]
    big = np.isin(order, ids[sizes > min_cluster_size])
    cycle, fallback = list(order[big]), list(order[~big])
    avail = eligible.copy()
    members = {int(c): np.flatnonzero(clusters == c) for c in ids}
    visits_planned = -(-budget // max(len(cycle), 1)) + 1
    knn: dict[int, _ClusterKNN] = {}
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
                knn[c] = _ClusterKNN(gather_rows(pool.features, relevant[pts], chunk_rows), k_nn + 1 + 2 * visits_planned)
            mean = knn[c].mean_knn(free, k)
            while mean is None:  # more removals than planned: rebuild wider
                knn[c] = _ClusterKNN(gather_rows(pool.features, relevant[pts], chunk_rows),
                                     min(pts.size, 2 * knn[c].width + k_nn))
                mean = knn[c].mean_knn(free, k)
            typ = np.where(free, 1.0 / (mean + 1e-5), -np.inf)
            best = int(np.argmax(typ))
        avail[pts[best]] = False
        picks.append(int(relevant[pts[best]]))
        i += 1
    if len(picks) < budget:  # cannot happen (every eligible point is in some cluster) but stay safe
        rest = np.setdiff1d(pool.eligible_indices(), picks)
        picks.extend(rng.choice(rest, size=budget - len(picks), replace=False).tolist())
    return np.asarray(picks, np.int64)
