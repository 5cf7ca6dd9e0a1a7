"""random, balanced_random, confidence, margin and entropy (alkit/strategies/uncertainty.py).

The scores (least confidence, margin, entropy, softmax) against their formulas on hand-made
logits, the picks on a hand-made pool, the per-class quotas that balanced_random and BASE share,
the one seeded top-k (``take_smallest``) that breaks ties with the rng, and the chunked score pass
against the pool's own logits bit for bit.  The last two tests are mutation-audit survivors (see
tests/test_survivors.py): each fails on the mutant its docstring names.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit.scores import entropy, least_confidence_scores, margin_scores, softmax, take_smallest
from alkit.strategies import select
from alkit.strategies.uncertainty import class_quotas, score_eligible
from strategy_pools import hand_pool


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


def test_float32_scores_take_the_fast_path_and_keep_the_formulas():
    # float32 logits (the streaming pass's) are scored by torch kernels; they must give the numbers
    # of the float64 formulas: the hand-made rows, a tie at the top (margin exactly 0), two classes.
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25], [0.45, 0.45, 0.1]])
    logits = np.log(probs).astype(np.float32)
    np.testing.assert_allclose(least_confidence_scores(logits), [0.7, 0.4, 0.45], atol=1e-6)
    np.testing.assert_allclose(margin_scores(logits), [0.5, 0.05, 0.0], atol=1e-6)
    assert margin_scores(np.array([[3.0, 1.0, 3.0]], np.float32))[0] == 0.0
    np.testing.assert_allclose(entropy(logits), -(probs * np.log(probs)).sum(axis=1), atol=1e-6)
    rng = np.random.default_rng(0)
    for c in (2, 7, 1000):
        x = (3 * rng.standard_normal((50, c))).astype(np.float32)
        for fn in (least_confidence_scores, margin_scores, entropy):
            np.testing.assert_allclose(fn(x), fn(x.astype(np.float64)), rtol=1e-4, atol=1e-6)


def test_margin_confidence_entropy_pick_the_hand_made_points():
    # Three classes on the plane; logits = identity head.  Point 1 sits on the 0/1 boundary.
    x = np.array([[5, 0, 0], [1, 1, 0], [0, 0, 5], [2, 1.8, 1.7], [0, 6, 0]], np.float32)
    pool = hand_pool(x, np.eye(3), np.zeros(3))
    assert set(select(pool, "margin", 1, 0)) == {1}
    assert set(select(pool, "confidence", 1, 0)) == {3}
    assert set(select(pool, "entropy", 1, 0)) == {3}


def test_class_quotas_follow_the_paper():
    rng = np.random.default_rng(0)
    q = class_quotas(23, 5, rng)
    assert q.sum() == 23 and set(q) == {4, 5} and (q == 5).sum() == 3
    assert class_quotas(3, 10, rng).sum() == 3


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
    # path the committed runs were scored on), so that a faster pass never changes a pick.  Pools
    # of up to 3,000 rows and a 1,500-row chunk split the chunks into score blocks (SCORE_BLOCK_ROWS).
    from alkit.api import make_pool
    from alkit.pool import DEFAULT_CHUNK_ROWS
    from alkit.strategies.uncertainty import SCORE_FUNCTIONS

    rng = np.random.default_rng(seed)
    n, d, c = int(rng.integers(40, 3000)), int(rng.choice([3, 64, 300])), int(rng.choice([2, 10, 200]))
    labels = np.full(n, -1)
    labels[: n // 10] = rng.integers(0, c, n // 10)
    pool = make_pool(rng.standard_normal((n, d)).astype(dtype), labels, c,
                     weight=rng.standard_normal((c, d)).astype(np.float32), bias=rng.standard_normal(c).astype(np.float32))
    idx = pool.eligible_indices()
    for chunk in (DEFAULT_CHUNK_ROWS, 1500, 7):
        logits = np.concatenate([chunk_logits for _, _, chunk_logits in pool.iter_chunks(idx, chunk)])
        for fn in SCORE_FUNCTIONS.values():
            got_idx, scores, predicted = score_eligible(pool, fn, chunk, predictions=True)
            np.testing.assert_array_equal(got_idx, idx)
            np.testing.assert_array_equal(scores, fn(logits))
            np.testing.assert_array_equal(predicted, logits.argmax(axis=1))


def test_the_extra_quota_goes_to_random_classes_not_the_first():
    """Mutant: BASE's b mod C extra picks always go to the first classes."""
    hits = np.zeros(10)
    for seed in range(300):
        quotas = class_quotas(23, 10, np.random.default_rng(seed))
        assert quotas.sum() == 23 and set(np.unique(quotas)) <= {2, 3}
        hits += quotas == 3
    # 3 of 10 classes get an extra point: about 90 times each over 300 draws, never 300 or 0
    assert hits.min() > 50 and hits.max() < 130


