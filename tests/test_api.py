"""The Python paths a practitioner takes: a pool from embeddings, a head or any model's outputs."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import alkit
from alkit.data.synthetic import gaussian_mixture


@pytest.fixture()
def data():
    d = gaussian_mixture(5, 40, 8, separation=2.5, seed=4)
    labels = np.full(d.train_labels.size, -1)
    labels[::4] = d.train_labels[::4]
    return d.train_features.astype(np.float32), labels, d


@pytest.mark.slow
def test_make_pool_fits_the_default_head_when_asked(data):
    x, labels, _ = data
    pool = alkit.make_pool(x, labels, 5, fit_head=True)
    head = alkit.train_linear_probe(x[labels >= 0], labels[labels >= 0], None, None, 5)
    np.testing.assert_allclose(pool.weight, head.weight, atol=1e-6)
    picks = alkit.select(pool, "margin", 10, seed=0)
    assert picks.size == 10 and (labels[picks] == -1).all()
    with pytest.raises(ValueError, match="fit_head=True needs labelled points"):
        alkit.make_pool(x, np.full(labels.size, -1), 5, fit_head=True)


def test_any_models_probabilities_serve_the_score_strategies(data):
    x, labels, _ = data
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(x.shape[0], 5)).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    by_p = alkit.select(alkit.make_pool(x, labels, 5, probabilities=p), "margin", 12, seed=1)
    by_logits = alkit.select(alkit.make_pool(x, labels, 5, logits=logits), "margin", 12, seed=1)
    np.testing.assert_array_equal(np.sort(by_p), np.sort(by_logits))   # softmax(log p) = p
    for bad, match in [(p * 2, "sum to 1"), (-p, "non-negative"), (np.hstack([p, np.zeros((p.shape[0], 1))]), "logits must have shape")]:
        with pytest.raises(ValueError, match=match):
            alkit.make_pool(x, labels, 5, probabilities=bad)


def test_make_pool_rejects_non_finite_input_and_two_models(data):
    x, labels, _ = data
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="features contains NaN or inf .first at row 7"):
        alkit.make_pool(bad, labels, 5)
    w, b = np.zeros((5, 8), np.float32), np.zeros(5, np.float32)
    w[0, 0] = np.inf
    with pytest.raises(ValueError, match="head .* NaN or inf"):
        alkit.make_pool(x, labels, 5, weight=w, bias=b)
    logits = np.zeros((x.shape[0], 5), np.float32)
    logits[3, 2] = np.nan
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        alkit.make_pool(x, labels, 5, logits=logits)
    with pytest.raises(ValueError, match="give one model"):
        alkit.make_pool(x, labels, 5, logits=np.zeros((x.shape[0], 5)), fit_head=True)


def test_num_classes_inferred_with_a_warning_or_from_the_model(data):
    x, labels, _ = data
    with pytest.warns(UserWarning, match="num_classes inferred"):
        pool = alkit.make_pool(x, labels)
    assert pool.num_classes == labels.max() + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert alkit.make_pool(x, labels, weight=np.zeros((7, 8)), bias=np.zeros(7)).num_classes == 7
        assert alkit.make_pool(x, labels, logits=np.zeros((x.shape[0], 6))).num_classes == 6


@pytest.mark.slow
def test_pool_and_head_print_one_short_line(data):
    x, labels, _ = data
    pool = alkit.make_pool(x, labels, 5, fit_head=True)
    text = repr(pool)
    assert "\n" not in text and len(text) < 200 and "N=200" in text and "C=5" in text and "linear head" in text
    head = alkit.train_linear_probe(x[labels >= 0], labels[labels >= 0], None, None, 5)
    assert "\n" not in repr(head) and len(repr(head)) < 200 and "logreg" in repr(head)


def test_api_refuses_a_one_class_head_and_a_schedule_the_pool_cannot_feed(data):
    x, labels, d = data
    one = np.full(labels.size, -1)
    one[d.train_labels == 2] = 2
    with pytest.raises(ValueError, match="labels: the labelled points are all of one class"):
        alkit.make_pool(x, one, 5, fit_head=True)
    from alkit.loop import run_active_learning

    with pytest.raises(ValueError, match="round_budget: 20 initial \\+ 10 rounds × 30"):
        run_active_learning(x, d.train_labels, d.test_features, d.test_labels, 5, "random", seed=0, initial_size=20,
                            round_budget=30, rounds=10, val_per_class=2, progress=False)


@pytest.mark.parametrize("strategy", ["confidence", "margin", "entropy", "mase", "base"])
def test_score_strategies_check_the_rows_they_score_in_their_own_pass(strategy):
    # They read the pool once (the eligible rows' logits) and refuse a non-finite row there, so
    # select skips its separate scan of every feature; a bad row they never read (a labelled one)
    # cannot change their picks.
    from alkit.pool import PoolState

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    labeled = np.zeros(300, bool)
    labeled[:30] = True
    labels = np.where(labeled, rng.integers(0, 4, 300), -1)
    w, b = rng.standard_normal((4, 6)).astype(np.float32), np.zeros(4, np.float32)

    def pool(features):
        return PoolState(features=features, labeled=labeled, held_out=np.zeros(300, bool), labels=labels,
                         num_classes=4, weight=w, bias=b)

    # MASE and BASE test a row by its largest logit: every kind of bad value, through weights of
    # one sign, of both signs and with a zero in the bad feature's column, must show there.
    w[:, 3] = [0.5, 0.7, 0.2, 0.9]
    w[:, 4] = [0.5, -0.7, 0.2, -0.9]
    w[:, 5] = [0.5, 0.0, -0.2, 0.9]
    clean = alkit.select(pool(x), strategy, 10, seed=0)
    for column in (2, 3, 4, 5):
        for bad in (np.inf, -np.inf, np.nan):
            in_pool = x.copy()
            in_pool[150, column] = bad
            with pytest.raises(ValueError, match=r"features contains NaN or inf \(first at row 150"):
                alkit.select(pool(in_pool), strategy, 10, seed=0)
    labelled_row = x.copy()
    labelled_row[5, 1] = np.nan
    np.testing.assert_array_equal(alkit.select(pool(labelled_row), strategy, 10, seed=0), clean)


def test_a_refused_pool_leaves_autograd_on():
    # MASE/BASE read the pool through a generator (iter_logits); when a bad row stops them
    # half-way, collecting that generator later must not switch autograd off for the whole process
    # (it did while the generator ran under its own no_grad: every later training step failed).
    import gc

    import torch

    from alkit.pool import PoolState

    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    x[150, 0] = np.nan
    pool = PoolState(features=x, labeled=np.arange(200) < 20, held_out=np.zeros(200, bool),
                     labels=np.where(np.arange(200) < 20, rng.integers(0, 3, 200), -1), num_classes=3,
                     weight=rng.standard_normal((3, 5)).astype(np.float32), bias=np.zeros(3, np.float32))
    for strategy in ("mase", "base", "margin"):
        try:
            alkit.select(pool, strategy, 5, seed=0)
        except ValueError as exc:
            error = exc
        assert "row 150" in str(error)
        del error
        gc.collect()
        assert torch.is_grad_enabled(), strategy
