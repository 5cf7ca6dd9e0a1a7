"""The class-count experiment: class subsets, relabelling, schedules, runs and the table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alkit.experiments import class_count

from alkit import experiment
from alkit.data.synthetic import gaussian_mixture


def test_class_subsets_are_sorted_distinct_seeded_and_whole_at_full_size():
    a = class_count.class_subset(200, 25, seed=3)
    assert a.size == 25 and np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 200
    np.testing.assert_array_equal(a, class_count.class_subset(200, 25, seed=3))
    assert not np.array_equal(a, class_count.class_subset(200, 25, seed=4))
    assert not np.array_equal(a[:10], class_count.class_subset(200, 10, seed=3))   # K is part of the stream
    np.testing.assert_array_equal(class_count.class_subset(200, 200, seed=9), np.arange(200))
    for bad in (1, 201):
        with pytest.raises(ValueError, match="class count"):
            class_count.class_subset(200, bad, seed=0)


def test_restrict_keeps_the_rows_of_the_classes_and_relabels_them_in_order():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array([4, 1, 7, 4, 2, 7])
    xs, ys = class_count.restrict(x, y, np.array([4, 7]))
    np.testing.assert_array_equal(xs, x[[0, 2, 3, 5]])
    np.testing.assert_array_equal(ys, [0, 1, 0, 1])


def test_full_class_count_is_the_tiny_imagenet_cpu_schedule():
    config = experiment.sweep_config("tiny-imagenet", "cpu")
    assert class_count.FULL_CLASSES == 200 == class_count.CLASS_COUNTS[-1]
    assert class_count.schedule(200) == {"initial_size": config.initial_size, "round_budget": config.round_budget,
                                         "rounds": config.rounds, "val_per_class": config.val_per_class}
    assert class_count.schedule(10) == {"initial_size": 300, "round_budget": 100, "rounds": 8, "val_per_class": 50}
    assert set(class_count.STRATEGIES) == {"random", "balanced_random", "confidence", "margin", "entropy", "mase",
                                           "base", "badge"}
    assert len(class_count.SEEDS) >= 5


def test_batch_max_min_by_hand():
    assert class_count.batch_max_min(np.array([2, 4, 3])) == 2.0
    assert class_count.batch_max_min(np.array([0, 3])) == float("inf")
    assert class_count.batch_max_min(np.array([0, 3]), pseudo=1.0) == 4.0


def _standin():
    data = gaussian_mixture(12, 40, 16, separation=2.5, seed=5, n_test_per_class=10)
    return experiment.StudyData("tiny-imagenet", "stand-in", data.train_features, data.train_labels,
                                data.test_features, data.test_labels, 12, "synthetic stand-in", True)


def test_runs_land_per_class_count_and_the_table_pairs_by_seed(tmp_path):
    data = _standin()
    per_class = {"initial": 3, "round_budget": 2, "rounds": 2, "val_per_class": 2}
    heads: dict = {}
    for k in (4, 6):
        for seed in (0, 1, 2):
            for strategy in ("random", "margin", "base"):
                frame = class_count.run_one(data, k, strategy, seed, tmp_path / "cc", tmp_path / "sweep",
                                            scale="smoke", per_class=per_class,
                                            shared=heads.setdefault(class_count.shared_key(k, seed, 12), {}))
                assert list(frame["n_labeled"]) == [3 * k, 5 * k, 7 * k] and (frame["num_classes"] == k).all()
    # the runs of one (K, seed) read the same features: their strategies share one round-0 head;
    # with every class, the runs of every seed read the same features
    assert len(heads) == 6
    assert all(len([key for key in shared if key[:2] == ("loop", "round0_head")]) == 1 for shared in heads.values())
    assert class_count.shared_key(12, 0, 12) == class_count.shared_key(12, 3, 12) != class_count.shared_key(4, 0, 12)
    meta = experiment.run_path(tmp_path / "cc" / "k4", "margin", 1).with_suffix(".json")
    import json
    recorded = json.loads(meta.read_text())["run_key"]["data"]
    np.testing.assert_array_equal(recorded["classes"], class_count.class_subset(12, 4, 1))
    rows = class_count.load_class_count(tmp_path / "cc", tmp_path / "sweep", scale="smoke", class_counts=(4, 6),
                                        strategies=("random", "margin", "base"), seeds=(0, 1, 2))
    assert set(rows["num_classes"]) == {4, 6} and rows.groupby(["num_classes", "strategy"])["seed"].nunique().eq(3).all()
    # Batch counts are the differences of the labelled-set counts: each queried batch holds the budget.
    queried = rows[rows["round"] > 0]
    assert all(int(np.sum(c)) == 2 * k for c, k in zip(queried["batch_counts"], queried["num_classes"]))
    table = class_count.class_count_table(rows)
    assert list(table.columns[:7]) == ["num_classes", "strategy", "oracle", "seeds", "auc_diff", "auc_diff_lo",
                                       "auc_diff_hi"]
    # Δ AUC by hand for one row: per seed, margin's area minus random's, then the mean.
    from alkit.stats import area_under_curve
    sub = rows[rows["num_classes"] == 6]
    diffs = []
    for seed in (0, 1, 2):
        auc = {s: area_under_curve(g["n_labeled"], g["top1"]) for s, g in sub[sub["seed"] == seed].groupby("strategy")}
        diffs.append(auc["margin"] - auc["random"])
    row = table[(table["num_classes"] == 6) & (table["strategy"] == "margin")].iloc[0]
    assert row["auc_diff"] == pytest.approx(np.mean(diffs)) and row["seeds"] == 3
    assert row["auc_diff_lo"] < row["auc_diff"] < row["auc_diff_hi"] or np.ptp(diffs) == 0
    # Batch balance by hand: the mean entropy of margin's queried batches at K = 6.
    want = sub[(sub["strategy"] == "margin") & (sub["round"] > 0)]["batch_normalized_entropy"].mean()
    assert row["batch_entropy"] == pytest.approx(want)
    assert table.loc[table["strategy"] == "random", "auc_diff"].isna().all()


def test_a_finished_run_is_not_recomputed(tmp_path, monkeypatch):
    data = _standin()
    per_class = {"initial": 3, "round_budget": 2, "rounds": 1, "val_per_class": 2}
    first = class_count.run_one(data, 4, "margin", 0, tmp_path, tmp_path / "sweep", scale="smoke", per_class=per_class)
    import alkit.experiments.runs

    monkeypatch.setattr(alkit.experiments.runs, "run_active_learning", lambda *a, **k: pytest.fail("recomputed a finished run"))
    again = class_count.run_one(data, 4, "margin", 0, tmp_path, tmp_path / "sweep", scale="smoke", per_class=per_class)
    pd.testing.assert_frame_equal(first.reset_index(drop=True), again.reset_index(drop=True), check_dtype=False)


def test_table_needs_runs():
    with pytest.raises(ValueError, match="class-count"):
        class_count.class_count_table(pd.DataFrame())
