"""Balancing (alkit/strategies/balancing.py and its engine, _balancing_engine.py).

The balancing-mode rule, hand-made picks near the rarest class (batch picks counted by their
predicted class), the random fallback without labels, the fast engine (class products kept or
streamed, float16 memory maps, moving majority classes, random shapes, constant features) held to
``balancing_reference`` pick for pick, and the engine's one report.
"""
from __future__ import annotations

import numpy as np
import pytest

from alkit import make_pool, select
from alkit.strategies.balancing import balancing_greedy, balancing_mode, balancing_reference
from strategy_pools import as_memmap, random_features


def test_balancing_mode_rule():
    assert not balancing_mode(np.zeros(5, int), 10)  # nothing labelled: no majority class
    assert balancing_mode(np.array([5, 1, 5]), 4)  # |m|·(5 − 1) = 4 ≥ 4
    assert not balancing_mode(np.array([5, 1, 5]), 5)
    assert not balancing_mode(np.array([3, 3, 3]), 1)


def test_balancing_picks_the_point_near_the_rarest_class():
    # class 0 labelled around (0, 0) ×5, class 2 around (0, 10) ×5, class 1 once at (10, 0)
    lab_x = [[0, 0], [0.1, 0], [0, 0.1], [-0.1, 0], [0, -0.1], [0, 10], [0.1, 10], [0, 10.1], [-0.1, 10], [0, 9.9],
             [10, 0]]
    lab_y = [0] * 5 + [2] * 5 + [1]
    cand_x = [[5, 5], [9, 0.5], [1, 1], [2, 9], [9.5, 9.5]]
    x = np.array(lab_x + cand_x, np.float32)
    lab = np.arange(11)
    picks = balancing_greedy(x, lab, np.array(lab_y), np.arange(11, 16), 3, 2, np.random.default_rng(0))
    assert picks[0] == 12  # (9, 0.5): nearest the rarest centre (10, 0), far from (0, 0) and (0, 10)
    # the same with the formula written out (nearest majority centre)
    mu = {0: x[:5].mean(0), 1: x[10], 2: x[5:10].mean(0)}
    cx = x[11:16].astype(np.float64)
    score = ((cx - mu[1]) ** 2).sum(1) / np.minimum(((cx - mu[0]) ** 2).sum(1), ((cx - mu[2]) ** 2).sum(1))
    assert 11 + int(np.argmin(score)) == picks[0]


def test_balancing_counts_batch_picks_by_prediction_not_truth():
    # After the first pick is predicted as the rarest class (1), class 1 is no longer rarest.
    x = np.array([[0, 0], [0, 10], [10, 0], [9, 0], [0.5, 9], [5, 5]], np.float32)
    labels = np.array([0, 2, 1])
    predicted = np.array([-1, -1, -1, 1, 2, 0])
    # counts (2, 1, 2)-like imbalance: label twice class 0 and class 2 via duplicated rows
    lab = np.array([0, 1, 2])
    picks = balancing_greedy(x, lab, labels, np.array([3, 4, 5]), 3, 3, np.random.default_rng(0), predicted)
    ref = balancing_reference(x, lab, labels, np.array([3, 4, 5]), 3, 3, np.random.default_rng(0), predicted)
    np.testing.assert_array_equal(picks, ref)


def test_balancing_without_labels_is_random():
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    cand = np.arange(50)
    picks = balancing_greedy(x, [], np.array([], int), cand, 4, 1, np.random.default_rng(7))
    assert picks[0] == cand[np.random.default_rng(7).integers(50)]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_balancing_fast_equals_reference(seed, dtype, tmp_path):
    rng = np.random.default_rng(seed)
    n, d, c = 400, 6, 6
    x = random_features(rng, n, d, dtype, tmp_path)
    perm = rng.permutation(n)
    n_lab = [0, 12, 60, 120][seed]
    lab, cand = perm[:n_lab], perm[n_lab:]
    lab_y = np.minimum(rng.geometric(0.35, n_lab) - 1, c - 1)  # long-tailed labelled counts
    predicted = rng.integers(0, c, n)
    for k in (15, 60):
        fast = balancing_greedy(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted, chunk_rows=47,
                                center_block=2)
        ref = balancing_reference(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted)
        np.testing.assert_array_equal(fast, ref)


