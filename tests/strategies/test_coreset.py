"""Coreset: k-center greedy (alkit/strategies/coreset.py and its engine, _coreset_engine.py).

Hand-made cases on a line, then the fast engines (one pass per pick, lazy, eager; pivot bounds,
small top sets, near ties, duplicates, float16 memory maps, streamed rows) held to the plain
``k_center_greedy_reference`` pick for pick; the engine choice and its one report; the
nearest-centre merge; the lazy state carried across an active-learning run's rounds; and which
points are centres (a mutation-audit survivor, see tests/test_survivors.py).
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from alkit.pool import PoolState
from alkit.strategies import select
from alkit.strategies.coreset import coreset_centers, k_center_greedy, k_center_greedy_reference, merge_nearest
from strategy_pools import random_features


#: The lazy engine, whatever the default chooses for a pool this small (the pass engine).
lazy_k_center_greedy = partial(k_center_greedy, lazy=True)


@pytest.mark.parametrize("lazy", [None, True, False])
def test_k_center_greedy_on_a_line(lazy):
    # 1-D points; labelled centre at 0.  Farthest first: 15, then 7 (min(7, 8)), then 3 (min(3, 4)) …
    x = np.array([[0.0], [1.0], [3.0], [7.0], [15.0], [10.0]], np.float32)
    picks = k_center_greedy(x, [0], [1, 2, 3, 4, 5], 3, np.random.default_rng(0), lazy=lazy)
    assert picks.tolist() == [4, 3, 2]
    assert k_center_greedy_reference(x, [0], [1, 2, 3, 4, 5], 3, np.random.default_rng(0)).tolist() == [4, 3, 2]


@pytest.mark.parametrize("lazy", [None, True, False])
def test_k_center_greedy_without_centres_starts_at_a_random_candidate(lazy):
    x = np.arange(20, dtype=np.float32)[:, None] ** 1.5
    cand = np.arange(3, 20)
    first = cand[np.random.default_rng(5).integers(cand.size)]
    picks = k_center_greedy(x, [], cand, 4, np.random.default_rng(5), lazy=lazy)
    assert picks[0] == first
    # then the farthest from it: one of the two ends
    far = cand[np.argmax(np.abs(x[cand, 0] - x[first, 0]))]
    assert picks[1] == far


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_center_greedy_fast_equals_reference(seed, dtype, tmp_path):
    rng = np.random.default_rng(seed)
    n, d = 500, 24
    x = random_features(rng, n, d, dtype, tmp_path)
    perm = rng.permutation(n)
    n_cent = [0, 7, 150][seed]
    cent, cand = perm[:n_cent], perm[n_cent:]
    fast = lazy_k_center_greedy(x, cent, cand, 40, np.random.default_rng(seed), chunk_rows=61, center_block=17)
    ref = k_center_greedy_reference(x, cent, cand, 40, np.random.default_rng(seed))
    np.testing.assert_array_equal(fast, ref)


def test_k_center_greedy_streams_when_the_cache_is_too_small():
    rng = np.random.default_rng(3)
    x = random_features(rng, 300, 16, np.float32)
    fast = lazy_k_center_greedy(x, np.arange(20), np.arange(20, 300), 25, rng, chunk_rows=50, cache_bytes=0)
    ref = k_center_greedy_reference(x, np.arange(20), np.arange(20, 300), 25, rng)
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("lazy", [None, True, False])
def test_k_center_greedy_with_duplicate_points_stays_valid(lazy):
    x = np.zeros((30, 4), np.float32)
    x[10:] = 1.0
    picks = k_center_greedy(x, [0], np.arange(1, 30), 29, np.random.default_rng(0), lazy=lazy)
    assert sorted(picks.tolist()) == list(range(1, 30))
    assert picks[0] == 10  # the first point at distance 1 (first index on an exact tie)


@pytest.mark.parametrize("lazy,eager_centers", [(True, None), (True, 0), (True, 3), (False, None)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("masked_min_rows,runner_up_entries", [(1, 0), (10**9, 0), (10**9, 10**9)])
def test_k_center_greedy_lazy_and_eager_equal_the_reference(lazy, eager_centers, dtype, masked_min_rows,
                                                            runner_up_entries, tmp_path, monkeypatch):
    # Lazy refreshes (every labelled centre pending, a few compared up front, or all up front) and
    # the eager pass-per-pick version must all take the reference's picks, in its order; the two
    # nearest centres per row by two reductions (every block) or by topk (none), or runner-ups
    # not tracked (near ties then re-ranked against every centre).
    import alkit.strategies._coreset_engine as engine

    monkeypatch.setattr(engine, "_MASKED_MIN_ROWS", masked_min_rows)
    monkeypatch.setattr(engine, "RUNNER_UP_ENTRIES", runner_up_entries)
    rng = np.random.default_rng(11)
    x = random_features(rng, 700, 12, dtype, tmp_path)
    perm = rng.permutation(700)
    cent, cand = perm[:60], perm[60:]
    fast = k_center_greedy(x, cent, cand, 80, np.random.default_rng(2), chunk_rows=97, center_block=13,
                           lazy=lazy, eager_centers=eager_centers)
    ref = k_center_greedy_reference(x, cent, cand, 80, np.random.default_rng(2))
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("lazy", [True, False])
def test_k_center_greedy_centred_on_a_sampled_mean_equals_the_reference(lazy, monkeypatch, tmp_path):
    # Above CENTRE_SAMPLE_ROWS candidates the rows are centred on the mean of a strided sample:
    # another centre, the same distances, so the same picks (offset rows: centring matters).
    import alkit.strategies._coreset_engine as engine

    monkeypatch.setattr(engine, "CENTRE_SAMPLE_ROWS", 7)
    rng = np.random.default_rng(12)
    x = random_features(rng, 600, 10, np.float16, tmp_path) + np.float16(40)
    perm = rng.permutation(600)
    cent, cand = perm[:40], perm[40:]
    fast = k_center_greedy(x, cent, cand, 60, np.random.default_rng(3), chunk_rows=89, lazy=lazy)
    np.testing.assert_array_equal(fast, k_center_greedy_reference(x, cent, cand, 60, np.random.default_rng(3)))


@pytest.mark.parametrize("seed", range(40))
def test_pass_engine_equals_the_reference_with_ties_and_duplicates(seed):
    # The engine the default runs on small pools: rounded (tied) coordinates, repeated points,
    # large scales, no centres or many, any budget up to every candidate.
    from alkit.strategies._coreset_engine import choose_engine

    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(5, 200)), int(rng.choice([1, 3, 16]))
    x = rng.standard_normal((n, d)).astype(np.float32) * (1e3 if seed % 4 == 0 else 1.0)
    if seed % 2:
        x = np.round(x)
    if seed % 3 == 0:
        x[rng.integers(0, n, n // 3)] = x[0]
    perm = rng.permutation(n)
    n_cent = int(rng.integers(0, n // 2))
    cent, cand = perm[:n_cent], perm[n_cent:]
    k = int(rng.integers(1, cand.size + 1))
    assert choose_engine(cand.size, d, k, None) == "pass"
    reports = []
    fast = k_center_greedy(x, cent, cand, k, np.random.default_rng(seed), report=reports.append)
    assert [r.engine for r in reports] == ["pass"]
    np.testing.assert_array_equal(fast, k_center_greedy_reference(x, cent, cand, k, np.random.default_rng(seed)))


def test_engine_choice_by_size():
    from alkit.strategies._coreset_engine import PASS_ENGINE_ENTRIES, PASS_ENGINE_PICKS, PASS_ENGINE_WORK, choose_engine

    many = PASS_ENGINE_WORK // PASS_ENGINE_ENTRIES + 1   # picks enough that all passes cost more than the work bound
    assert many > PASS_ENGINE_PICKS
    assert choose_engine(PASS_ENGINE_ENTRIES // 64, 64, many, None) == "pass"
    assert choose_engine(PASS_ENGINE_ENTRIES // 64 + 1, 64, many, None) == "lazy"
    # Beyond the entries bound, passes that read at most PASS_ENGINE_WORK entries in all
    assert choose_engine(10_000, 512, PASS_ENGINE_WORK // (10_000 * 512), None) == "pass"
    assert choose_engine(10_000, 512, PASS_ENGINE_WORK // (10_000 * 512) + 1, None) == "lazy"
    assert choose_engine(10 ** 5, 2048, PASS_ENGINE_PICKS, None) == "pass"   # few picks: a pass each is cheaper
    assert choose_engine(10 ** 5, 2048, PASS_ENGINE_PICKS, None, cache_bytes=10 ** 8) == "lazy"   # rows must fit
    assert choose_engine(100, 64, 5, None, carry=True) == "lazy"   # a run's rounds carry their bounds
    assert choose_engine(10, 2, 5, True) == "lazy" and choose_engine(10 ** 7, 2048, 5, False) == "eager"


@pytest.mark.parametrize("lazy,k,engine", [(None, 12, "pass"), (True, 12, "lazy"), (False, 12, "eager"),
                                           (None, 0, "none")])
def test_k_center_greedy_reports_once_at_the_end(lazy, k, engine):
    from alkit.strategies._coreset_engine import CoresetStats, Counters

    x = random_features(np.random.default_rng(2), 300, 6, np.float32)
    cent, cand = np.arange(20), np.arange(20, 300)
    reports = []
    picks = k_center_greedy(x, cent, cand, k, np.random.default_rng(0), lazy=lazy, report=reports.append)
    np.testing.assert_array_equal(picks, k_center_greedy(x, cent, cand, k, np.random.default_rng(0), lazy=lazy))
    (stats,) = reports
    assert isinstance(stats, CoresetStats) and stats.engine == engine
    assert stats.setup_s >= 0 and stats.picks_s >= 0 and not stats.resumed
    assert (stats.cache_mode is None) == (engine in ("pass", "none"))
    assert stats.eager_centers <= cent.size and stats.pivots <= stats.eager_centers
    # every counter the engine keeps has a field of its own in the report
    assert set(vars(Counters())) <= set(vars(stats))


@pytest.mark.parametrize("top_rows", [1, 5, 64])
@pytest.mark.slow
def test_k_center_greedy_with_a_small_top_set_equals_the_reference(top_rows, monkeypatch):
    # The top set (candidates with the largest stored minima) is rebuilt often when small; the
    # picks must not depend on it.
    from alkit.strategies import _coreset_engine as coreset_engine

    monkeypatch.setattr(coreset_engine, "TOP_ROWS", top_rows)
    rng = np.random.default_rng(8)
    x = random_features(rng, 1600, 10, np.float32)   # more candidates than MAX_REFINE
    perm = rng.permutation(1600)
    for n_cent, eager in ((0, None), (40, 0), (40, None)):
        cent, cand = perm[:n_cent], perm[n_cent:]
        fast = lazy_k_center_greedy(x, cent, cand, 70, np.random.default_rng(1), eager_centers=eager)
        ref = k_center_greedy_reference(x, cent, cand, 70, np.random.default_rng(1))
        np.testing.assert_array_equal(fast, ref)


def test_k_center_greedy_lazy_with_duplicates_and_no_centres_equals_reference():
    rng = np.random.default_rng(4)
    x = np.repeat(rng.standard_normal((40, 6)).astype(np.float32), 3, axis=0)   # every point three times
    for eager in (0, None):
        fast = k_center_greedy(x, [], np.arange(120), 60, np.random.default_rng(9), lazy=True, eager_centers=eager)
        ref = k_center_greedy_reference(x, [], np.arange(120), 60, np.random.default_rng(9))
        np.testing.assert_array_equal(fast, ref)


@pytest.mark.slow
def test_k_center_greedy_lazy_refreshes_few_rows_on_clustered_data():
    # 30 tight, far-apart clusters: a new centre lowers the minima of its own cluster only, so the
    # lazy version must get by without a full pass and refresh far fewer rows than k passes would.
    rng = np.random.default_rng(0)
    means = rng.standard_normal((30, 16)) * 50
    x = (means[rng.integers(0, 30, 3000)] + rng.standard_normal((3000, 16))).astype(np.float32)
    reports = []
    fast = lazy_k_center_greedy(x, np.arange(10), np.arange(10, 3000), 100, np.random.default_rng(0),
                                report=reports.append)
    np.testing.assert_array_equal(fast, k_center_greedy_reference(x, np.arange(10), np.arange(10, 3000), 100,
                                                                  np.random.default_rng(0)))
    (stats,) = reports
    assert stats.full_passes == 0
    assert stats.refreshed_rows < 100 * 2990 / 20


@pytest.mark.parametrize("runner_ups", [True, False])
@pytest.mark.parametrize("masked_min_rows", [1, 10**9])
def test_nearest_two_centres_per_row_equal_a_full_sort(masked_min_rows, runner_ups, monkeypatch):
    """KCenterState.nearest: per row the smallest squared distance over centres c0:c1, a centre
    attaining it and the second smallest (by two reductions or by topk, over blocks of centres);
    without runner-ups the smallest again, so that no near tie is ruled out."""
    import alkit.strategies._coreset_engine as engine

    monkeypatch.setattr(engine, "_MASKED_MIN_ROWS", masked_min_rows)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    x[5] = x[6]   # a duplicated centre: its distance is both the min and the runner-up of some rows
    state = engine.set_up(x, np.arange(40, 400), np.arange(40), 5, chunk_rows=64, center_block=7,
                          cache_bytes=1 << 30, device=None, lazy=True, eager_centers=0, pivot_bounds=False, carry=None)
    state.runner_ups = runner_ups
    rows = torch.arange(0, 360, 3)
    block, block_sq = state.store.rows(rows.numpy()), state.sq[rows]
    for c0, c1 in ((0, 40), (3, 11), (9, 10)):
        low, arg, second = state.nearest(block, block_sq, c0, c1)
        full = block_sq[:, None] + state.center_sq[None, c0:c1] - 2.0 * block @ state.centers[c0:c1].T
        ordered = torch.sort(full, dim=1).values
        torch.testing.assert_close(low, ordered[:, 0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(full.gather(1, (arg - c0)[:, None])[:, 0], low, rtol=1e-5, atol=1e-5)
        want = ordered[:, 1] if c1 - c0 > 1 else torch.full_like(low, float("inf"))
        if runner_ups:
            torch.testing.assert_close(second, want, rtol=1e-5, atol=1e-5)
        else:   # never above the true runner-up (so never rules a near tie out), never below the minimum
            assert bool((second <= want + 1e-4).all()) and bool((second >= low).all())


def test_merge_nearest_hand_cases():
    # (min, argmin, runner-up) per row; the runner-up is the best *other* centre.
    cur = (torch.tensor([1.0, 1.0, 1.0]), torch.tensor([3, 3, 3]), torch.tensor([5.0, 5.0, 5.0]))
    found = (torch.tensor([0.5, 2.0, 1.0]), torch.tensor([7, 9, 3]), torch.tensor([2.0, 4.0, 4.0]))
    m, i, r = merge_nearest(cur, found)
    assert m.tolist() == [0.5, 1.0, 1.0]
    assert i.tolist() == [7, 3, 3]
    # row 0: new closer centre, old min becomes runner-up; row 1: new centre is the runner-up;
    # row 2: centre 3 met twice — counted once, so the runner-up is the other block's 4, not 1.
    assert r.tolist() == [1.0, 2.0, 4.0]


def test_merge_nearest_over_blocks_equals_the_whole_row():
    rng = np.random.default_rng(0)
    d = torch.from_numpy(rng.random((50, 40)).astype(np.float32))

    def summary(cols):
        v, j = torch.topk(d[:, cols], 2, dim=1, largest=False)
        return v[:, 0], torch.as_tensor(cols)[j[:, 0]], v[:, 1]

    cuts = [0, 7, 8, 23, 40]
    acc = summary(list(range(cuts[0], cuts[1])))
    for a, b in zip(cuts[1:-1], cuts[2:]):
        acc = merge_nearest(acc, summary(list(range(a, b))) if b - a > 1 else
                            (d[:, a], torch.full((50,), a), torch.full((50,), float("inf"))))
    whole = summary(list(range(40)))
    for got, want in zip(acc, whole):
        assert torch.equal(got, want)


@pytest.mark.parametrize("eager_centers", [None, 0, 2])
def test_k_center_greedy_near_ties_are_ranked_like_the_reference(eager_centers, monkeypatch):
    # Candidates at exactly equal float64 distance from the centres (signed unit vectors times 3
    # and 6, lengths jittered by < 1e-4, centres at the origin and far away): every pick is a near
    # tie that float32 cannot settle.  Each candidate's nearest centre is unique, so the float64
    # re-ranking needs one pair per candidate; the picks must still be the reference's.  (Runner-ups
    # tracked whatever the size, as on large pools.)
    import alkit.strategies._coreset_engine as engine

    monkeypatch.setattr(engine, "RUNNER_UP_ENTRIES", 0)
    dim = 12
    jitter = 1.0 + np.random.default_rng(5).uniform(0.0, 1e-4, (2 * dim, 1))
    axes = np.concatenate([np.eye(dim), -np.eye(dim)]) * 3.0 * jitter
    centres = np.array([[0.0] * dim, [40.0] * dim, [-40.0] * dim])
    x = np.concatenate([centres, axes, axes[::-1] * 2.0]).astype(np.float32)
    cent, cand = np.arange(3), np.arange(3, x.shape[0])
    reports = []
    fast = lazy_k_center_greedy(x, cent, cand, 30, np.random.default_rng(0), eager_centers=eager_centers,
                                report=reports.append)
    np.testing.assert_array_equal(fast, k_center_greedy_reference(x, cent, cand, 30, np.random.default_rng(0)))
    (stats,) = reports
    assert stats.refined > 0 and stats.lone_refined > 0


@pytest.mark.slow
@pytest.mark.parametrize("bfloat16", [True, False])
def test_k_center_greedy_pivot_bounds_cut_refreshes_and_keep_the_picks(bfloat16, monkeypatch):
    # 40 clusters, 400 labelled centres of which 16 become pivots: the pivot groups make most
    # starting bounds exact, so far fewer candidates are refreshed against the pending centres.
    # The nearest pivot from bfloat16 products (where the CPU has them) or float32 ones.
    import alkit.strategies._coreset_engine as engine

    if bfloat16 and not engine.fast_products_available("cpu"):
        pytest.skip("no native bfloat16 products on this CPU")
    monkeypatch.setattr(engine, "fast_products_available", lambda device: bfloat16)
    rng = np.random.default_rng(3)
    means = rng.standard_normal((40, 24)) * 6
    x = (means[rng.integers(0, 40, 6000)] + rng.standard_normal((6000, 24))).astype(np.float32)
    perm = rng.permutation(6000)
    cent, cand = perm[:400], perm[400:]
    ref = k_center_greedy_reference(x, cent, cand, 60, np.random.default_rng(0))
    rows = {}
    for pivots in (True, False):
        reports = []
        fast = lazy_k_center_greedy(x, cent, cand, 60, np.random.default_rng(0), eager_centers=16, pivot_bounds=pivots,
                                    report=reports.append)
        np.testing.assert_array_equal(fast, ref)
        (stats,) = reports
        assert stats.pivots == (16 if pivots else 0)
        rows[pivots] = stats.refreshed_rows
    assert rows[True] * 3 < rows[False]


@pytest.mark.parametrize("eager_centers", [None, 0, 16])
@pytest.mark.slow
def test_k_center_greedy_carried_across_rounds_equals_the_reference(eager_centers):
    # Rounds of an active-learning run: each round's picks become centres, a few held-out rows
    # leave the candidates.  Starting from the previous round's lazy state must give the
    # reference's picks, round after round (a resumed state that forgot the new centres would
    # pick points next to them).
    rng = np.random.default_rng(21)
    means = rng.standard_normal((12, 10)) * 4
    x = (means[rng.integers(0, 12, 1500)] + rng.standard_normal((1500, 10))).astype(np.float32)
    perm = rng.permutation(1500)
    cent, cand = np.sort(perm[:40]), np.sort(perm[40:])
    carry: dict = {}
    for round_ in range(4):
        reports = []
        fast = lazy_k_center_greedy(x, cent, cand, 50, np.random.default_rng(round_), eager_centers=eager_centers,
                                    carry=carry, report=reports.append)
        np.testing.assert_array_equal(fast, k_center_greedy_reference(x, cent, cand, 50, np.random.default_rng(round_)))
        assert [r.resumed for r in reports] == [round_ > 0]
        assert np.array_equal(carry["centre_ids"][-50:], fast) and np.array_equal(carry["cand"], cand)
        cent = np.sort(np.concatenate([cent, fast]))
        cand = np.setdiff1d(cand, np.concatenate([fast, cand[:3]]))   # three candidates leave too


def test_k_center_greedy_carry_is_not_used_when_it_does_not_apply():
    rng = np.random.default_rng(5)
    x = random_features(rng, 600, 8, np.float32)
    cent, cand = np.arange(30), np.arange(30, 600)

    def after_one_round():
        carry: dict = {}
        picks = lazy_k_center_greedy(x, cent, cand, 20, np.random.default_rng(0), carry=carry)
        return carry, picks

    cases = {
        "an earlier centre is no longer a centre": lambda picks: (x, np.concatenate([cent[1:], picks]),
                                                                   np.setdiff1d(cand, picks)),
        "a candidate that was not one": lambda picks: (x, np.concatenate([cent[1:], picks]),
                                                        np.concatenate([cent[:1], np.setdiff1d(cand, picks)])),
        "other features": lambda picks: (other, np.concatenate([cent, picks]), np.setdiff1d(cand, picks)),
    }
    other = x.copy()
    other[0] += 1.0   # the carry records a token of the features (shape, dtype, sampled rows), not the array
    for name, make in cases.items():
        carry, picks = after_one_round()
        feats, cent2, cand2 = make(picks)
        reports = []
        fast = lazy_k_center_greedy(feats, cent2, cand2, 20, np.random.default_rng(1), carry=carry,
                                    report=reports.append)
        assert [r.resumed for r in reports] == [False], name
        np.testing.assert_array_equal(fast, k_center_greedy_reference(feats, cent2, cand2, 20, np.random.default_rng(1)))
    # an equal copy of the features (a resumed run's, read again from disk) keeps the carry: same picks
    carry, picks = after_one_round()
    reports = []
    cent2, cand2 = np.concatenate([cent, picks]), np.setdiff1d(cand, picks)
    fast = lazy_k_center_greedy(x.copy(), cent2, cand2, 20, np.random.default_rng(1), carry=carry,
                                report=reports.append)
    assert [r.resumed for r in reports] == [True]
    np.testing.assert_array_equal(fast, k_center_greedy_reference(x, cent2, cand2, 20, np.random.default_rng(1)))


@pytest.mark.slow
def test_loop_carries_coreset_distances_with_the_same_picks():
    from alkit.loop import run_active_learning
    from alkit.strategies import coreset as coreset_module

    resumed = []
    real = coreset_module.k_center_greedy

    def spy(*args, **kwargs):
        kwargs["report"] = lambda stats: resumed.append(stats.resumed)
        return real(*args, **kwargs)

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 500)
    x = (rng.standard_normal((3, 6))[y] * 3 + rng.standard_normal((500, 6))).astype(np.float32)
    runs = {}
    for reuse in (True, False):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(coreset_module, "k_center_greedy", spy)
            runs[reuse] = run_active_learning(
                x, y, x[:60], y[:60], 3, lambda p, b, r: coreset_module.coreset(p, b, r, reuse_distances=reuse),
                seed=0, initial_size=20, round_budget=15, rounds=3, progress=False)
    assert resumed == [False, True, True, False, False, False]
    for a, b in zip(runs[True].picks, runs[False].picks):
        np.testing.assert_array_equal(a, b)


def test_coreset_centres_are_the_labelled_points_outside_validation():
    """Mutant: coreset's centres include validation points."""
    n = 12
    labeled = np.zeros(n, bool)
    labeled[[0, 3]] = True
    held = np.zeros(n, bool)
    held[[5, 6]] = True
    pool = PoolState(features=np.arange(n, dtype=np.float32)[:, None], labeled=labeled, held_out=held,
                     labels=np.where(labeled, 0, -1).astype(np.int64), num_classes=2)
    np.testing.assert_array_equal(coreset_centers(pool), [0, 3])
    # on a line 0 … 11 with centres 0 and 3, k-center greedy takes the farthest point, 11, then 7
    # (distance 4 to 3 and to 11); a validation point at 6 as a centre would make it 9 instead
    np.testing.assert_array_equal(np.sort(select(pool, "coreset", 2, 0)), [7, 11])
