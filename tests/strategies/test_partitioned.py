"""partitioned_coreset and partitioned_badge (alkit/strategies/partitioned.py).

How the pool and the budget are split into partitions, that each partition gets exactly its share
of the picks (partitioned_coreset: k-center greedy run on each partition alone), and the authors'
subsets of labelled and unlabelled points.
"""
from __future__ import annotations

import numpy as np
import pytest

from alkit import select
from alkit.strategies.coreset import k_center_greedy
from alkit.strategies.partitioned import partition_pool, split_sizes
from strategy_pools import gaussian_pool


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