def test_balancing_fast_equals_reference_in_a_long_balancing_run():
    rng = np.random.default_rng(9)
    n, d, c = 500, 5, 8
    x = random_features(rng, n, d, np.float32)
    lab, cand = np.arange(80), np.arange(80, n)
    lab_y = np.where(np.arange(80) < 60, 0, np.arange(80) % 3 + 1)  # one big class, a few small ones
    predicted = rng.integers(0, c, n)
    counts = np.bincount(lab_y, minlength=c)
    assert balancing_mode(counts, 50)  # every step of this run starts in balancing mode
    fast = balancing_greedy(x, lab, lab_y, cand, c, 50, np.random.default_rng(0), predicted, chunk_rows=64)
    ref = balancing_reference(x, lab, lab_y, cand, c, 50, np.random.default_rng(0), predicted)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("gram", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_balancing_fast_equals_reference_while_majority_classes_move(seed, gram, tmp_path):
    # Clustered rows, long-tailed labels, random predictions: batch picks move majority centres,
    # make classes join and leave the majority set and change the rarest class, in both the
    # G = Z·Sᵀ path (stale rows of G recomputed) and the streamed path.
    rng = np.random.default_rng(seed)
    n, d, c = 900, 7, 12
    y = rng.integers(0, c, n)
    x = (3 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) + 2.0).astype(np.float32)
    if seed == 2:
        x = as_memmap(x.astype(np.float16), tmp_path)
    perm = rng.permutation(n)
    lab, cand = perm[:160], perm[160:]
    lab_y = np.minimum(rng.geometric(0.25, lab.size) - 1, c - 1)
    predicted = rng.integers(0, c, n)
    k = 150
    reports = []
    fast = balancing_greedy(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted, chunk_rows=64,
                            center_block=5, gram=gram, report=reports.append)
    ref = balancing_reference(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted)
    np.testing.assert_array_equal(fast, ref)
    # the run did exercise what it claims: many balancing steps, majority set and centres changing
    counts, majors, moved = np.bincount(lab_y, minlength=c), set(), 0
    for step, row in enumerate(ref):
        if balancing_mode(counts, k - step):
            major = counts > counts.mean()
            majors.add(tuple(np.flatnonzero(major)))
            moved += bool(major[predicted[row]])
        counts[predicted[row]] += 1
    (stats,) = reports
    assert stats.balancing_steps >= 40 and len(majors) >= 3 and moved >= 3
    assert (stats.gram_flushes > 0) == gram


def test_balancing_keeps_class_products_by_default_only_with_as_many_picks_as_classes():
    # Building G costs about a pass per class and saves about a pass per balancing step: the
    # default keeps it when picks ≥ classes (and it fits the cache), else streams.
    rng = np.random.default_rng(0)
    n, d, c = 600, 6, 20
    x = rng.standard_normal((n, d)).astype(np.float32)
    lab = np.arange(60)
    lab_y = np.minimum(rng.geometric(0.3, 60) - 1, c - 1)   # imbalanced: balancing steps from the start
    cand = np.arange(60, n)
    for k, cache, kept in ((40, None, True), (15, None, False), (40, cand.size * c * 8 - 1, False)):
        reports = []
        kwargs = {} if cache is None else {"cache_bytes": cache}
        fast = balancing_greedy(x, lab, lab_y, cand, c, k, np.random.default_rng(0), rng.integers(0, c, n),
                                report=reports.append, **kwargs)
        (stats,) = reports
        assert stats.balancing_steps > 0
        assert (stats.gram_rows > 0) == kept, (k, cache)
        assert fast.size == k


