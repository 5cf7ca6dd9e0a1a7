"""The feature sample that ships with alkit (the playground's default data)."""
from __future__ import annotations

import numpy as np
import pytest

from alkit import experiment

from alkit.data.synthetic import gaussian_mixture
from alkit.experiments import samples


def test_shipped_sample_is_real_features_of_forty_classes():
    data = samples.load_sample()
    assert data.num_classes == samples.SAMPLE_CLASSES == 40 and not data.synthetic
    assert data.train_features.shape == (40 * samples.TRAIN_PER_CLASS, 1280)
    assert data.test_features.shape == (40 * samples.TEST_PER_CLASS, 1280)
    np.testing.assert_array_equal(np.bincount(data.train_labels), np.full(40, samples.TRAIN_PER_CLASS))
    assert np.isfinite(data.train_features).all() and data.train_features.dtype == np.float16
    assert len(set(data.meta["source_classes"])) == 40
    s = samples.SAMPLE_SCHEDULE   # the playground's schedule fits in the pool
    last = s["initial_size"] + s["rounds"] * s["round_budget"]
    assert last <= data.train_labels.size - 40 * s["val_per_class"]


def test_build_sample_is_seeded_and_relabels(tmp_path):
    mix = gaussian_mixture(12, 30, 6, separation=2.0, seed=1, n_test_per_class=10)
    data = experiment.StudyData("x", "x", mix.train_features, mix.train_labels, mix.test_features, mix.test_labels,
                                12, "stand-in", True)
    a = samples.load_sample(samples.build_sample(data, tmp_path / "a.npz", 4, 5, 2, seed=3))
    b = samples.load_sample(samples.build_sample(data, tmp_path / "b.npz", 4, 5, 2, seed=3))
    np.testing.assert_array_equal(a.train_features, b.train_features)
    assert a.num_classes == 4 and sorted(set(a.train_labels)) == [0, 1, 2, 3]
    with np.load(tmp_path / "a.npz") as arrays:   # each row is the source row of the class it is relabelled from
        classes, rows = arrays["source_classes"], arrays["source_train_rows"]
        np.testing.assert_array_equal(classes[arrays["train_labels"]], mix.train_labels[rows])
    with pytest.raises(ValueError, match="fewer than"):
        samples.build_sample(data, tmp_path / "c.npz", 4, 500, 2)
    with pytest.raises(ValueError, match="missing"):
        samples.load_sample(tmp_path / "none.npz")
