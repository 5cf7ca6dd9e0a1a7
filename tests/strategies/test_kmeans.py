"""The k-means TypiClust and ProbCover share (alkit/strategies/_kmeans.py, _exact_search.py).

Lloyd's per-cluster sums are the sequential float64 sums; faiss's k-means is seeded, reproducible
across thread counts, assigns every point to its nearest centroid and starts from Lloyd's
k-means++ seeds; the centred fit rows' norms are the whole-matrix sums; and without CUDA and
faiss-gpu the GPU branches of the exact-search engine are never taken.  Each strategy's own use
of the engine is in test_typiclust.py (neighbour lists) and test_probcover.py (the δ-graph).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from alkit.strategies import _exact_search as E
from alkit.strategies._dense import sqdist64
from alkit.strategies._kmeans import MAX_FIT_POINTS, POINTS_PER_CENTROID, cluster_sums, lloyd_kmeans
from alkit.strategies._typiclust_engine import typiclust_kmeans
from alkit.strategies.probcover import delta_graph
from strategy_pools import unit_rows


def test_cluster_sums_are_the_sequential_float64_sums():
    """Each cluster's rows added one after another in index order, in float64: bit-identical to a
    plain loop; empty clusters are zero; counts are the cluster sizes."""
    rng = np.random.default_rng(4)
    x = torch.from_numpy((rng.standard_normal((3000, 37)) * 10 ** rng.uniform(-3, 3, (3000, 1))).astype(np.float32))
    ids = torch.from_numpy(rng.integers(0, 50, 3000))
    ids[ids == 7] = 8   # one empty cluster
    sums, counts = cluster_sums(x, ids, 50)
    expected = np.zeros((50, 37))
    for row, cluster in zip(x.numpy().astype(np.float64), ids.numpy()):
        expected[cluster] += row
    assert np.array_equal(sums.numpy(), expected)
    assert counts[7] == 0 and not sums[7].any()
    np.testing.assert_array_equal(counts.numpy(), np.bincount(ids.numpy(), minlength=50))


def blobs(seed=0, n=900, d=10, k=6):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return (rng.standard_normal((k, d))[y] * 4 + rng.standard_normal((n, d))).astype(np.float32), y


def faiss_kmeans(x, k, seed, **kw):
    args = dict(max_iter=20, points_per_centroid=POINTS_PER_CENTROID, max_fit_points=MAX_FIT_POINTS,
                normalize=False, chunk_rows=128, cache_bytes=0, device=None)
    args.update(kw)
    return E.kmeans_faiss(x, np.arange(x.shape[0]), k, np.random.default_rng(seed), **args)


def test_faiss_kmeans_is_seeded_and_reproducible_across_thread_counts():
    x, _ = blobs()
    faiss = E._faiss()
    threads = faiss.omp_get_max_threads()
    try:
        a = faiss_kmeans(x, 20, 3)
        faiss.omp_set_num_threads(1)
        b = faiss_kmeans(x, 20, 3)
    finally:
        faiss.omp_set_num_threads(threads)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, faiss_kmeans(x, 20, 4))


@pytest.mark.parametrize("fit", [None, 7])   # all rows, or 7 per centroid then every row assigned
def test_faiss_kmeans_assigns_every_point_to_its_nearest_centroid(fit):
    x, _ = blobs(1, n=2000, d=16)
    kw = {} if fit is None else {"points_per_centroid": fit}
    ids, centroids = faiss_kmeans(x, 25, 0, return_centroids=True, **kw)
    d2 = sqdist64(x, centroids)
    best = d2.min(1)
    assigned = d2[np.arange(x.shape[0]), ids]
    tol = E.TIE_RTOL * (np.einsum("ij,ij->i", x, x) + (centroids.astype(np.float64) ** 2).sum(1).max())
    assert (assigned <= best + tol).all()   # nearest, up to float32 near ties
    assert np.mean(ids == d2.argmin(1)) > 0.999


def test_faiss_kmeans_starts_from_the_lloyd_seeds_and_separates_blobs():
    x, y = blobs(2)
    # no Lloyd iteration: both assign every point to the same k-means++ seeds
    for seed in range(3):
        np.testing.assert_array_equal(faiss_kmeans(x, 12, seed, max_iter=0),
                                      lloyd_kmeans(x, np.arange(x.shape[0]), 12, np.random.default_rng(seed),
                                                   max_iter=0))
    ids = typiclust_kmeans(x, np.arange(x.shape[0]), 6, np.random.default_rng(0))   # faiss
    ref = lloyd_kmeans(x, np.arange(x.shape[0]), 6, np.random.default_rng(0))
    assert all(len(set(ids[y == c])) == 1 for c in range(6)) and len(set(ids)) == 6
    np.testing.assert_array_equal(ids, ref)


def test_gpu_paths_are_guarded():
    """Without CUDA and faiss-gpu the GPU branches are never taken (CI has no GPU)."""
    assert not E.faiss_gpu(None) and not E.faiss_gpu("cpu")
    if not torch.cuda.is_available():
        assert not E.faiss_gpu("cuda")
    assert isinstance(E.flat_l2_index(4, "cpu"), E._faiss().IndexFlatL2)
    assert sp.issparse(delta_graph(unit_rows(np.eye(3, dtype=np.float32))[0], 0.5))


def test_centred_fit_rows_squared_norms_are_the_whole_matrix_sums():
    """The fit rows' squared norms are summed in row blocks (no float64 copy of the fit matrix);
    they must be the very numbers of the whole-matrix sum, which the k-means++ draws depend on."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40_000, 24)) * rng.uniform(0.1, 5, (40_000, 1)) + 3).astype(np.float32)
    centred, mu, sq = E.centred_fit_rows(x, np.arange(x.shape[0]), False, 4096)
    torch.testing.assert_close(centred, torch.from_numpy(x) - mu, rtol=0, atol=0)
    assert torch.equal(sq, (centred.double() ** 2).sum(1).float())
