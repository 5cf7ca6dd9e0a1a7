"""Each score and strategy against its defining formula on hand-made cases, and every
chunked path against a plain reference on random inputs."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit.pool import PoolState
from alkit.scores import (
    boundary_distances, class_weight_distances, entropy, least_confidence_scores, margin_scores, softmax,
    take_smallest,
)
from alkit.strategies import select
from alkit.strategies.boundary import base, mase
from alkit.strategies.uncertainty import class_quotas, score_eligible
from conftest import build_pool


def test_uncertainty_scores_hand_made():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [1 / 3, 1 / 3, 1 / 3]]))
    np.testing.assert_allclose(least_confidence_scores(logits), [0.7, 0.4, 1 / 3], atol=1e-12)
    np.testing.assert_allclose(margin_scores(logits), [0.5, 0.05, 0.0], atol=1e-12)
    expected_h = [-(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)),
                  -(0.4 * np.log(0.4) + 0.35 * np.log(0.35) + 0.25 * np.log(0.25)), np.log(3)]
    np.testing.assert_allclose(entropy(logits), expected_h, atol=1e-12)
    big = np.array([[1000.0, 999.0, -1000.0]])
    np.testing.assert_allclose(softmax(big).sum(), 1.0)
    assert np.isfinite(entropy(big)).all()


def hand_pool(features, weight, bias, labeled=None):
    n = features.shape[0]
    labeled = np.zeros(n, bool) if labeled is None else labeled
    return PoolState(features=features.astype(np.float32), labeled=labeled, held_out=np.zeros(n, bool),
                     labels=np.full(n, -1, np.int64), num_classes=weight.shape[0],
                     weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def test_margin_confidence_entropy_pick_the_hand_made_points():
    # Three classes on the plane; logits = identity head.  Point 1 sits on the 0/1 boundary.
    x = np.array([[5, 0, 0], [1, 1, 0], [0, 0, 5], [2, 1.8, 1.7], [0, 6, 0]], np.float32)
    pool = hand_pool(x, np.eye(3), np.zeros(3))
    assert set(select(pool, "margin", 1, 0)) == {1}
    assert set(select(pool, "confidence", 1, 0)) == {3}
    assert set(select(pool, "entropy", 1, 0)) == {3}


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


def test_class_quotas_follow_the_paper():
    rng = np.random.default_rng(0)
    q = class_quotas(23, 5, rng)
    assert q.sum() == 23 and set(q) == {4, 5} and (q == 5).sum() == 3
    assert class_quotas(3, 10, rng).sum() == 3


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


def test_take_smallest_breaks_ties_with_the_rng():
    scores = np.array([0.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    first = {tuple(take_smallest(scores, 2, np.random.default_rng(s))) for s in range(40)}
    assert all(p[0] == 0 for p in first) and len({p[1] for p in first}) == 4
    np.testing.assert_array_equal(take_smallest(scores, 3, np.random.default_rng(5)),
                                  take_smallest(scores, 3, np.random.default_rng(5)))
    rng = np.random.default_rng(1)
    s = rng.normal(size=1000)
    np.testing.assert_array_equal(take_smallest(s, 50, rng), np.argsort(s)[:50])


def test_balanced_random_is_balanced(small_pool):
    pool, truth = small_pool
    picks = select(pool, "balanced_random", 24, 0, oracle_labels=truth)
    assert (np.bincount(truth[picks], minlength=6) == 4).all()
    assert replace(pool).oracle_labels is None


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("seed", range(6))
def test_score_pass_gives_the_logits_of_the_pool_bit_for_bit(seed, dtype):
    # score_eligible reads rows into reused buffers and multiplies in place; the scores (and the
    # predicted classes) must be exactly those of the pool's own chunked logits (iter_chunks, the
    # path the committed runs were scored on), so that a faster pass never changes a pick.
    from alkit.api import make_pool
    from alkit.pool import DEFAULT_CHUNK_ROWS
    from alkit.strategies.uncertainty import SCORE_FUNCTIONS

    rng = np.random.default_rng(seed)
    n, d, c = int(rng.integers(40, 900)), int(rng.choice([3, 64, 300])), int(rng.choice([2, 10, 200]))
    labels = np.full(n, -1)
    labels[: n // 10] = rng.integers(0, c, n // 10)
    pool = make_pool(rng.standard_normal((n, d)).astype(dtype), labels, c,
                     weight=rng.standard_normal((c, d)).astype(np.float32), bias=rng.standard_normal(c).astype(np.float32))
    idx = pool.eligible_indices()
    for chunk in (DEFAULT_CHUNK_ROWS, 7):
        logits = np.concatenate([chunk_logits for _, _, chunk_logits in pool.iter_chunks(idx, chunk)])
        for fn in SCORE_FUNCTIONS.values():
            got_idx, scores, predicted = score_eligible(pool, fn, chunk, predictions=True)
            np.testing.assert_array_equal(got_idx, idx)
            np.testing.assert_array_equal(scores, fn(logits))
            np.testing.assert_array_equal(predicted, logits.argmax(axis=1))
