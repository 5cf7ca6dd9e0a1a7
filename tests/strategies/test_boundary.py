"""MASE and BASE (alkit/strategies/boundary.py and its engine, _boundary_engine.py).

The closed-form distance to the decision boundary against the authors' explicit perturbation
ε = −Δw·λ/2, hand-made picks, the streaming engine against ``mase_reference`` / ``base_reference``
(and BASE's reference against the authors' class-by-class form), the in-place distance kernel and
the per-class streaming top-k against plain numpy, BASE's refills when a class runs out of
candidates, the engine's one report, precomputed logits, and float16 memory maps.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from alkit.pool import PoolState, linear_logits
from alkit.scores import boundary_distances, boundary_distances_, class_weight_distances
from alkit.strategies import select
from alkit.strategies._boundary_engine import PerClassTopK as _PerClassTopK
from alkit.strategies._boundary_engine import BoundaryStats, base_picks, class_score_key_order, mase_distances, mase_picks
from alkit.strategies.boundary import base, base_reference, mase
from alkit.strategies.uncertainty import class_quotas, score_eligible
from conftest import build_pool
from strategy_pools import hand_pool


def perturbation_radius(z, weight, bias):
    """The authors' formulation: explicit perturbation ε_c = −Δw·λ/2 per class (C × D)."""
    logits = weight @ z + bias
    yhat = int(np.argmax(logits))
    dw = weight[yhat][None, :] - weight
    db = bias[yhat] - bias
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = 2 * (dw @ z + db) / (dw ** 2).sum(axis=1)
        eps = -dw * lam[:, None] / 2
    radius = np.linalg.norm(eps, axis=1)
    radius[np.isnan(radius)] = np.inf
    return radius, eps, yhat


def test_mase_distance_matches_direct_geometry():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(5, 4)), rng.normal(size=5)
    z = rng.normal(size=(30, 4))
    logits = z @ weight.T + bias
    r, pred = boundary_distances(logits, class_weight_distances(weight))
    for i in range(z.shape[0]):
        radius, eps, yhat = perturbation_radius(z[i], weight, bias)
        assert pred[i] == yhat
        np.testing.assert_allclose(r[i], radius, rtol=1e-5)
        c = int(np.argmin(radius))
        moved = z[i] + eps[c]
        moved_logits = weight @ moved + bias
        # The perturbed point lands on the ŷ-vs-c boundary: both logits tie there.
        np.testing.assert_allclose(moved_logits[yhat], moved_logits[c], atol=1e-9)
        # and the closed-form distance is its length.
        np.testing.assert_allclose(np.linalg.norm(eps[c]), r[i].min(), rtol=1e-5)


def test_mase_hand_made_picks_nearest_to_boundary():
    # Two classes split by x = 0 (w0 = (1,0), w1 = (-1,0)): distance = |x|.
    x = np.array([[3.0, 0], [-0.2, 5], [1.0, -1], [0.1, 9], [-4, 0]])
    pool = hand_pool(x, np.array([[1.0, 0], [-1.0, 0]]), np.zeros(2))
    np.testing.assert_array_equal(np.sort(select(pool, "mase", 2, 0)), [1, 3])


