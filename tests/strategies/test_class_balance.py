"""class_balanced and class_matched: the quota and refill rule on hand-made cases, against a plain
reference on random inputs, and the oracle control's class histogram."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit.scores import margin_scores, softmax
from alkit.strategies import select
from alkit.strategies.class_balance import balanced_take, class_balanced, class_matched, matched_draw
from alkit.strategies.registry import _REGISTRY, strategy_names
from alkit.strategies.uncertainty import class_quotas
from conftest import build_pool


def reference_take(scores, predicted, quotas, keys):
    """The rule written out: class by class, its quota of smallest (score, key); then the rest."""
    n = len(scores)
    taken = []
    for c in range(len(quotas)):
        members = sorted((i for i in range(n) if predicted[i] == c), key=lambda i: (scores[i], keys[i]))
        taken += members[: quotas[c]]
    left = sorted((i for i in range(n) if i not in set(taken)), key=lambda i: (scores[i], keys[i]))
    return set(taken + left[: min(sum(quotas), n) - len(taken)])


def test_each_predicted_class_takes_its_quota_of_best_scores():
    #                 0    1    2    3    4    5    6    7
    scores = np.array([0.9, 0.1, 0.5, 0.2, 0.3, 0.8, 0.05, 0.7])
    predicted = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    keys = np.zeros(8)
    # two per class: class 0 takes 1 and 2 (not 0), class 1 takes 3 and 4, class 2 takes 6 and 7
    picks = balanced_take(scores, predicted, np.array([2, 2, 2]), keys)
    assert sorted(picks.tolist()) == [1, 2, 3, 4, 6, 7]
    # plain smallest-score would take 6, 1, 3, 4, 2, 7 as well here, but with quotas (3, 1, 1) class 0
    # must take all three of its points, point 0 (score 0.9) included, and class 1 only point 3
    picks = balanced_take(scores, predicted, np.array([3, 1, 1]), keys)
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 6]


def test_unfilled_quota_goes_to_the_best_scores_left():
    scores = np.array([0.4, 0.3, 0.2, 0.1, 0.6, 0.5])
    predicted = np.array([0, 0, 0, 0, 1, 2])   # nobody is predicted class 3
    quotas = np.array([1, 1, 1, 3])
    picks = balanced_take(scores, predicted, quotas, np.zeros(6))
    # quotas give 3 (class 0's best), 4 and 5; the three of class 3 go to 2, 1, 0 (best left)
    assert picks.tolist() == [3, 5, 4, 2, 1, 0]
    # a budget above the points: all of them, once
    assert sorted(balanced_take(scores, predicted, np.array([5, 5, 5, 5]), np.zeros(6)).tolist()) == list(range(6))


def test_ties_are_broken_by_the_keys():
    scores = np.zeros(4)
    predicted = np.zeros(4, np.int64)
    keys = np.array([0.9, 0.1, 0.5, 0.3])
    assert balanced_take(scores, predicted, np.array([2]), keys).tolist() == [1, 3]


@pytest.mark.parametrize("seed", range(30))
def test_balanced_take_matches_the_reference_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 60)), int(rng.integers(1, 9))
    scores = rng.integers(0, 6, n).astype(float)           # many exact ties
    predicted = rng.choice(c, n, p=rng.dirichlet(np.full(c, 0.4)))   # skewed: some classes empty
    quotas = class_quotas(int(rng.integers(1, n + 5)), c, rng)
    keys = rng.random(n)
    picks = balanced_take(scores, predicted, quotas, keys)
    assert np.unique(picks).size == picks.size == min(quotas.sum(), n)
    assert set(picks.tolist()) == reference_take(scores, predicted, quotas, keys)


def test_margin_balanced_is_the_rule_on_the_pools_margins():
    pool, _ = build_pool(num_classes=5, n_max=40, n_labeled=20, n_held=5, seed=3)
    picks = select(pool, "margin_balanced", 13, 7)
    rng = np.random.default_rng(7)
    idx = pool.eligible_indices()
    logits = pool.features_of(idx).astype(np.float64) @ pool.weight.T.astype(np.float64) + pool.bias
    quotas = class_quotas(13, 5, rng)
    keys = rng.random(idx.size)
    probs = np.sort(softmax(logits), axis=1)
    expected = reference_take(probs[:, -1] - probs[:, -2], logits.argmax(1), quotas, keys)
    assert set(picks.tolist()) == set(idx[sorted(expected)].tolist())
    # the batch follows the predicted classes: q_c per predicted class whenever each class has enough
    predicted = logits.argmax(1)
    counts = np.bincount(predicted[np.searchsorted(idx, picks)], minlength=5)
    assert (np.bincount(predicted, minlength=5) >= quotas).all() and (counts == quotas).all()


def test_a_users_score_function_is_balanced_too():
    pool, _ = build_pool(num_classes=4, seed=1)
    mine = class_balanced(margin_scores)
    np.testing.assert_array_equal(select(pool, mine, 10, 2), select(pool, "margin_balanced", 10, 2))
    with pytest.raises(ValueError, match="score-based strategy"):
        class_balanced("coreset")


def test_class_matched_keeps_the_true_class_histogram_and_draws_within_classes():
    pool, truth = build_pool(num_classes=6, n_max=80, n_labeled=30, n_held=10, seed=2)
    plain = select(pool, "margin", 24, 5)
    matched = select(pool, "margin_class_matched", 24, 5, oracle_labels=truth)
    np.testing.assert_array_equal(np.bincount(truth[matched], minlength=6), np.bincount(truth[plain], minlength=6))
    assert pool.eligible[matched].all() and set(matched) != set(plain)
    # uniform within classes: over many seeds, each eligible point of a class is drawn about equally often
    idx = pool.eligible_indices()
    counts = np.zeros(pool.size)
    for seed in range(400):
        counts[select(pool, "margin_class_matched", 24, seed, oracle_labels=truth)] += 1
    hits = []
    for c in range(6):
        members = idx[truth[idx] == c]
        hits.append(counts[members].std() / max(counts[members].mean(), 1e-9))
    # margin alone concentrates on a few points per class (coefficient of variation far above a draw's)
    margin_counts = np.zeros(pool.size)
    for seed in range(50):
        margin_counts[select(pool, "margin", 24, seed)] += 1
    assert max(hits) < 0.6 < np.nanmax([margin_counts[idx[truth[idx] == c]].std() /
                                        max(margin_counts[idx[truth[idx] == c]].mean(), 1e-9) for c in range(6)])


def test_matched_draw_takes_the_wanted_count_per_class():
    rng = np.random.default_rng(0)
    candidates = np.arange(100, 120)
    classes = np.repeat([2, 0, 1, 0], 5)
    picks = matched_draw(candidates, classes, np.array([3, 0, 5]), rng)
    assert np.bincount(classes[picks - 100], minlength=3).tolist() == [3, 0, 5]
    with pytest.raises(ValueError, match="class 1: 6 points wanted, 5 eligible"):
        matched_draw(candidates, classes, np.array([0, 6]), rng)


def test_class_matched_is_an_oracle_and_wraps_honest_strategies_only():
    pool, truth = build_pool(seed=4)
    assert _REGISTRY["margin_class_matched"].oracle and not _REGISTRY["margin_balanced"].oracle
    with pytest.raises(ValueError, match="oracle"):
        select(pool, "entropy_class_matched", 5, 0)
    with pytest.raises(ValueError, match="oracle baseline"):
        class_matched("balanced_random")
    mine = class_matched("margin")   # unregistered: still treated as an oracle by select
    np.testing.assert_array_equal(select(pool, mine, 9, 1, oracle_labels=truth),
                                  select(pool, "margin_class_matched", 9, 1, oracle_labels=truth))
    leaky = replace(pool, oracle_labels=truth)
    seen = {}

    def spy(state, budget, rng):
        """Records whether it saw hidden labels."""
        seen["oracle"] = state.oracle_labels
        return state.eligible_indices()[:budget]

    select(leaky, class_matched(spy), 4, 0)
    assert seen["oracle"] is None


def test_the_variants_are_registered_but_not_in_default_sweeps():
    names = strategy_names()
    for s in ("confidence", "margin", "entropy"):
        assert f"{s}_balanced" in names and f"{s}_class_matched" in names
        assert _REGISTRY[f"{s}_balanced"].variant_of == s
    assert not {n for n in strategy_names(variants=False) if "_balanced" in n or "_matched" in n}
