"""Tests for the one-line bugs a mutation audit planted that no test caught before: each test
here fails on its mutant (named in the test's docstring) and passes on the code as it is.  The
survivors in one strategy live with that strategy's tests in tests/strategies/ (coreset's centres,
BASE's extra quota, TypiClust's minimum cluster size, entropy's temperature)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from alkit import loop, report
from alkit.data.synthetic import gaussian_mixture
from alkit.probe import ProbeConfig, train_linear_probe


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
