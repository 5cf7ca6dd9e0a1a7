"""ProbCover (alkit/strategies/probcover.py).

The greedy max-coverage picks (the max-degree point first, labelled balls covered, ties drawn
uniformly or taken first), the row cache, δ and the δ-graph shared by the runs on one feature
matrix; then the δ-graph built by faiss (CPU) or torch (as on a GPU) against the float64
definition ``delta_graph_reference`` (pairs exactly δ apart are no edge), against the previous
float32 build away from float ties, its edge limit, and the estimated δ's pure balls.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit import make_pool, select
from alkit.pool import StrategyCache
from alkit.strategies import probcover as probcover_module
from alkit.strategies._dense import sqdist64
from alkit.strategies._kmeans import lloyd_kmeans
from alkit.strategies.probcover import (
    delta_graph, delta_graph_reference, estimate_delta, max_coverage_greedy, normalised_store,
)
from strategy_pools import unit_rows


def test_probcover_first_pick_is_the_max_degree_point():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 3)).astype(np.float32)
    pool = make_pool(x, np.full(120, -1), 3)
    delta = 0.5
    picks = select(pool, lambda p, b, r: __import__("alkit").strategies.probcover.probcover(p, b, r, delta=delta), 3, 0)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    adj = np.linalg.norm(u[:, None] - u[None], axis=-1) < delta
    assert adj.sum(1)[picks[0]] == adj.sum(1).max()
    # the second pick covers the most points not covered by the first
    uncovered = ~adj[picks[0]]
    gain = (adj & uncovered[None, :]).sum(1)
    gain[picks[0]] = -1
    assert gain[picks[1]] == gain.max()


def test_probcover_labelled_balls_start_covered():
    x = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1], [0.01, 1], [-1, 0]], np.float32)
    labels = np.array([0, -1, -1, -1, -1, -1])
    pool = make_pool(x, labels, 2)
    fn = __import__("alkit").strategies.probcover.probcover
    for seed in range(6):
        picks = select(pool, lambda p, b, r: fn(p, b, r, delta=0.1), 2, seed)
        assert picks[0] in (3, 4)  # points 1, 2 are covered by labelled 0: the (3, 4) pair is worth most
        assert picks[1] == 5
    picks = select(pool, lambda p, b, r: fn(p, b, r, delta=0.1, ties="first"), 2, 0)
    np.testing.assert_array_equal(picks, [3, 5])   # the authors' argmax: lowest index of the tie


def test_probcover_ties_are_uniform_not_storage_order():
    """Isolated points (every gain 1): "random" draws uniformly, "first" takes the lowest indices,
    which on a class-sorted pool means one class per batch."""
    fn = __import__("alkit").strategies.probcover.probcover
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 8)).astype(np.float32)
    pool = make_pool(x, np.full(10, -1), 2)
    first = [select(pool, lambda p, b, r: fn(p, b, r, delta=1e-3), 1, s)[0] for s in range(300)]
    counts = np.bincount(first, minlength=10)
    assert counts.min() >= 10 and counts.max() <= 55   # ~30 each under uniform draws
    np.testing.assert_array_equal(select(pool, lambda p, b, r: fn(p, b, r, delta=1e-3, ties="first"), 4, 0),
                                  [0, 1, 2, 3])
    with pytest.raises(ValueError, match="ties must be"):
        select(pool, lambda p, b, r: fn(p, b, r, delta=1e-3, ties="lowest"), 1, 0)


def test_probcover_row_cache_changes_memory_not_picks(monkeypatch):
    """``cache_bytes`` decides whether the normalised rows are kept or re-read per block pair (the
    1.28 M case needs 10.5 GB to keep them); the picks are the same either way."""
    fn = __import__("alkit").strategies.probcover.probcover
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    x = (rng.standard_normal((4, 16))[y] * 2 + rng.standard_normal((300, 16))).astype(np.float32)
    labels = np.full(300, -1)
    labels[:8] = y[:8]
    pool = make_pool(x, labels, 4)
    modes = []
    real = probcover_module.normalised_store
    monkeypatch.setattr(probcover_module, "normalised_store",
                        lambda *a, **k: modes.append(real(*a, **k)) or modes[-1])
    kept = select(pool, lambda p, b, r: fn(p, b, r, chunk_rows=64), 20, 0)
    reread = select(pool, lambda p, b, r: fn(p, b, r, chunk_rows=64, cache_bytes=0), 20, 0)
    np.testing.assert_array_equal(kept, reread)
    assert [m.mode for m in modes] == ["float32 cache", "streamed"]
    with pytest.raises(ValueError, match="cache_bytes"):
        select(pool, lambda p, b, r: fn(p, b, r, cache_bytes=-1), 5, 0)


def test_probcover_row_cache_default_is_2_gib_on_the_cpu_and_half_the_free_memory_of_a_gpu(monkeypatch):
    assert probcover_module.row_cache_bytes(None, None) == probcover_module.row_cache_bytes(None, "cpu") == 2 * 1024**3
    assert probcover_module.row_cache_bytes(12345, "cuda") == 12345
    monkeypatch.setattr(probcover_module.torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 141 * 2**30))
    assert probcover_module.row_cache_bytes(None, "cuda:0") == 40 * 2**30


def test_delta_graph_and_purity_delta():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 4)).astype(np.float32)
    store = normalised_store(x, np.arange(90), chunk_rows=25)
    graph = delta_graph(store, 0.8, block_rows=16).toarray()
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = np.linalg.norm(u[:, None] - u[None], axis=-1)
    expected = dist < 0.8
    np.fill_diagonal(expected, True)
    np.testing.assert_array_equal(graph, expected)
    pseudo = (u[:, 0] > 0).astype(np.int64)
    delta = estimate_delta(store, pseudo, np.random.default_rng(0), alpha=0.9, sample=90)
    d_diff = np.where(pseudo[:, None] != pseudo[None, :], dist, np.inf).min(1)
    assert np.mean(d_diff >= delta - 1e-6) >= 0.9
    assert np.mean(d_diff >= delta + 1e-3) < 0.9 + 1.0 / 90
    with pytest.raises(ValueError, match="delta"):
        delta_graph(store, 2.0, max_edges=100)


def _probcover_on_rows(x, pool, budget, seed, delta):
    """Plain path: graph built on labelled ∪ eligible rows only, no cache."""
    relevant = np.flatnonzero(pool.labeled & ~pool.held_out | pool.eligible)
    graph = delta_graph(normalised_store(x, relevant), delta)
    eligible = pool.eligible[relevant]
    return relevant[max_coverage_greedy(graph, np.flatnonzero(~eligible), eligible, budget, np.random.default_rng(seed))]


def test_probcover_shared_graph_matches_a_graph_on_the_round_rows(monkeypatch):
    """δ and the graph are computed once on all rows and kept in the shared dict of the runs on
    these features; each round uses the induced subgraph, which must give the picks of a graph
    built on its labelled ∪ eligible rows alone."""
    builds = []
    real_build = probcover_module.delta_graph
    monkeypatch.setattr(probcover_module, "delta_graph", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    truth = rng.integers(0, 4, 400)
    delta = 0.6
    shared: dict = {}   # one per feature matrix, as a sweep keeps it
    fn = lambda p, b, g: probcover_module.probcover(p, b, g, delta=delta)  # noqa: E731
    for seed in range(3):   # different validation rows and labelled sets per seed, as in a sweep
        r = np.random.default_rng(100 + seed)
        held_out = r.random(400) < 0.1
        labels = np.where((r.random(400) < 0.05) & ~held_out, truth, -1)
        pool = make_pool(x, labels, 4, held_out=held_out)
        run = replace(pool, cache=StrategyCache(x, shared=shared))   # a new run: a new run dict
        picks = select(run, fn, 30, seed)
        np.testing.assert_array_equal(picks, _probcover_on_rows(x, pool, 30, seed, delta))
        assert not held_out[picks].any() and not pool.labeled[picks].any()
        np.testing.assert_array_equal(picks, select(pool, fn, 30, seed))   # no cache: built afresh, same picks
    assert len(builds) == 1 + 3   # one build for the three runs, one per call without a cache
    # other features, another shared dict: a new graph
    y = x.copy()
    y[7, 0] += 1.0
    select(replace(make_pool(y, np.full(400, -1), 4), cache=StrategyCache(y)), fn, 5, 0)
    assert len(builds) == 5


def test_probcover_delta_is_a_property_of_the_features():
    """Default δ: one estimate per feature matrix (seeded by delta_seed), whatever the round's rng;
    equal to the purity rule run on all rows with that seed."""
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((3, 6)) * 3
    x = (centres[rng.integers(0, 3, 300)] + rng.standard_normal((300, 6))).astype(np.float32)
    pool = make_pool(x, np.full(300, -1), 3)
    cache = StrategyCache(x)
    a = select(replace(pool, cache=cache), "probcover", 10, 0)

    def kept(key):
        return {k: v for k, v in cache.shared.items() if k[:2] == key}

    assert len(kept(probcover_module.DELTA_KEY)) == 1 and len(kept(probcover_module.GRAPH_KEY)) == 1
    assert not [k for k in cache.run if k[0] == "probcover"]   # nothing of ProbCover's is tied to the run
    (delta,) = kept(probcover_module.DELTA_KEY).values()
    seeded = np.random.default_rng(probcover_module.DELTA_SEED)
    pseudo = lloyd_kmeans(x, np.arange(300), 3, seeded, normalize=True)
    assert delta == estimate_delta(normalised_store(x, np.arange(300)), pseudo, seeded)
    select(replace(pool, cache=StrategyCache(x, shared=cache.shared)), "probcover", 10, 1)
    assert len(kept(probcover_module.DELTA_KEY)) == 1   # another seed, same δ
    np.testing.assert_array_equal(a, select(pool, "probcover", 10, 0))   # no cache: same picks


# ----------------------------------------------------------------------------- δ-graph searches
def previous_delta_graph(store, delta: float, block_rows: int = 2048) -> np.ndarray:
    """The float32 build the faiss path replaced (d² = 2 − 2 cos per chunk, self-loops added), dense."""
    n = store.n
    out = np.zeros((n, n), bool)
    for start, stop, rows in store.chunks(block_rows):
        for c0, c1, other in store.chunks():
            out[start:stop, c0:c1] = (2.0 - 2.0 * (rows @ other.T) < float(delta) ** 2).numpy()
    np.fill_diagonal(out, True)
    return out


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
