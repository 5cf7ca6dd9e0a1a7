"""The faiss paths of ProbCover and TypiClust against their references.

ProbCover's δ-graph: the same edges as the float64 definition (``delta_graph_reference``) on random
inputs, at pairs exactly δ apart (not edges) and with δ set to a pair's own distance, by both
searches ("faiss" on the CPU, "torch" as on a GPU); and the same edges as the previous float32
build wherever no pair lies within float32 error of δ.  TypiClust: the neighbour lists are the
float64 nearest neighbours and each pick the float64 argmax of typicality (the picks given the same
clusters are held to ``typiclust_reference`` in test_diversity_strategies.py); faiss's k-means is
seeded, reproducible, assigns every point to its nearest centroid and starts from the k-means++
seeds of Lloyd's k-means (ProbCover's).
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from alkit import make_pool, select
from alkit.strategies import _exact_search as E
from alkit.strategies._dense import sqdist64
from alkit.strategies._kmeans import MAX_FIT_POINTS, POINTS_PER_CENTROID, lloyd_kmeans
from alkit.strategies import _typiclust_engine as typiclust_engine
from alkit.strategies._typiclust_engine import typiclust_kmeans
from alkit.strategies.typiclust import typicality, typiclust_reference
from alkit.strategies.probcover import delta_graph, delta_graph_reference, normalised_store


def previous_delta_graph(store, delta: float, block_rows: int = 2048) -> np.ndarray:
    """The float32 build the faiss path replaced (d² = 2 − 2 cos per chunk, self-loops added), dense."""
    n = store.n
    out = np.zeros((n, n), bool)
    for start, stop, rows in store.chunks(block_rows):
        for c0, c1, other in store.chunks():
            out[start:stop, c0:c1] = (2.0 - 2.0 * (rows @ other.T) < float(delta) ** 2).numpy()
    np.fill_diagonal(out, True)
    return out


def unit_rows(x: np.ndarray, chunk_rows: int = 64):
    store = normalised_store(x, np.arange(x.shape[0]), chunk_rows=chunk_rows)
    return store, store.block(0, store.n).numpy()


# ----------------------------------------------------------------------------- ProbCover's graph
@pytest.mark.parametrize("search", ["faiss", "torch"])
@pytest.mark.parametrize("seed", range(6))
def test_delta_graph_has_the_reference_edges(seed, search):
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(40, 700)), int(rng.integers(2, 50))
    x = rng.standard_normal((n, d)).astype(np.float32)
    if seed % 2:   # near-duplicates and exact duplicates
        x[n // 2:n // 2 + 10] = x[:10] + (seed % 3) * 1e-4 * rng.standard_normal((10, d)).astype(np.float32)
    store, u = unit_rows(x, int(rng.integers(17, 200)))
    d2 = sqdist64(u, u)
    off = d2[~np.eye(n, dtype=bool)]
    for q in (0.002, 0.03):
        delta = float(np.sqrt(np.quantile(off, q)))
        graph = delta_graph(store, delta, block_rows=int(rng.integers(8, 300)), search=search)
        assert graph.has_sorted_indices and graph.dtype == bool
        assert (graph != delta_graph_reference(u, delta)).nnz == 0
    # δ exactly a pair's float64 distance: that pair is no edge, and neither is any pair at the same distance
    i, j = np.unravel_index(np.argsort(np.where(np.eye(n, dtype=bool), np.inf, d2), axis=None)[n], d2.shape)
    delta = float(np.sqrt(d2[i, j]))
    graph = delta_graph(store, delta, block_rows=50, search=search)
    assert (graph != delta_graph_reference(u, delta)).nnz == 0
    assert graph[i, j] == (d2[i, j] < delta ** 2)


@pytest.mark.parametrize("search", ["faiss", "torch"])
def test_delta_graph_tie_rule_at_exactly_delta(search):
    """Unit vectors whose distances are exact in float32 and float64: e₁ and (±½, ±½, ±½, ±½) lie
    exactly 1 apart (and √2 or 1 from each other); at δ = 1 no such pair is an edge, just above
    1 every pair at 1 is."""
    h = 0.5
    x = np.array([[1, 0, 0, 0], [h, h, h, h], [h, h, h, -h], [0, 1, 0, 0], [h, -h, h, h], [0, 0, 0, 1]],
                 np.float32)
    store, u = unit_rows(x)
    at_one = sqdist64(u, u) == 1.0
    assert at_one.sum() >= 8
    graph = delta_graph(store, 1.0, search=search).toarray()
    np.testing.assert_array_equal(graph, np.eye(6, dtype=bool))
    above = delta_graph(store, np.nextafter(1.0, 2.0), search=search).toarray()
    np.testing.assert_array_equal(above, at_one | np.eye(6, dtype=bool))
    np.testing.assert_array_equal(graph, delta_graph_reference(u, 1.0).toarray())


@pytest.mark.parametrize("seed", range(4))
def test_delta_graph_equals_the_previous_float32_build_away_from_float_ties(seed):
    rng = np.random.default_rng(10 + seed)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    store, u = unit_rows(x)
    values = np.unique(sqdist64(u, u))
    for q in (0.01, 0.1, 0.3):   # δ² halfway between two neighbouring pair distances: float32 decides alone
        i = int(q * values.size)
        i += int(np.argmax(np.diff(values[i:i + 500])))   # the widest gap nearby
        delta = float(np.sqrt((values[i] + values[i + 1]) / 2))
        assert values[i + 1] - values[i] > 1e-5
        np.testing.assert_array_equal(delta_graph(store, delta).toarray(), previous_delta_graph(store, delta))


def test_delta_graph_counts_edges_against_max_edges():
    x = np.random.default_rng(0).standard_normal((60, 3)).astype(np.float32)
    store, u = unit_rows(x)
    full = int(delta_graph_reference(u, 1.2).nnz)
    assert delta_graph(store, 1.2, max_edges=full).nnz == full
    with pytest.raises(ValueError, match="max_edges"):
        delta_graph(store, 1.2, max_edges=full - 1)
    with pytest.raises(ValueError, match="search must be"):
        delta_graph(store, 1.2, search="ivf")


# ----------------------------------------------------------------------------- TypiClust's neighbours
def float64_neighbours(x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``width`` nearest other rows by float64 distance, and those distances (+inf: itself)."""
    d = np.sqrt(sqdist64(x, x))
    np.fill_diagonal(d, np.inf)
    nbr = np.argsort(d, axis=1, kind="stable")[:, :width]
    return nbr, np.take_along_axis(d, nbr, axis=1)


