"""Lloyd's k-means in torch with float64 means: the k-means behind ProbCover's default δ.

:func:`lloyd_kmeans` draws its fit rows and k-means++ seeds from the caller's ``rng`` exactly as
:func:`alkit.strategies._exact_search.kmeans_faiss` does (TypiClust's k-means), then runs Lloyd's
iterations itself: float32 distances, float64 cluster means (each cluster's rows added in index
order), an emptied cluster re-seeded at a random fit row.  It was TypiClust's ``backend="torch"``;
ProbCover keeps it because its δ, and every pick made with that δ, were computed with it.

Cost: O(iters·m·K·D) for m ≤ min(256·K, 131,072) fit rows, then O(N·K·D) to assign every row.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import DEFAULT_CACHE_BYTES, as_device, feature_store, row_sqnorms
from alkit.strategies._exact_search import (
    MAX_FIT_POINTS, POINTS_PER_CENTROID, centred_fit_rows, fit_positions, kmeans_pp_seeds,
)


def lloyd_kmeans(
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
    """Seeded k-means of ``features[indices]``: a cluster id per index (deterministic given ``rng``).

    k-means++ seeds then up to ``max_iter`` Lloyd iterations (float32 distances, float64 means) on
    at most min(``points_per_centroid``·K, ``max_fit_points``) rows drawn with ``rng`` (all if
    fewer); then every row is assigned to its nearest centre.  An emptied cluster is re-seeded at a
    random fit row.  ``normalize`` clusters the L2-normalised rows.
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
    fit_rows = _WholeRows(x)
    x64 = x.numpy().astype(np.float64) if x.device.type == "cpu" else None   # converted once for every iteration
    ids, _ = nearest_centres(fit_rows, sq, centers, rows_per_block)
    for _ in range(max_iter):
        sums, counts = cluster_sums(x, ids, k, x64)
        empty = torch.nonzero(counts == 0).flatten().cpu().numpy()
        centers = (sums / counts.clamp(min=1)[:, None]).float()
        for e in empty:
            centers[int(e)] = x[int(rng.integers(m))]
        new_ids, _ = nearest_centres(fit_rows, sq, centers, rows_per_block)
        if torch.equal(new_ids, ids) and empty.size == 0:
            break
        ids = new_ids
    if fit.size == n:
        return ids.cpu().numpy()
    store = feature_store(features, indices, center=mu, normalize=normalize, chunk_rows=chunk_rows,
                          cache_bytes=cache_bytes, device=dev)
    all_ids, _ = nearest_centres(store, row_sqnorms(store), centers, rows_per_block)
    return all_ids.cpu().numpy()


class _WholeRows:
    """A tensor of rows served as the blocks a row store's ``chunks`` yields."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.n, self._rows = rows.shape[0], rows

    def chunks(self, step: int):
        for start in range(0, self.n, step):
            yield start, min(start + step, self.n), self._rows[start:start + step]


def nearest_centres(store, sq, centers: torch.Tensor, rows_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre (id, squared float32 distance) of every row of ``store`` (squared norms ``sq``)."""
    csq = (centers.double() ** 2).sum(1).float()
    ids = torch.empty(store.n, dtype=torch.int64, device=centers.device)
    dist = torch.empty(store.n, dtype=torch.float32, device=centers.device)
    for start, stop, block in store.chunks(rows_per_block):
        d2 = torch.addmm(sq[start:stop, None] + csq[None, :], block, centers.T, alpha=-2.0)
        v, a = d2.min(dim=1)
        ids[start:stop], dist[start:stop] = a, v.clamp(min=0)
    return ids, dist


def cluster_sums(x: torch.Tensor, ids: torch.Tensor, k: int, x64: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
