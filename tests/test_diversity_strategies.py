"""Diversity and hybrid strategies: hand-made cases and fast-vs-reference equality.

coreset / badge / balancing have a plain reference implementation each; the fast paths must
give the very same picks on random inputs (float32 and float16-memmap features, chunk sizes
smaller than N so chunking is exercised).
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from alkit import make_pool, select
from alkit.pool import StrategyCache
from alkit.strategies import _badge_engine as badge_engine
from alkit.strategies.badge import (
    BoundedD2Sampler,
    adaptive_pool_matrix,
    d2_draw,
    d2_probabilities,
    gradient_embedding,
    gradient_factor,
    kmeans_pp_gradient,
    kmeans_pp_reference,
)
from alkit.strategies.balancing import balancing_greedy, balancing_mode, balancing_reference
from alkit.strategies.cluster_margin import average_linkage_clusters, condensed_sqrt_distances, round_robin
from alkit.strategies.coreset import k_center_greedy, k_center_greedy_reference, merge_nearest
from alkit.strategies.partitioned import partition_pool, split_sizes
from alkit.strategies import probcover as probcover_module
from alkit.strategies.probcover import delta_graph, estimate_delta, max_coverage_greedy, normalised_store
from alkit.strategies import _typiclust_engine as typiclust_engine
from alkit.strategies._kmeans import cluster_sums, lloyd_kmeans
from alkit.strategies._typiclust_engine import typiclust_kmeans
from alkit.strategies.typiclust import typiclust, typicality, typiclust_reference

DIVERSITY = ["coreset", "badge", "partitioned_coreset", "partitioned_badge", "balancing", "margin_clustering",
             "typiclust", "probcover"]


def as_memmap(x: np.ndarray, tmp_path, name="f.npy") -> np.ndarray:
    path = tmp_path / name
    np.save(path, x)
    return np.load(path, mmap_mode="r")


def random_features(rng, n, d, dtype, tmp_path=None, offset=2.0):
    x = (rng.standard_normal((n, d)) + offset).astype(dtype)
    return as_memmap(x, tmp_path) if (tmp_path is not None and dtype == np.float16) else x


def gaussian_pool(seed=0, n=400, d=8, c=5, n_labeled=30, **kw):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = (rng.standard_normal((c, d))[y] * 3 + rng.standard_normal((n, d))).astype(np.float32)
    labels = np.full(n, -1)
    lab = rng.choice(n, n_labeled, replace=False)
    labels[lab] = y[lab]
    w = rng.standard_normal((c, d)).astype(np.float32) * 0.5
    return make_pool(x, labels, c, weight=w, bias=np.zeros(c, np.float32), **kw), y


# ----------------------------------------------------------------------------- coreset
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
def test_k_center_greedy_lazy_and_eager_equal_the_reference(lazy, eager_centers, dtype, tmp_path):
    # Lazy refreshes (every labelled centre pending, a few compared up front, or all up front) and
    # the eager pass-per-pick version must all take the reference's picks, in its order.
    rng = np.random.default_rng(11)
    x = random_features(rng, 700, 12, dtype, tmp_path)
    perm = rng.permutation(700)
    cent, cand = perm[:60], perm[60:]
    fast = k_center_greedy(x, cent, cand, 80, np.random.default_rng(2), chunk_rows=97, center_block=13,
                           lazy=lazy, eager_centers=eager_centers)
    ref = k_center_greedy_reference(x, cent, cand, 80, np.random.default_rng(2))
    np.testing.assert_array_equal(fast, ref)


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
    from alkit.strategies._coreset_engine import PASS_ENGINE_ENTRIES, PASS_ENGINE_PICKS, choose_engine

    many = PASS_ENGINE_PICKS + 1
    assert choose_engine(PASS_ENGINE_ENTRIES // 64, 64, many, None) == "pass"
    assert choose_engine(PASS_ENGINE_ENTRIES // 64 + 1, 64, many, None) == "lazy"
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
def test_k_center_greedy_near_ties_are_ranked_like_the_reference(eager_centers):
    # Candidates at exactly equal float64 distance from the centres (signed unit vectors times 3
    # and 6, lengths jittered by < 1e-4, centres at the origin and far away): every pick is a near
    # tie that float32 cannot settle.  Each candidate's nearest centre is unique, so the float64
    # re-ranking needs one pair per candidate; the picks must still be the reference's.
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
def test_k_center_greedy_pivot_bounds_cut_refreshes_and_keep_the_picks():
    # 40 clusters, 400 labelled centres of which 16 become pivots: the pivot groups make most
    # starting bounds exact, so far fewer candidates are refreshed against the pending centres.
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


# ----------------------------------------------------------------------------- BADGE
def test_gradient_embedding_is_the_last_layer_cross_entropy_gradient():
    rng = np.random.default_rng(0)
    n, d, c = 6, 5, 4
    z = rng.standard_normal((n, d))
    w, b = rng.standard_normal((c, d)), rng.standard_normal(c)
    logits = z @ w.T + b
    g = gradient_embedding(z, logits)
    for i in range(n):
        wt = torch.tensor(w, requires_grad=True)
        out = wt @ torch.tensor(z[i]) + torch.tensor(b)
        loss = torch.nn.functional.cross_entropy(out[None], out.argmax()[None], reduction="sum")
        (grad,) = torch.autograd.grad(loss, wt)
        np.testing.assert_allclose(g[i], grad.numpy().ravel(), rtol=1e-10, atol=1e-12)


def test_gradient_embedding_inner_product_identity():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 6))
    logits = rng.standard_normal((7, 9)) * 3
    g, r = gradient_embedding(z, logits), gradient_factor(logits)
    np.testing.assert_allclose(g @ g.T, (r @ r.T) * (z @ z.T), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((g * g).sum(1), (r * r).sum(1) * (z * z).sum(1), rtol=1e-12)


def test_kmeans_pp_d2_probabilities_on_a_hand_case():
    # Equal logits [0, 0]: p = (½, ½), ŷ = 0, r = (−½, ½), ‖r‖² = ½, so ‖g_i − g_j‖² = ½ (z_i − z_j)².
    z = np.array([[0.0], [1.0], [3.0], [10.0]], np.float32)
    logits = np.zeros((4, 2), np.float32)
    picks, d2 = kmeans_pp_gradient(z, logits, np.arange(4), 2, np.random.default_rng(0), return_d2=True)
    assert picks[0] == 3  # largest ‖g‖ = ‖r‖·|z| first
    np.testing.assert_allclose(d2, 0.5 * np.array([100.0, 81.0, 49.0, 0.0]), rtol=1e-6)
    chosen = np.array([False, False, False, True])
    np.testing.assert_allclose(d2_probabilities(d2, chosen), np.array([100, 81, 49, 0]) / 230, rtol=1e-6)
    # inverse CDF: cumulative weights 100, 181, 230 (× ½)
    assert d2_draw(d2, chosen, 0.40) == 0 and d2_draw(d2, chosen, 0.5) == 1 and d2_draw(d2, chosen, 0.99) == 2
    # the second pick is the draw of the generator's first uniform number
    u = np.random.default_rng(0).random()
    assert picks[1] == d2_draw(d2, chosen, u)


def test_d2_draw_is_uniform_over_free_points_when_all_weights_vanish():
    chosen = np.array([True, False, False, True, False])
    assert [d2_draw(np.zeros(5), chosen, u) for u in (0.0, 0.34, 0.67, 0.999)] == [1, 2, 4, 4]


def test_adaptive_pool_matrix_matches_torch():
    for length, out in [(10, 16), (2048, 32), (7, 3), (5, 5)]:
        x = torch.randn(3, 1, length, dtype=torch.float64)
        expected = torch.nn.functional.adaptive_avg_pool1d(x, out)[:, 0].numpy()
        np.testing.assert_allclose(x[:, 0].numpy() @ adaptive_pool_matrix(length, out), expected, rtol=1e-12)


def test_bounded_d2_sampler_inverse_cdf_on_a_hand_case():
    sampler = BoundedD2Sampler(np.array([1.0, 0.0, 3.0, 0.0, 4.0]), block=2)   # cumulative 1, 1, 4, 4, 8
    assert [sampler.propose(u) for u in (0.0, 0.12, 0.13, 0.49, 0.5, 0.999)] == [0, 0, 2, 2, 4, 4]
    sampler.set(4, 0.0)
    np.testing.assert_allclose(sampler.sums, [1.0, 3.0, 0.0])
    assert sampler.propose(0.99) == 2
    assert BoundedD2Sampler(np.zeros(4)).propose(0.5) is None


@pytest.mark.slow
def test_bounded_d2_sampler_draws_the_exact_d2_distribution_from_loose_bounds():
    # True weights v; bounds exceed them by a lot for some entries (stale), not at all for others,
    # including bounds > 0 over true weights 0.  Accepted draws must follow v / Σv, not the bounds.
    v = np.array([5.0, 0.0, 1.0, 3.0, 0.5, 0.0, 2.0, 4.0])
    slack = np.array([0.0, 6.0, 9.0, 0.0, 4.0, 0.0, 0.0, 7.0])
    rng = np.random.default_rng(123)
    n_draws = 20000
    counts = np.zeros(v.size)
    for _ in range(n_draws):
        sampler = BoundedD2Sampler(v + slack, block=3)
        j, _ = sampler.draw(rng, lambda i: slack[i] == 0.0, lambda i: v[i])
        counts[j] += 1
    p = v / v.sum()
    sigma = np.sqrt(p * (1 - p) / n_draws)
    assert np.all(np.abs(counts / n_draws - p) <= 5 * sigma + 1e-12), (counts / n_draws, p)
    # the same draws from the bounds themselves would be far off: the test can tell them apart
    q = (v + slack) / (v + slack).sum()
    assert np.max(np.abs(q - p) / np.maximum(sigma, 1e-3)) > 20


@pytest.mark.parametrize("mode", ["ash", "labelled"])
@pytest.mark.slow
def test_lazy_kmeans_pp_gradient_has_the_reference_joint_distribution(mode):
    # Joint law of the first two D²-drawn picks from 6 candidates against the explicit embeddings.
    rng = np.random.default_rng(7)
    n, d, c = 9, 3, 4
    x = rng.standard_normal((n, d)).astype(np.float32) + 0.3
    logits = (rng.standard_normal((n, c)) * 1.5).astype(np.float32)
    cent = np.array([0, 1, 2]) if mode == "labelled" else None
    cand = np.arange(3, 9)
    g = gradient_embedding(x.astype(np.float64), logits)
    k = 3 if mode == "ash" else 2      # ash: the first pick is the largest ‖g‖, then two draws
    chosen = np.zeros(cand.size, bool)
    if mode == "ash":
        first = int(np.argmax((g[cand] ** 2).sum(1)))
        chosen[first] = True
        centres = g[cand[[first]]]
    else:
        centres = g[cent]
    expected = {}
    d2_a = ((g[cand, None, :] - centres[None]) ** 2).sum(-1).min(1)
    for a, pa in enumerate(d2_probabilities(d2_a, chosen)):
        if pa == 0:
            continue
        chosen_a = chosen.copy()
        chosen_a[a] = True
        d2_b = np.minimum(d2_a, ((g[cand] - g[cand[a]]) ** 2).sum(1))
        for b, pb in enumerate(d2_probabilities(d2_b, chosen_a)):
            if pb > 0:
                expected[(a, b)] = pa * pb
    n_runs = 2000
    counts: dict = {}
    for seed in range(n_runs):
        picks = kmeans_pp_gradient(x, logits, cand, k, np.random.default_rng(seed), center_indices=cent, lazy=True)
        pos = tuple(int(np.flatnonzero(cand == p)[0]) for p in picks[-2:])
        counts[pos] = counts.get(pos, 0) + 1
    assert set(counts) <= set(expected)
    for key, p in expected.items():
        sigma = np.sqrt(p * (1 - p) / n_runs)
        assert abs(counts.get(key, 0) / n_runs - p) <= 5 * sigma + 1e-3, (key, counts.get(key, 0) / n_runs, p)


def test_lazy_kmeans_pp_gradient_falls_back_to_full_passes_and_stays_valid(monkeypatch, tmp_path):
    monkeypatch.setattr(badge_engine, "LAZY_MAX_TRIALS", 1)   # the engine reads it
    rng = np.random.default_rng(5)
    x = random_features(rng, 400, 8, np.float16, tmp_path, offset=0.5)
    logits = (rng.standard_normal((400, 5)) * 2).astype(np.float32)
    reports = []
    picks = kmeans_pp_gradient(x, logits, np.arange(400), 60, np.random.default_rng(0), lazy=True, cache_bytes=0,
                               chunk_rows=33, report=reports.append)
    assert picks.size == 60 and np.unique(picks).size == 60
    (stats,) = reports
    assert stats.lazy and stats.full_passes > 0 and stats.refreshes > 0


@pytest.mark.parametrize("lazy,k", [(False, 15), (True, 15), (False, 0)])
def test_kmeans_pp_gradient_reports_once_at_the_end(lazy, k):
    rng = np.random.default_rng(6)
    x = random_features(rng, 200, 8, np.float32, offset=0.5)
    logits = (rng.standard_normal((200, 5)) * 2).astype(np.float32)
    cand = np.arange(200)
    reports = []
    picks = kmeans_pp_gradient(x, logits, cand, k, np.random.default_rng(0), lazy=lazy, report=reports.append)
    np.testing.assert_array_equal(picks, kmeans_pp_gradient(x, logits, cand, k, np.random.default_rng(0), lazy=lazy))
    (stats,) = reports
    assert isinstance(stats, badge_engine.BadgeStats) and stats.lazy == (lazy and k > 0)
    assert stats.setup_s >= 0 and stats.picks_s >= 0
    stores = {"float32 cache", "native-dtype cache", "streamed"}
    assert (stats.z_cache in stores and stats.r_cache in stores) if k else (stats.z_cache is stats.r_cache is None)
    if not lazy:   # the counters are the lazy sampler's
        assert stats.rejections == stats.refreshes == stats.full_passes == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode", ["ash", "labelled", "empty"])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_pp_gradient_fast_equals_reference(seed, mode, dtype, tmp_path):
    rng = np.random.default_rng(seed)
    n, d, c = 240, 10, 6
    x = random_features(rng, n, d, dtype, tmp_path, offset=0.5)
    logits = (rng.standard_normal((n, c)) * 2).astype(np.float32)
    perm = rng.permutation(n)
    n_cent = {"ash": 0, "labelled": 40, "empty": 0}[mode]
    cent = None if mode == "ash" else perm[:n_cent]
    cand = perm[n_cent:]
    for shape in (None, (3, 4)):
        fast = kmeans_pp_gradient(x, logits, cand, 30, np.random.default_rng(seed), center_indices=cent,
                                  pool_shape=shape, chunk_rows=37, center_block=9)
        ref = kmeans_pp_reference(x, logits, cand, 30, np.random.default_rng(seed), center_indices=cent,
                                  pool_shape=shape)
        np.testing.assert_array_equal(fast, ref)


def test_kmeans_pp_gradient_d2_matches_explicit_embeddings():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((150, 7)).astype(np.float32)
    logits = rng.standard_normal((150, 5)).astype(np.float32)
    cand = np.arange(150)
    picks, d2 = kmeans_pp_gradient(x, logits, cand, 12, np.random.default_rng(1), chunk_rows=40, return_d2=True)
    g = gradient_embedding(x, logits)
    sq = ((g[:, None, :] - g[None, picks[:-1], :]) ** 2).sum(-1).min(axis=1)
    chosen = np.isin(cand, picks[:-1])
    np.testing.assert_allclose(d2_probabilities(d2, chosen), d2_probabilities(sq, chosen), rtol=1e-5, atol=1e-9)


def test_kmeans_pp_gradient_without_a_cache_recomputes_from_a_head():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    w, b = rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    head = lambda rows, feats: feats @ w.T + b  # noqa: E731
    fast = kmeans_pp_gradient(x, head, np.arange(200), 15, np.random.default_rng(0), chunk_rows=33, cache_bytes=0)
    ref = kmeans_pp_reference(x, x @ w.T + b, np.arange(200), 15, np.random.default_rng(0))
    np.testing.assert_array_equal(fast, ref)


# ----------------------------------------------------------------------------- partitioned
def test_split_sizes_and_partition_budgets():
    assert split_sizes(23, 10).tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    pool, _ = gaussian_pool(n=233, n_labeled=21)
    parts = partition_pool(pool, 23, np.random.default_rng(0), n_partitions=10)
    labs, eligs, budgets = zip(*parts)
    assert list(budgets) == split_sizes(23, 10).tolist()
    assert sorted(np.concatenate(eligs).tolist()) == pool.eligible_indices().tolist()
    assert sorted(np.concatenate(labs).tolist()) == pool.labeled_indices().tolist()
    assert [e.size for e in eligs] == split_sizes(pool.eligible.sum(), 10).tolist()


@pytest.mark.parametrize("name", ["partitioned_coreset", "partitioned_badge"])
def test_partitioned_variants_respect_partition_budgets(name):
    pool, _ = gaussian_pool(seed=1, n=300, n_labeled=40)
    budget = 27
    picks = select(pool, name, budget, 11)
    parts = partition_pool(pool, budget, np.random.default_rng(11), n_partitions=10)
    for lab, elig, b in parts:
        assert np.isin(picks, elig).sum() == b
    # each partition runs the base algorithm alone: k-center greedy on (L_i, U_i)
    if name == "partitioned_coreset":
        rng = np.random.default_rng(11)
        parts = partition_pool(pool, budget, rng, n_partitions=10)
        expected = np.concatenate([k_center_greedy(pool.features, lab, elig, b, rng) for lab, elig, b in parts if b])
        np.testing.assert_array_equal(picks, expected)


def test_partitioned_subsets_like_the_authors():
    pool, _ = gaussian_pool(n=300, n_labeled=40)
    parts = partition_pool(pool, 10, np.random.default_rng(0), n_partitions=4, subset_labeled=20, subset_unlabeled=50)
    assert sum(p[0].size for p in parts) == 20 and sum(p[1].size for p in parts) == 50
    picks = select(pool, lambda p, b, r: __import__("alkit").strategies.partitioned.partitioned_coreset(
        p, b, r, n_partitions=4, subset_labeled=20, subset_unlabeled=50), 10, 0)
    assert picks.size == 10


# ----------------------------------------------------------------------------- balancing
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


# ----------------------------------------------------------------------------- cluster-margin
def test_round_robin_from_the_smallest_cluster():
    clusters = np.array([0, 0, 0, 2, 2, 1, 1, 1, 1, 3])
    key = np.array([.3, .1, .2, .5, .4, .9, .8, .7, .6, 0])
    # sizes: 3→1, 2→2, 0→3, 1→4; each visit takes the cluster's lowest key
    assert round_robin(clusters, key, 10).tolist() == [9, 4, 1, 8, 3, 2, 7, 0, 6, 5]
    assert round_robin(clusters, key, 3).tolist() == [9, 4, 1]


def test_average_linkage_finds_separated_blobs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((20, 3)) * 0.1 + m for m in ([0, 0, 0], [10, 0, 0], [0, 10, 0])])
    ids = average_linkage_clusters(x, 3, rng)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == len(set(ids[40:])) == 1 and len(set(ids)) == 3
    from scipy.spatial.distance import pdist
    np.testing.assert_allclose(condensed_sqrt_distances(x, chunk_rows=7), pdist(x), rtol=1e-9, atol=1e-9)
    # capped: 25 points clustered, the rest assigned to the nearest cluster mean
    ids = average_linkage_clusters(x, 3, rng, max_points=25)
    assert len(set(ids[:20])) == len(set(ids[20:40])) == len(set(ids[40:])) == 1 and len(set(ids)) == 3


def test_margin_clustering_takes_candidates_among_the_lowest_margins():
    pool, _ = gaussian_pool(seed=2, n=300)
    from alkit.scores import margin_scores
    from alkit.strategies.uncertainty import score_eligible
    idx, margins = score_eligible(pool, margin_scores)
    picks = select(pool, "margin_clustering", 10, 0)
    lowest = idx[np.argsort(margins)[:100]]  # k_m = 10·b
    assert np.isin(picks, lowest).all()


# ----------------------------------------------------------------------------- typiclust
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


# ----------------------------------------------------------------------------- probcover
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


# ----------------------------------------------------------------------------- contract bits
@pytest.mark.parametrize("name", DIVERSITY)
def test_edge_cases(name, tmp_path):
    rng = np.random.default_rng(0)
    n, d, c = 120, 6, 8
    x = as_memmap(rng.standard_normal((n, d)).astype(np.float16), tmp_path)
    w = np.zeros((c, d), np.float32)
    b = np.zeros(c, np.float32)
    b[2] = 30.0  # the model predicts one class only
    for labels in (np.full(n, -1), np.where(np.arange(n) < 10, np.arange(n) % 3, -1)):
        pool = make_pool(x, labels, c, weight=w, bias=b)
        for budget in (1, 5, 500):  # C > budget, budget > pool
            picks = select(pool, name, budget, 4)
            assert picks.size == min(budget, pool.eligible.sum())
            np.testing.assert_array_equal(picks, select(pool, name, budget, 4))


@pytest.mark.parametrize("name", ["coreset", "typiclust"])
@pytest.mark.parametrize("scale", [1e20, 1e-25])
def test_distance_strategies_pick_the_same_points_at_extreme_scales(name, scale):
    """Distances of 1e20-scale features overflow float32 (coreset returned duplicate picks; faiss's
    k-means aborted the process); features are scaled by a power of two first: the same picks."""
    from alkit.strategies import select
    from conftest import build_pool

    pool, _ = build_pool(num_classes=5, n_max=40, dim=6, n_labeled=20, n_held=5, seed=8, head=False)
    scaled = replace(pool, features=(pool.features.astype(np.float64) * scale).astype(np.float32))
    np.testing.assert_array_equal(np.sort(select(scaled, name, 12, 3)), np.sort(select(pool, name, 12, 3)))