def test_cluster_knn_lists_are_the_float64_nearest_neighbours():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((300, 40)) * 3 + 100).astype(np.float32)   # far from the origin: centring matters
    nbr, dist = float64_neighbours(x, 25)
    for product in ("numpy", "torch"):
        for block_rows in (8192, 70):
            fast = E.ClusterKNN(x, 25, product=product, block_rows=block_rows)
            np.testing.assert_array_equal(fast.nbr, nbr)
            np.testing.assert_allclose(fast.dist, dist, rtol=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_most_typical_is_the_float64_argmax(seed):
    """Given a cluster and its free points, the engine's pick is the float64 argmax of typicality;
    it asks for wider lists (None) exactly when a free point's float64 list holds fewer than k free
    neighbours."""
    rng = np.random.default_rng(seed)
    s = int(rng.integers(12, 400))
    x = (rng.standard_normal((s, 16)) * rng.uniform(0.1, 3, (s, 1))).astype(np.float32)
    if seed % 2:
        x[s // 2:] = x[:s - s // 2]   # exact duplicates: typicality ties between copies
    free = rng.random(s) < 0.8
    free[0] = True
    k = max(1, min(20, int(free.sum()) // 2))
    width = min(s, k + 1 + int(rng.integers(0, 20)))
    got = E.ClusterKNN(x, width).most_typical(free, k)
    nbr, dist = float64_neighbours(x, width)
    too_short = ((free[nbr] & np.isfinite(dist)).sum(1)[free] < k).any()
    assert (got is None) == too_short
    pts = np.flatnonzero(free)
    if got is not None and not seed % 2:
        assert got == pts[np.argmax(typicality(x[pts], k))]
    if seed % 2 and got is not None:   # ties: the exact float64 argmax, lowest position first
        others = np.flatnonzero(free)
        typ = [1.0 / (np.sort(np.sqrt(sqdist64(x[p:p + 1], x[others[others != p]])[0]))[:k].mean() + 1e-5)
               if free[p] else -np.inf for p in range(s)]
        assert np.isclose(typ[got], max(typ), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", range(4))
def test_cluster_knn_reads_rows_back_instead_of_keeping_them(seed):
    """TypiClust keeps one ClusterKNN per cluster for the whole selection: with ``rows`` it holds
    only its lists (no s × D copy; the pool's size at 1.28 M), reads rows back for the float64
    decisions, and picks exactly what the version that keeps its rows picks, pick after pick."""
    rng = np.random.default_rng(seed)
    s, d = 240, 33
    x = (rng.standard_normal((s, d)) * rng.uniform(0.5, 2, (s, 1))).astype(np.float32)
    x[s // 2:] = x[:s - s // 2] * (1 + 1e-6 * rng.standard_normal((s - s // 2, 1))).astype(np.float32)   # near-ties
    asked = []

    def rows(pos):
        asked.append(pos.size)
        return x[pos]

    kept, lean = E.ClusterKNN(x, 45), E.ClusterKNN(x.copy(), 45, rows=rows)
    assert not any(getattr(v, "ndim", 0) == 2 and v.shape[1] == d for v in vars(lean).values())
    assert lean.dist.dtype == np.float32 and lean.nbr.dtype == np.int32
    free = np.ones(s, bool)
    for _ in range(10):
        got, want = lean.most_typical(free, 20), kept.most_typical(free, 20)
        assert got == want
        free[got] = False
    assert asked   # the ties were decided on rows read back
    for p in np.flatnonzero(free)[::7]:   # each float64 mean is the formula's, from rows read back
        others = np.flatnonzero(free)
        want = np.sort(np.sqrt(sqdist64(x[p:p + 1], x[others[others != p]])[0]))[:20].mean()
        assert lean._exact_mean(p, free, 20) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_typiclust_widens_its_lists_and_keeps_the_reference_picks(seed, monkeypatch):
    """One large cluster among many small ones: once the small ones run out, the large one is
    visited far more often than its first lists planned for, so they are rebuilt wider; the picks
    stay the reference's."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((600, 12)) * rng.uniform(0.5, 2, (600, 1))).astype(np.float32)
    labels = np.full(600, -1)
    labels[rng.choice(600, 20, replace=False)] = 0
    pool = make_pool(x, labels, 2)
    clusters = np.where(np.arange(600) < 360, 0, 1 + (np.arange(600) - 360) // 8)[rng.permutation(600)]
    monkeypatch.setattr(typiclust_engine, "typiclust_kmeans", lambda features, rows, *a, **k: clusters[rows])
    widths = []
    real = typiclust_engine.ClusterKNN
    monkeypatch.setattr(typiclust_engine, "ClusterKNN",
                        lambda x, width, **kw: widths.append(width) or real(x, width, **kw))
    picks = select(pool, "typiclust", 400, seed)
    np.testing.assert_array_equal(picks, typiclust_reference(x, clusters, pool.eligible, 400))
    assert max(widths) > min(widths)   # rebuilt wider


# ----------------------------------------------------------------------------- k-means
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


@pytest.mark.parametrize("seed", range(4))
def test_estimated_delta_keeps_the_quantile_ball_pure_under_the_exact_rule(seed):
    """δ is the quantile centre's float64 distance to its nearest point of another pseudo-class,
    rounded down: that point is no edge, and at least α of the balls are pure under the exact graph."""
    from alkit.strategies.probcover import estimate_delta

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    store, u = unit_rows(x)
    pseudo = rng.integers(0, 3, 300)
    delta = estimate_delta(store, pseudo, np.random.default_rng(seed), alpha=0.9, sample=300)
    d2 = sqdist64(u, u)
    d_diff = np.where(pseudo[:, None] != pseudo[None, :], d2, np.inf).min(1)
    at = int(np.floor((1.0 - 0.9) * 300))   # the quantile's position, as estimate_delta computes it
    assert delta ** 2 <= np.sort(d_diff)[at] < np.nextafter(delta, 3.0) ** 2   # rounded down
    graph = delta_graph(store, delta).toarray()
    pure = ~(graph & (pseudo[:, None] != pseudo[None, :])).any(1)
    assert pure.mean() >= 0.9


def test_centred_fit_rows_squared_norms_are_the_whole_matrix_sums():
    """The fit rows' squared norms are summed in row blocks (no float64 copy of the fit matrix);
    they must be the very numbers of the whole-matrix sum, which the k-means++ draws depend on."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40_000, 24)) * rng.uniform(0.1, 5, (40_000, 1)) + 3).astype(np.float32)
    centred, mu, sq = E.centred_fit_rows(x, np.arange(x.shape[0]), False, 4096)
    torch.testing.assert_close(centred, torch.from_numpy(x) - mu, rtol=0, atol=0)
    assert torch.equal(sq, (centred.double() ** 2).sum(1).float())


def _lists_in_child(out):
    x = np.random.default_rng(0).standard_normal((1200, 16)).astype(np.float32)
    out.put(hash(E.ClusterKNN(x, 30).nbr.tobytes()))   # small: a big message would block the child's exit


def test_cluster_knn_works_in_a_forked_child_after_the_parent_used_it():
    """The partitions run on threads; a pool kept across calls has no threads in a forked child
    (multiprocessing's default on Linux, sweeps' workers), whose lists would then wait forever."""
    import multiprocessing as mp

    threads = torch.get_num_threads()
    torch.set_num_threads(2)   # more than one part per block
    try:
        ctx = mp.get_context("fork")
        out = ctx.Queue()
        _lists_in_child(out)
        in_parent = out.get(timeout=30)
        child = ctx.Process(target=_lists_in_child, args=(out,))
        child.start()
        child.join(60)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung, "ClusterKNN hung in a forked child"
        assert child.exitcode == 0 and out.get(timeout=10) == in_parent
    finally:
        torch.set_num_threads(threads)

