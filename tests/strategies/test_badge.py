"""BADGE: k-means++ on gradient embeddings (alkit/strategies/badge.py and _badge_engine.py).

The gradient embedding against autograd's last-layer cross-entropy gradient and its inner-product
identity, the D² probabilities and draws on hand-made cases, the adaptive pooling matrix against
torch, the bounded D² sampler (exact D² law from loose bounds), the lazy sampler's joint law and
fallback, the engine's one report, and the fast path held to ``kmeans_pp_reference`` pick for pick.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

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
from strategy_pools import random_features


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


@pytest.mark.parametrize("mode", ["ash", "ash, r streamed", "labelled"])
@pytest.mark.slow
def test_lazy_kmeans_pp_gradient_has_the_reference_joint_distribution(mode):
    # Joint law of the first two D²-drawn picks from 6 candidates against the explicit embeddings.
    # With r streamed (no cache) the first centre starts the lazy loop from bounds, not a pass.
    rng = np.random.default_rng(7)
    n, d, c = 9, 3, 4
    x = rng.standard_normal((n, d)).astype(np.float32) + 0.3
    logits = (rng.standard_normal((n, c)) * 1.5).astype(np.float32)
    cent = np.array([0, 1, 2]) if mode == "labelled" else None
    cand = np.arange(3, 9)
    g = gradient_embedding(x.astype(np.float64), logits)
    ash = mode.startswith("ash")
    k = 3 if ash else 2      # ash: the first pick is the largest ‖g‖, then two draws
    chosen = np.zeros(cand.size, bool)
    if ash:
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
        picks = kmeans_pp_gradient(x, logits, cand, k, np.random.default_rng(seed), center_indices=cent, lazy=True,
                                   **({"cache_bytes": 0} if "streamed" in mode else {}))
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
