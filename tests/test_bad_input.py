"""Bad input raises a ValueError that names the argument."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit.loop import run_active_learning
from alkit.pool import PoolState, make_pool
from alkit.strategies import select


def test_shape_mismatch_names_labels(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="labels"):
        make_pool(pool.features, np.zeros(5, np.int64), 6)
    with pytest.raises(ValueError, match="labeled"):
        replace(pool, labeled=np.zeros(3, bool))
    with pytest.raises(ValueError, match="weight"):
        replace(pool, weight=np.zeros((6, 3), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_features(bad):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    x[7, 1] = bad
    y = np.zeros(20, np.int64)
    with pytest.raises(ValueError, match="train_features.*NaN or inf.*row 7"):
        run_active_learning(x, y, x[:5] * 0, y[:5], 1, "random", seed=0, initial_size=3, round_budget=2, rounds=1)


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_budget_must_be_positive_int(small_pool, budget):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="budget"):
        select(pool, "random", budget, 0)


def test_unknown_strategy_names_choices(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="strategy 'nope' is unknown.*margin"):
        select(pool, "nope", 3, 0)


def test_labels_outside_range(small_pool):
    pool, _ = small_pool
    labels = pool.labels.copy()
    labels[np.flatnonzero(pool.labeled)[0]] = 6
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        replace(pool, labels=labels)
    with pytest.raises(ValueError, match="labels"):
        make_pool(pool.features, np.full(pool.size, -2), 6)


def test_empty_pool():
    with pytest.raises(ValueError, match="features is empty"):
        make_pool(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3)
    x = np.zeros((4, 2), np.float32)
    full = make_pool(x, np.array([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="no eligible"):
        select(full, "random", 2, 0)


def test_model_strategies_need_a_model(small_pool):
    pool, _ = small_pool
    bare = replace(pool, weight=None, bias=None)
    with pytest.raises(ValueError, match="margin.*linear head"):
        select(bare, "margin", 3, 0)
    with pytest.raises(ValueError, match="mase.*weight, bias"):
        select(replace(bare, logits=np.zeros((pool.size, 6), np.float32)), "mase", 3, 0)


def test_unlabelled_labels_must_be_hidden(small_pool):
    pool, truth = small_pool
    with pytest.raises(ValueError, match="-1 for unlabelled"):
        PoolState(pool.features, pool.labeled, pool.held_out, truth.astype(np.int64), 6)


def test_seed_required(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="seed"):
        select(pool, "random", 3, None)