@pytest.mark.parametrize("seed", range(8))
def test_balancing_fast_equals_reference_on_random_shapes(seed, tmp_path):
    # Random sizes, dimensions, class counts, budgets and labelled sets; both paths (G kept and
    # streamed), with and without near-tie re-ranking inputs (rounded rows: exact ties), float16
    # memory maps, predictions as a table, a function, with unknown (-1) classes, or none.
    rng = np.random.default_rng(100 + seed)
    n, d, c = int(rng.integers(40, 400)), int(rng.integers(1, 9)), int(rng.integers(2, 12))
    y = rng.integers(0, c, n)
    x = (rng.uniform(0, 3) * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) + 2.0).astype(np.float32)
    if seed % 3 == 1:
        x = np.round(x)
    if seed % 4 == 2:
        x = as_memmap(x.astype(np.float16), tmp_path)
    perm = rng.permutation(n)
    n_lab = int(rng.integers(0, n // 2))
    lab, cand = perm[:n_lab], perm[n_lab:]
    lab_y = np.minimum(rng.geometric(rng.uniform(0.2, 0.6), n_lab) - 1, c - 1)
    table = np.where(rng.random(n) < 0.1, -1, rng.integers(0, c, n))
    predicted = [None, table, lambda rows: table[rows]][seed % 3]
    k = int(rng.integers(1, cand.size + 1))
    ref = balancing_reference(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted)
    for gram in (True, False):
        fast = balancing_greedy(x, lab, lab_y, cand, c, k, np.random.default_rng(seed), predicted,
                                chunk_rows=int(rng.integers(5, 100)), center_block=int(rng.integers(1, 4)), gram=gram)
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("gram", [True, False])
def test_balancing_centred_on_a_sampled_mean_equals_the_reference(gram, monkeypatch):
    # Above CENTRE_SAMPLE_ROWS candidates the rows are centred on a strided sample's mean.
    import alkit.strategies._balancing_engine as engine

    monkeypatch.setattr(engine, "CENTRE_SAMPLE_ROWS", 5)
    rng = np.random.default_rng(7)
    n, d, c = 300, 6, 5
    y = rng.integers(0, c, n)
    x = (2.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d)) + 30.0).astype(np.float32)
    perm = rng.permutation(n)
    lab, cand = perm[:40], perm[40:]
    lab_y = np.minimum(rng.geometric(0.4, 40) - 1, c - 1)
    ref = balancing_reference(x, lab, lab_y, cand, c, 50, np.random.default_rng(1), y)
    fast = balancing_greedy(x, lab, lab_y, cand, c, 50, np.random.default_rng(1), y, chunk_rows=37, gram=gram)
    np.testing.assert_array_equal(fast, ref)


def test_balancing_reports_its_steps_once_at_the_end():
    from alkit.strategies.balancing import BalancingStats

    rng = np.random.default_rng(4)
    x = random_features(rng, 300, 5, np.float32)
    lab, cand = np.arange(40), np.arange(40, 300)
    lab_y = np.minimum(rng.geometric(0.4, 40) - 1, 5)
    for k in (0, 30):
        reports = []
        picks = balancing_greedy(x, lab, lab_y, cand, 6, k, np.random.default_rng(0), rng.integers(0, 6, 300),
                                 gram=False, report=reports.append)
        (stats,) = reports
        assert isinstance(stats, BalancingStats) and picks.size == k
        assert stats.balancing_steps + stats.random_steps == k
        # streamed path: the set-up pass plus at least one distance pass per balancing step's new centres
        assert (stats.full_passes > 0) == (stats.balancing_steps > 0) and stats.gram_rows == 0


def test_balancing_on_constant_features_matches_the_reference():
    from alkit.strategies.balancing import balancing_greedy, balancing_reference

    x = np.ones((60, 4), np.float32)
    labels = np.full(60, -1)
    labels[:10], labels[10:12], labels[12] = 0, 1, 2
    picks = select(make_pool(x, labels, 3), "balancing", 5, 0)
    assert np.unique(picks).size == 5
    lab, cand = np.arange(13), np.arange(13, 60)
    expected = balancing_reference(x, lab, labels[:13], cand, 3, 5, np.random.default_rng(0))
    for gram in (True, False):
        for tie_rtol in (1e-5, 0.0):
            got = balancing_greedy(x, lab, labels[:13], cand, 3, 5, np.random.default_rng(0), gram=gram,
                                   tie_rtol=tie_rtol)
            np.testing.assert_array_equal(got, expected)


def test_streamed_balancing_never_copies_more_than_a_chunk(monkeypatch):
    # Streamed rows (the cache too small) are copied to float32 one chunk at a time: the numerator's
    # one-class pass once asked for 2²⁴ rows, a 10 GB copy per step at 1.28 M.
    from alkit.strategies._dense import RowStore

    rng = np.random.default_rng(3)
    n, d, c = 600, 5, 4
    x = rng.standard_normal((n, d)).astype(np.float32)
    perm = rng.permutation(n)
    lab, cand = perm[:40], perm[40:]
    lab_y = np.minimum(rng.geometric(0.4, 40) - 1, c - 1)
    predicted = rng.integers(0, c, n)
    largest = []
    chunks = RowStore.chunks

    def spy(self, chunk_rows=None):
        for start, stop, rows in chunks(self, chunk_rows):
            largest.append(rows.shape[0])
            yield start, stop, rows

    monkeypatch.setattr(RowStore, "chunks", spy)
    fast = balancing_greedy(x, lab, lab_y, cand, c, 30, np.random.default_rng(0), predicted, chunk_rows=50,
                            cache_bytes=0, gram=False)
    np.testing.assert_array_equal(fast, balancing_reference(x, lab, lab_y, cand, c, 30, np.random.default_rng(0),
                                                            predicted))
    assert largest and max(largest) <= 50


