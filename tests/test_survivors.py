"""Tests for the one-line bugs a mutation audit planted that no test caught before: each test
here fails on its mutant (named in the test's docstring) and passes on the code as it is."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alkit import loop, report
from alkit.data.synthetic import gaussian_mixture
from alkit.pool import PoolState
from alkit.probe import ProbeConfig, train_linear_probe
from alkit.scores import entropy
from alkit.strategies import select
from alkit.strategies.coreset import coreset_centers
from alkit.strategies.uncertainty import class_quotas


def test_the_internal_validation_rows_are_not_training_rows():
    """Mutant: the probe chooses λ on the rows its candidate heads were trained on.  On labels that
    are pure noise a head fits its training rows but not held-out ones: validation accuracy on
    truly held-out rows stays near chance (1/2), on training rows it is near 1."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 150)).astype(np.float32)
    y = rng.integers(0, 2, 200)
    head = train_linear_probe(x, y, None, None, 2, ProbeConfig(l2_grid=(1e-4,)))
    assert (head.logits(x).argmax(1) == y).mean() > 0.95   # it fits its training rows …
    assert head.best_val_accuracy < 0.75                      # … but not the held-out fifth


def test_the_probe_has_one_row_per_class_asked_for_not_per_class_seen():
    """Mutant: the probe takes its class count from the labels it sees."""
    data = gaussian_mixture(3, 20, 4, separation=3.0, seed=0)
    head = train_linear_probe(data.train_features, data.train_labels, None, None, 5, ProbeConfig())
    assert head.weight.shape == (5, 4) and head.bias.shape == (5,)
    assert head.logits(data.train_features).shape == (data.train_labels.size, 5)


def test_the_engine_reports_the_objective_it_minimises():
    """Mutant: the objective's penalty λ‖W‖² with the gradient of λ/2 ‖W‖²."""
    from alkit.logreg import fit_logreg, objective_reference, sample_weights

    data = gaussian_mixture(3, 30, 5, separation=2.0, seed=1)
    x, y = data.train_features.astype(np.float64), data.train_labels
    s = sample_weights(y, 3, False)
    fit = fit_logreg(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)),
                     torch.from_numpy(s.astype(np.float32)), 3, 0.5, tol=1e-5)
    expected = objective_reference(x, y, fit.weight.T.double().numpy(), fit.bias.double().numpy(), 0.5, s)[0]
    assert fit.loss == pytest.approx(expected, rel=1e-4)   # the line search's values
    # and the value at a given head before any step (the one each line search starts from)
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(5, 3)), rng.normal(size=3)
    start = fit_logreg(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)),
                       torch.from_numpy(s.astype(np.float32)), 3, 0.5, max_iter=0,
                       init=(torch.from_numpy(w0.astype(np.float32)), torch.from_numpy(b0.astype(np.float32))))
    assert start.iterations == 0
    assert start.loss == pytest.approx(objective_reference(x, y, w0.T.astype(np.float32), b0.astype(np.float32), 0.5,
                                                           s)[0], rel=1e-5)


def test_streams_initial_pool_and_selection_rounds():
    """Mutants: the initial pool drawn from the validation stream; the selection stream not keyed by
    round.  The initial pool is stream("initial")'s draw among the rows outside validation, and
    random's picks in round r are stream("selection", r)'s draw among the eligible rows."""
    data = gaussian_mixture(3, 30, 4, separation=3.0, seed=2, n_test_per_class=3)
    result = loop.run_active_learning(data.train_features, data.train_labels, data.test_features, data.test_labels,
                                      3, "random", seed=7, initial_size=9, round_budget=6, rounds=2,
                                      val_per_class=2, progress=False)
    held = np.zeros(data.train_labels.size, bool)
    held[result.validation_indices] = True
    expected = np.sort(loop.stream(7, "initial").choice(np.flatnonzero(~held), size=9, replace=False))
    np.testing.assert_array_equal(result.picks[0], expected)
    labelled = np.zeros_like(held)
    labelled[result.picks[0]] = True
    for r in (1, 2):
        eligible = np.flatnonzero(~(labelled | held))
        np.testing.assert_array_equal(result.picks[r], np.sort(loop.stream(7, "selection", r).choice(
            eligible, size=6, replace=False)))
        labelled[result.picks[r]] = True


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


def test_the_extra_quota_goes_to_random_classes_not_the_first():
    """Mutant: BASE's b mod C extra picks always go to the first classes."""
    hits = np.zeros(10)
    for seed in range(300):
        quotas = class_quotas(23, 10, np.random.default_rng(seed))
        assert quotas.sum() == 23 and set(np.unique(quotas)) <= {2, 3}
        hits += quotas == 3
    # 3 of 10 classes get an extra point: about 90 times each over 300 draws, never 300 or 0
    assert hits.min() > 50 and hits.max() < 130


def test_typiclust_skips_clusters_of_exactly_the_minimum_size():
    """Mutant: TypiClust keeps clusters of exactly 5 points (it drops those of ≤ 5)."""
    rng = np.random.default_rng(3)
    centres = [np.array([100.0 * i, 0.0]) for i in range(5)]
    sizes = [6, 6, 6, 6, 5]
    x = np.concatenate([c + rng.normal(scale=0.5, size=(s, 2)) for c, s in zip(centres, sizes)]).astype(np.float32)
    blob = np.repeat(np.arange(5), sizes)
    n = x.shape[0]
    pool = PoolState(features=x, labeled=np.zeros(n, bool), held_out=np.zeros(n, bool),
                     labels=np.full(n, -1, np.int64), num_classes=2)
    picks = select(pool, "typiclust", 5, 0)   # 5 picks: 5 clusters, the 5 blobs
    assert set(blob[picks].tolist()) == {0, 1, 2, 3}   # every cluster of 6, twice one of them; none of the 5


def test_entropy_is_at_temperature_one():
    """Mutant: entropy computed at softmax temperature 2 (on the fast float32 path too)."""
    logits = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, -1.0]], np.float32)
    p = np.exp(logits.astype(np.float64))
    p /= p.sum(1, keepdims=True)
    expected = -(p * np.log(p)).sum(1)
    np.testing.assert_allclose(entropy(logits), expected, rtol=1e-5)
    np.testing.assert_allclose(entropy(logits.astype(np.float64)), expected, rtol=1e-12)


def test_summary_counts_only_seeds_paired_with_random():
    """Mutant: the summary counts seeds without a paired random run."""
    rows = []
    for strategy, seeds in (("random", (0, 1, 2)), ("margin", (0, 1, 2, 3))):
        for seed in seeds:
            for r, n in ((0, 10), (1, 20)):
                rows.append({"dataset": "d", "strategy": strategy, "oracle": False, "seed": seed, "round": r,
                             "n_labeled": n, "top1": 0.5 + 0.01 * seed + (0.02 if strategy == "margin" else 0),
                             "balanced_accuracy": 0.5, "labeled_normalized_entropy": 1.0, "labeled_gini": 0.0,
                             "labeled_classes_without_label": 0, "batch_normalized_entropy": 1.0,
                             "batch_distinct_classes": 2})
    table = report.summary_table(pd.DataFrame(rows)).set_index("strategy")
    assert table.loc["margin", "seeds"] == 3 and table.loc["margin", "wins"] == 3
