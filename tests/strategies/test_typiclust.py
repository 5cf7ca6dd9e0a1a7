"""TypiClust (alkit/strategies/typiclust.py and its engine, _typiclust_engine.py).

Typicality's formula, hand-made picks (the densest point of the largest uncovered cluster, twenty
neighbours), the engine held to ``typiclust_reference`` given the same clusters, its seeded k-means
and the clustering reused across a run's rounds; then its faiss neighbour lists (ClusterKNN) against
the float64 nearest neighbours and the float64 argmax of typicality, lists rebuilt wider, and a
forked child; and the minimum cluster size (a mutation-audit survivor, see tests/test_survivors.py).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from alkit import make_pool, select
from alkit.pool import PoolState, StrategyCache
from alkit.strategies import _exact_search as E
from alkit.strategies import _typiclust_engine as typiclust_engine
from alkit.strategies._dense import sqdist64
from alkit.strategies._typiclust_engine import typiclust_kmeans
from alkit.strategies.typiclust import typiclust, typicality, typiclust_reference
from strategy_pools import gaussian_pool


def test_typicality_is_inverse_mean_knn_distance():
    x = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(typicality(x, 1), 1 / (np.array([1.0, 1.0, 2.0]) + 1e-5))


def test_typiclust_picks_the_densest_point_of_the_uncovered_cluster():
    rng = np.random.default_rng(0)
    blob_a = rng.standard_normal((40, 2)) * 0.3                      # holds the labelled point
    angle = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    ring = np.stack([np.cos(angle), np.sin(angle)], 1) * 2.0         # sparse ring ...
    core = rng.standard_normal((10, 2)) * 0.05                       # ... around a dense core
    blob_b = np.concatenate([ring, core]) + [20, 0]
    x = np.concatenate([blob_a, blob_b]).astype(np.float32)
    labels = np.full(80, -1)
    labels[3] = 0
    pool = make_pool(x, labels, 2)
    picks = select(pool, "typiclust", 1, 0)  # |L| + b = 2 clusters: the two blobs
    expected = 40 + int(np.argmax(typicality(blob_b, 20)))
    assert picks.tolist() == [expected]
    assert expected >= 70  # a point of the dense core of the cluster without labels


def test_typiclust_visits_the_larger_uncovered_cluster_first():
    """Clusters sorted by labelled count (ascending), then size (descending): of two clusters
    without labels, the larger gives the first pick and the smaller the second."""
    rng = np.random.default_rng(4)
    labelled_blob = rng.standard_normal((20, 2)) * 0.2
    large = rng.standard_normal((40, 2)) * 0.2 + [30, 0]
    small = rng.standard_normal((12, 2)) * 0.2 + [0, 30]
    x = np.concatenate([labelled_blob, large, small]).astype(np.float32)
    labels = np.full(x.shape[0], -1)
    labels[0] = 0
    pool = make_pool(x, labels, 2)
    first = select(pool, "typiclust", 2, 0)   # K = 1 + 2 = 3 clusters: the three blobs
    assert 20 <= first[0] < 60 and 60 <= first[1] < 72


def test_typiclust_uses_twenty_neighbours_when_the_cluster_is_large():
    """k = min(20, n/2): with 60 free points n/2 = 30 does not bind, so the pick is the argmax of
    the 20-neighbour typicality (this cluster's 21-neighbour argmax is another point)."""
    rng = np.random.default_rng(3)
    blob = rng.standard_normal((60, 2)) * np.array([1.0, 0.3])
    assert np.argmax(typicality(blob, 20)) != np.argmax(typicality(blob, 21))
    labelled_blob = rng.standard_normal((10, 2)) * 0.1 + [50, 50]
    x = np.concatenate([labelled_blob, blob + [-50, 0]]).astype(np.float32)
    labels = np.full(x.shape[0], -1)
    labels[0] = 0
    picks = select(make_pool(x, labels, 2), "typiclust", 1, 0)
    assert picks.tolist() == [10 + int(np.argmax(typicality(blob, 20)))]


@pytest.mark.parametrize("seed", range(12))
def test_typiclust_picks_what_the_reference_picks_given_the_same_clusters(seed, monkeypatch):
    """Any fixed clustering (skewed sizes, clusters at or under the minimum size, clusters that run
    out of free points, exact duplicates): the engine's picks, in order, are the reference's."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 300))
    x = (rng.standard_normal((n, 5)) * rng.uniform(0.2, 3, (n, 1))).astype(np.float32)
    if seed % 3 == 0:
        x[n // 2:] = x[:n - n // 2]   # exact duplicates: typicality ties, the lowest position wins
    labels = np.where(rng.random(n) < 0.1, 0, -1)
    held_out = (rng.random(n) < 0.1) & (labels < 0)
    pool = make_pool(x, labels, 2, held_out=held_out)
    clusters = rng.integers(0, int(rng.integers(2, 30)), n) ** int(rng.integers(1, 3))
    monkeypatch.setattr(typiclust_engine, "typiclust_kmeans", lambda features, rows, *a, **k: clusters[rows])
    kw = dict(min_cluster_size=int(rng.integers(1, 8)), k_nn=int(rng.integers(1, 25)))
    budget = int(rng.integers(1, pool.eligible.sum() + 1))
    got = select(pool, lambda p, b, r: typiclust(p, b, r, **kw), budget, seed)
    rows = np.flatnonzero(pool.labeled & ~held_out | pool.eligible)
    want = rows[typiclust_reference(x[rows], clusters[rows], pool.eligible[rows], budget, **kw)]
    np.testing.assert_array_equal(got, want)


def test_typiclust_kmeans_is_seeded_and_separates_blobs():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal((30, 4)) * 0.1 + m for m in (0, 5, 10)]).astype(np.float32)
    a = typiclust_kmeans(x, np.arange(90), 3, np.random.default_rng(3))
    b = typiclust_kmeans(x, np.arange(90), 3, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert all(len(set(a[i * 30:(i + 1) * 30])) == 1 for i in range(3)) and len(set(a)) == 3
    # fitted on a subsample, then all assigned
    c = typiclust_kmeans(x, np.arange(90), 3, np.random.default_rng(3), points_per_centroid=5)
    assert all(len(set(c[i * 30:(i + 1) * 30])) == 1 for i in range(3))


def _counting_kmeans(monkeypatch):
    calls = []
    real = typiclust_engine.typiclust_kmeans

    def counted(*args, **kwargs):
        calls.append(args[2])   # n_clusters
        return real(*args, **kwargs)

    monkeypatch.setattr(typiclust_engine, "typiclust_kmeans", counted)
    return calls


def test_typiclust_reuses_the_run_clustering_only_while_k_and_rows_stay(monkeypatch):
    """With a run cache, a second round with the same K and clustered rows reuses the first
    round's k-means (and picks as a one-off call with that round's rng would); a new K, or
    ``reuse_clusters=False``, or no cache, clusters again."""
    calls = _counting_kmeans(monkeypatch)
    pool, _ = gaussian_pool(seed=3, n=300, n_labeled=20)
    cache = StrategyCache(pool.features)
    first = select(replace(pool, cache=cache), "typiclust", 10, 5)      # K = 20 + 10 = 30
    assert calls == [30]
    np.testing.assert_array_equal(first, select(pool, "typiclust", 10, 5))   # no cache: same picks
    assert calls == [30, 30]
    labels = pool.labels.copy()
    labels[first] = 0
    later = replace(pool, labeled=labels >= 0, labels=labels, cache=cache)
    select(later, "typiclust", 0 + 10, 6)   # K = 40: a new clustering
    assert calls == [30, 30, 40]
    select(later, "typiclust", 10, 7)       # same K, same rows: reused
    assert calls == [30, 30, 40]
    select(later, lambda p, b, r: typiclust(p, b, r, reuse_clusters=False), 10, 7)
    assert calls == [30, 30, 40, 40]
    held = later.held_out.copy()
    held[np.flatnonzero(~later.labeled)[:5]] = True   # other clustered rows
    select(replace(later, held_out=held), "typiclust", 10, 7)
    assert calls == [30, 30, 40, 40, 40]


def test_loop_clusters_once_per_typiclust_run_when_k_is_capped(monkeypatch):
    from alkit.loop import run_active_learning

    calls = _counting_kmeans(monkeypatch)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    x = (rng.standard_normal((3, 6))[y] * 3 + rng.standard_normal((400, 6))).astype(np.float32)
    run = run_active_learning(x, y, x[:60], y[:60], 3, lambda p, b, r: typiclust(p, b, r, max_clusters=25), seed=0,
                              initial_size=20, round_budget=10, rounds=3, progress=False)
    assert calls == [25]                       # K = min(|L| + b, 25) = 25 in every round
    assert len(run.picks) == 4 and len(np.unique(np.concatenate(run.picks))) == 50


# ----------------------------------------------------------------------------- faiss neighbour lists
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


# ----------------------------------------------------------------------------- mutation-audit survivor
def test_typiclust_skips_clusters_of_exactly_the_minimum_size():
    """Mutant: TypiClust keeps clusters of exactly 5 points (it drops those of ≤ 5)."""
    rng = np.random.default_rng(3)
    centres = [np.array([100.0 * i, 0.0]) for i in range(5)]
    sizes = [6, 6, 6, 6, 5]
    x = np.concatenate([c + rng.normal(scale=0.5, size=(s, 2)) for c, s in zip(centres, sizes)]).astype(np.float32)
    blob = np.repeat(np.arange(5), sizes)
    n = x.shape[0]
    pool = PoolState(features=x, labeled=np.zeros(n, bool), held_out=np.zeros(n, bool),
                     labels=np.full(n, -1, np.int64), num_classes=2)
    picks = select(pool, "typiclust", 5, 0)   # 5 picks: 5 clusters, the 5 blobs
    assert set(blob[picks].tolist()) == {0, 1, 2, 3}   # every cluster of 6, twice one of them; none of the 5