def test_entropy_is_at_temperature_one():
    """Mutant: entropy computed at softmax temperature 2 (on the fast float32 path too)."""
    logits = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, -1.0]], np.float32)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    expected = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(entropy(logits), expected, rtol=1e-5)
    np.testing.assert_allclose(entropy(logits.astype(np.float64)), expected, rtol=1e-12)


@pytest.mark.parametrize("strategy", ["margin", "confidence", "entropy", "mase", "base"])
def test_logits_timer_counts_the_calls_own_logits_pass(strategy):
    # The score-floor benchmark divides a call by the time the call itself spent producing logits;
    # every chunk of both passes (numpy's for the uncertainty scores, torch's for MASE/BASE) counts,
    # given logits cost nothing to produce, and nothing counts outside the timer.
    from alkit.api import make_pool
    from alkit.scores import logits_timer

    rng = np.random.default_rng(0)
    n, d, c = 2500, 16, 5
    labels = np.full(n, -1)
    labels[:100] = rng.integers(0, c, 100)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w, b = rng.standard_normal((c, d)).astype(np.float32), np.zeros(c, np.float32)
    head_pool = make_pool(x, labels, c, weight=w, bias=b)
    with logits_timer() as spent:
        select(head_pool, strategy, 10, 0)
    assert spent.chunks >= 1 and spent.seconds > 0
    per_pass = spent.chunks
    with logits_timer() as spent:
        select(head_pool, strategy, 10, 0)
        select(head_pool, strategy, 10, 0)
    assert spent.chunks == 2 * per_pass
    with logits_timer() as given:
        select(replace(head_pool, logits=(x @ w.T + b).astype(np.float32)), strategy, 10, 0)
    assert given.chunks == 0 and given.seconds == 0.0


def test_select_scores_numpys_product_on_one_torch_thread(monkeypatch):
    # confidence, margin and entropy (and their variants) score in torch the logits numpy's BLAS
    # has just made: select runs torch on one thread for them and restores the count; MASE (torch's
    # own product) and a pool with given logits keep the caller's threads.  The pool is large
    # enough that select's small-pool rule does not apply.
    import torch

    from alkit.api import make_pool
    from alkit.strategies._dense import SMALL_WORK
    from alkit.strategies.registry import resolve_strategy

    rng = np.random.default_rng(0)
    n, d, c = 20_000, 200, 10
    assert n * (d + c) >= SMALL_WORK
    labels = np.full(n, -1)
    labels[:200] = rng.integers(0, c, 200)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w, b = rng.standard_normal((c, d)).astype(np.float32), np.zeros(c, np.float32)
    head_pool = make_pool(x, labels, c, weight=w, bias=b)
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    for name in ("confidence", "margin", "entropy", "margin_balanced"):
        assert resolve_strategy(name).numpy_product
        calls.clear()
        select(head_pool, name, 10, 0)
        assert calls == [1, 2], name
    calls.clear()
    select(head_pool, "mase", 10, 0)
    select(replace(head_pool, logits=(x @ w.T).astype(np.float32)), "margin", 10, 0)
    assert calls == []
