from __future__ import annotations

import numpy as np
import pytest

from alkit.metrics import classification_metrics, gini_coefficient, imbalance_metrics, kl_divergence, normalized_entropy


def test_classification_metrics_hand_made():
    logits = np.array([
        [5, 1, 0, 0, 0, 0], [0, 5, 1, 0, 0, 0], [1, 0, 5, 0, 0, 0], [5, 0, 0, 0, 0, 1],
    ], float)
    labels = np.array([0, 1, 0, 5])
    m = classification_metrics(logits, labels, 6)
    assert m["top1"] == pytest.approx(0.5)
    # label 0 of row 2 is its 2nd logit; label 5 of row 3 is its 2nd logit: both in the top 5.
    assert m["top5"] == pytest.approx(1.0)
    np.testing.assert_allclose(m["per_class_accuracy"][[0, 1, 5]], [0.5, 1.0, 0.0])
    assert np.isnan(m["per_class_accuracy"][2])
    assert m["balanced_accuracy"] == pytest.approx(0.5)


def test_imbalance_metrics_balanced_and_skewed():
    bal = imbalance_metrics(np.repeat(np.arange(4), 5), 4, np.ones(4))
    assert bal["max_min_ratio"] == 1 and bal["normalized_entropy"] == pytest.approx(1.0)
    assert bal["gini"] == pytest.approx(0.0) and bal["classes_without_label"] == 0
    assert bal["distinct_classes"] == 4 and bal["kl_from_pool"] == pytest.approx(0.0)
    skew = imbalance_metrics(np.array([0, 0, 0, 0, 1]), 4, np.ones(4))
    assert skew["max_min_ratio"] == float("inf") and skew["classes_without_label"] == 2
    assert skew["distinct_classes"] == 2
    p = np.array([0.8, 0.2])
    assert skew["normalized_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    assert skew["kl_from_pool"] == pytest.approx((p * np.log(p / 0.25)).sum())


def test_gini_hand_made():
    assert gini_coefficient(np.array([0, 0, 0, 10])) == pytest.approx(0.75)
    assert gini_coefficient(np.array([1, 3])) == pytest.approx(0.25)
    assert normalized_entropy(np.array([7, 0, 0])) == pytest.approx(0.0)
    assert kl_divergence(np.array([1, 1]), np.array([1, 3])) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3))