def base_authors_form(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Plain BASE with the explicit per-point perturbation radii (the authors' construction) and one
    class at a time — independent of the module's closed form."""
    quotas = class_quotas(budget, pool.num_classes, rng)
    idx = pool.eligible_indices()
    keys = rng.random(idx.size)
    z = pool.features_of(idx).astype(np.float64)
    radii = np.stack([perturbation_radius(zi, pool.weight.astype(np.float64), pool.bias.astype(np.float64))[0]
                      for zi in z])
    pred = np.argmax(z @ pool.weight.T.astype(np.float64) + pool.bias, axis=1)
    d = radii.min(axis=1)
    taken = np.zeros(idx.size, bool)
    picks = []
    for c in range(pool.num_classes):
        s = np.where(pred == c, d, radii[:, c])
        s = np.where(taken, np.inf, s)
        order = np.lexsort((keys, s, taken))
        chosen = order[: quotas[c]]
        taken[chosen] = True
        picks.extend(idx[chosen].tolist())
    return np.asarray(picks)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [7, 64, 100_000])
def test_base_streaming_equals_reference(seed, chunk):
    from alkit.strategies.boundary import base_reference

    pool, _ = build_pool(num_classes=7, n_max=40, dim=5, n_labeled=20, n_held=10, seed=seed)
    for budget in (3, 7, 23, 60):
        fast = base(pool, budget, np.random.default_rng(seed), chunk_rows=chunk)
        ref = base_reference(pool, budget, np.random.default_rng(seed))
        np.testing.assert_array_equal(fast, ref)
        if budget <= 23:   # the whole pool is not exhausted: the authors' form gives the same picks
            np.testing.assert_array_equal(ref, base_authors_form(pool, budget, np.random.default_rng(seed)))


@pytest.mark.parametrize("chunk", [1500, 100_000])
def test_mase_and_base_score_blocks_inside_a_chunk_equal_the_references(chunk):
    """Pools of a few thousand rows: each chunk is scored in several SCORE_BLOCK_ROWS blocks."""
    from alkit.scores import SCORE_BLOCK_ROWS
    from alkit.strategies.boundary import mase_reference

    pool, _ = build_pool(num_classes=9, n_max=400, dim=6, n_labeled=40, n_held=20, seed=3)
    assert pool.eligible_indices().size > 2 * SCORE_BLOCK_ROWS
    for budget in (5, 250):
        np.testing.assert_array_equal(mase(pool, budget, np.random.default_rng(1), chunk_rows=chunk),
                                      mase_reference(pool, budget, np.random.default_rng(1)))
        np.testing.assert_array_equal(base(pool, budget, np.random.default_rng(1), chunk_rows=chunk),
                                      base_reference(pool, budget, np.random.default_rng(1)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mase_streaming_equals_reference_and_radii_match_the_perturbation(seed):
    from alkit.strategies.boundary import boundary_radii, mase_reference

    pool, _ = build_pool(num_classes=6, n_max=30, dim=4, n_labeled=15, n_held=5, seed=seed)
    for budget in (1, 9, 40):
        np.testing.assert_array_equal(mase(pool, budget, np.random.default_rng(seed), chunk_rows=11),
                                      mase_reference(pool, budget, np.random.default_rng(seed)))
    z = pool.features_of(pool.eligible_indices()[:12]).astype(np.float64)
    pred, r = boundary_radii(z, pool.weight, pool.bias)
    for zi, p, ri in zip(z, pred, r):
        explicit = perturbation_radius(zi, pool.weight.astype(np.float64), pool.bias.astype(np.float64))[0]
        assert np.isinf(ri[p])
        np.testing.assert_allclose(np.delete(ri, p), np.delete(explicit, p), rtol=1e-6)


def test_base_hand_made_quota_and_per_class_picks():
    # Three classes, identity head in 3-D.  Budget 3 → one pick per class, class 0 first.
    x = np.array([
        [2.0, 1.9, 0.0],   # ŷ=0, very close to the 0/1 boundary
        [3.0, 0.0, 0.0],   # ŷ=0, far from everything
        [0.0, 3.0, 2.95],  # ŷ=1, close to the 1/2 boundary
        [0.0, 0.0, 4.0],   # ŷ=2, far
        [0.0, 1.0, 1.2],   # ŷ=2, close-ish to 1/2 boundary
    ])
    pool = hand_pool(x, np.eye(3), np.zeros(3))
    picks = base(pool, 3, np.random.default_rng(0))
    # class 0: s_0 = d for ŷ=0 points, r_0 for the others; point 0 has d = 0.1/√2.
    # class 1: point 2 (ŷ=1, d = 0.05/√2) is the smallest s_1.
    # class 2: point 4 has r_2... ŷ=2, d = 0.2/√2 = smallest s_2 left.
    np.testing.assert_array_equal(picks, [0, 2, 4])


def test_mase_and_uncertainty_chunking_equal_whole(small_pool):
    pool, _ = small_pool
    from alkit.scores import margin_scores as ms
    idx_a, s_a = score_eligible(pool, ms, chunk_rows=5)
    idx_b, s_b = score_eligible(pool, ms, chunk_rows=10**6)
    np.testing.assert_array_equal(idx_a, idx_b)
    np.testing.assert_allclose(s_a, s_b, rtol=1e-6)
    from alkit.strategies._boundary_engine import mase_distances
    np.testing.assert_array_equal(mase_distances(pool, 3)[1], mase_distances(pool, 10**6)[1])


# ----------------------------------------------------------------------------- engine at scale
def _random_head(rng, num_classes, dim, duplicate=False):
    weight = rng.normal(size=(num_classes, dim)).astype(np.float32)
    bias = rng.normal(size=num_classes).astype(np.float32)
    if duplicate:  # two classes that can never be told apart: 0/0 distances become inf
        weight[3], bias[3] = weight[1], bias[1]
    return weight, bias


@pytest.mark.parametrize("duplicate", [False, True])
def test_inplace_boundary_distances_equal_numpy(duplicate):
    rng = np.random.default_rng(0)
    weight, bias = _random_head(rng, 9, 5, duplicate)
    z = rng.normal(size=(200, 5)).astype(np.float32)
    z[:5] = 0  # logits = bias exactly: ties between the duplicated classes
    logits = linear_logits(z, weight, bias)
    wd = class_weight_distances(weight)
    r_ref, pred_ref = boundary_distances(logits.copy(), wd)
    work = torch.from_numpy(logits.copy())
    pred, d, top = boundary_distances_(work, torch.from_numpy(wd))
    np.testing.assert_array_equal(pred.numpy(), pred_ref)
    np.testing.assert_array_equal(work.numpy(), r_ref)
    np.testing.assert_array_equal(d.numpy(), r_ref.min(axis=1))
    np.testing.assert_array_equal(top.numpy(), logits.max(axis=1))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_per_class_topk_streaming_equals_sorting(chunk):
    rng = np.random.default_rng(chunk)
    n, c = 300, 6
    scores = rng.integers(0, 25, size=(n, c)).astype(np.float32)  # many exact ties
    scores[rng.random((n, c)) < 0.05] = np.inf
    keys = rng.random(n)
    keep = np.array([0, 1, 5, 40, 299, 400])
    top = _PerClassTopK(keep, keys)
    for start in range(0, n, chunk):
        top.add(torch.from_numpy(scores[start:start + chunk].copy()), start)
    top.compact()
    for k in range(c):
        expected = np.lexsort((keys, scores[:, k]))[: keep[k]]
        np.testing.assert_array_equal(top.ranked(k), expected)


def test_class_score_key_order_is_lexsort():
    """The packed sort of the per-class lists orders as np.lexsort((key, score, class)): ties of
    class and score go by key; −0.0 and +0.0 are one score; ±inf and negatives take their places."""
    rng = np.random.default_rng(5)
    values = np.array([-2.5, -0.0, 0.0, 0.25, 1.0, 3.0, np.inf, -np.inf], np.float32)
    for trial in range(200):
        n = int(rng.integers(0, 200))
        cls = rng.integers(0, 4, n).astype(np.int32)
        score = values[rng.integers(0, values.size, n)] if trial % 2 else rng.standard_normal(n).astype(np.float32)
        key = rng.random(n)
        np.testing.assert_array_equal(class_score_key_order(cls, score, key), np.lexsort((key, score, cls)))
    # by hand: class first, then score, then key
    cls = np.array([1, 0, 1, 0, 1], np.int32)
    score = np.array([0.5, 2.0, -0.0, 2.0, 0.0], np.float32)
    key = np.array([0.1, 0.9, 0.8, 0.2, 0.3])
    np.testing.assert_array_equal(class_score_key_order(cls, score, key), [3, 1, 4, 2, 0])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("slack", [0, 1, None])
def test_base_with_refills_equals_reference(seed, slack):
    # slack 0 keeps only q_c candidates per class: every class whose best points were taken by
    # an earlier class needs the exact recomputation, and the picks must not change.
    pool, _ = build_pool(num_classes=9, n_max=50, dim=6, n_labeled=20, n_held=10, seed=seed)
    refills = 0
    for budget in (9, 40, 150):
        for chunk in (16, 10_000):
            reports = []
            fast = base_picks(pool, budget, np.random.default_rng(seed), chunk_rows=chunk, slack=slack,
                              report=reports.append)
            (stats,) = reports
            refills += stats.refills
            assert stats.passes == 1 + stats.refills and stats.logits_s <= stats.pass_s
            np.testing.assert_array_equal(fast, base_reference(pool, budget, np.random.default_rng(seed)))
    if slack == 0:
        assert refills > 0


@pytest.mark.parametrize("method", ["mase", "base"])
def test_boundary_engine_reports_once_at_the_end(method):
    pool, _ = build_pool(num_classes=6, n_max=40, dim=5, n_labeled=20, n_held=10, seed=3)
    picks_of = {"mase": mase_picks, "base": base_picks}[method]
    reports = []
    picks = picks_of(pool, 20, np.random.default_rng(0), 16, report=reports.append)
    np.testing.assert_array_equal(picks, picks_of(pool, 20, np.random.default_rng(0), 16))
    (stats,) = reports
    assert isinstance(stats, BoundaryStats) and stats.method == method
    assert stats.passes == 1 + stats.refills and (stats.refills == 0 or method == "base")
    assert 0 <= stats.logits_s <= stats.pass_s <= stats.total_s


def test_base_and_mase_with_precomputed_logits_equal_head():
    pool, _ = build_pool(num_classes=7, n_max=40, dim=5, n_labeled=20, n_held=10, seed=4)
    logits = linear_logits(pool.features, pool.weight, pool.bias)
    with_logits = replace(pool, logits=logits)
    for budget in (7, 30):
        np.testing.assert_array_equal(base(with_logits, budget, np.random.default_rng(0), slack=0),
                                      base(pool, budget, np.random.default_rng(0), slack=0))
        np.testing.assert_array_equal(mase(with_logits, budget, np.random.default_rng(0)),
                                      mase(pool, budget, np.random.default_rng(0)))


def test_boundary_strategies_on_float16_memmap_equal_float32(tmp_path):
    pool, _ = build_pool(num_classes=8, n_max=70, dim=12, n_labeled=40, n_held=15, seed=2)
    half = pool.features.astype(np.float16)
    np.save(tmp_path / "f.npy", half)
    mapped = replace(pool, features=np.load(tmp_path / "f.npy", mmap_mode="r"))
    in_memory = replace(pool, features=half.astype(np.float32))
    for name in ("base", "mase", "margin", "confidence", "entropy"):
        for budget in (5, 37):
            np.testing.assert_array_equal(select(mapped, name, budget, 3), select(in_memory, name, budget, 3))
    np.testing.assert_array_equal(mase_distances(mapped, 16)[1], mase_distances(in_memory, 16)[1])