@pytest.mark.parametrize("seed_rows", [1, 16])
@pytest.mark.parametrize("rounded", [False, True])
def test_lazy_denominator_rescores_few_rows_and_keeps_the_reference_picks(rounded, seed_rows, monkeypatch):
    # A pool large enough that a step rescores a few rows against the majority, not all of them
    # (the bounds at work), while picks predicted as majority classes keep moving their centres
    # and the mean's rise keeps moving classes out of the majority; with rows on a grid (exact
    # ties) the near-tie re-ranking must still see every tied row.  One seed row leaves the
    # search for the lowest row to the bounds alone.
    from alkit.strategies import _balancing_engine

    monkeypatch.setattr(_balancing_engine, "_SEED_ROWS", seed_rows)
    rng = np.random.default_rng(31)
    n, d, c = 3000, 4, 12
    y = rng.integers(0, c, n)
    x = (2.5 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))).astype(np.float32)
    if rounded:
        x = np.round(2 * x) / 2
    lab, cand = np.arange(300), np.arange(300, n)
    lab_y = np.minimum(rng.geometric(0.2, lab.size) - 1, c - 1)
    predicted = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(0, c, n))  # mostly big classes
    k = 400
    ref = balancing_reference(x, lab, lab_y, cand, c, k, np.random.default_rng(1), predicted)
    for gram in (True, False):
        reports = []
        fast = balancing_greedy(x, lab, lab_y, cand, c, k, np.random.default_rng(1), predicted, chunk_rows=256,
                                gram=gram, report=reports.append)
        np.testing.assert_array_equal(fast, ref)
        (stats,) = reports
        assert stats.balancing_steps >= 200
        assert stats.full_passes <= stats.balancing_steps // 4, stats       # not a pass per step
        assert 0 < stats.rows_rescored < stats.balancing_steps * n // 20, stats  # a few rows per step


@pytest.mark.parametrize("seed", [0, 1])
def test_lazy_denominator_bounds_never_fall_below_the_true_distance(seed):
    # The invariant the lazy denominator rests on, checked row by row before every balancing step:
    # (bound + how far the row's class moved since)² ≥ the float64 distance² to the nearest
    # majority centre now (∞ where the class left the majority); and the lower bounds on the
    # scores that it keeps from step to step stay below the float64 scores.
    import torch

    from alkit.strategies import _balancing_engine as engine
    from alkit.strategies._dense import sqdist64

    rng = np.random.default_rng(50 + seed)
    n, d, c = 2500, 5, 10
    y = rng.integers(0, c, n)
    x = (2.0 * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))).astype(np.float32)
    lab, cand = np.arange(250), np.arange(250, n)
    lab_y = np.minimum(rng.geometric(0.25, lab.size) - 1, c - 1)
    predicted = np.where(rng.random(n) < 0.7, rng.integers(0, 3, n), rng.integers(0, c, n))
    s = engine._start(x, lab, lab_y, cand, c, use_gram=False, chunk_rows=128, center_block=4, cache_bytes=1 << 30,
                      device=None, tie_rtol=engine.TIE_RTOL)
    k, checked, rescored = 300, 0, 0
    for step in range(k):
        if not engine._is_balancing_step(s.counts, k - step):
            engine._take(s, engine._random_pick(s, np.random.default_rng(step)), predicted)
            continue
        majors = np.flatnonzero(s.counts > s.counts.mean())
        true = sqdist64(x[cand].astype(np.float64), s.sums[majors] / s.counts[majors, None]).min(axis=1)
        if s.geo is not None and s.geo.bound is not None:
            hi = engine._upper_bounds(s, s.geo, majors, torch.arange(cand.size)).numpy()
            assert np.all(hi >= true * (1 - 1e-9)), step
            checked += 1
        before = s.rows_rescored
        j = engine._balanced_pick(s)
        rescored += s.rows_rescored > before
        # and the step's lower bounds on the scores, kept from step to step, hold
        r = int(np.argmin(s.counts))
        num = sqdist64(x[cand].astype(np.float64), (s.sums[r] / s.counts[r])[None])[:, 0] if s.counts[r] else 1.0
        if s.geo.low is not None:
            free = s.avail.numpy()
            assert np.all(s.geo.low.numpy()[free] <= (num / true)[free] * (1 + 1e-9)), step
        engine._take(s, j, predicted)
    assert checked >= 100 and rescored >= 50
