from __future__ import annotations

import numpy as np
import pytest

from alkit.data.synthetic import class_sizes, gaussian_mixture
from alkit.loop import TIMING_COLUMNS, balanced_validation_split, run_active_learning
from alkit.probe import ProbeConfig, predict_logits, train_linear_probe


def test_probe_learns_and_folds_standardisation():
    data = gaussian_mixture(5, 80, 10, separation=4.0, seed=1)
    x = data.train_features * 7 + 3  # far from standardised
    head = train_linear_probe(x, data.train_labels, data.test_features * 7 + 3, data.test_labels, 5,
                              ProbeConfig(), seed=0)
    acc = (predict_logits(data.test_features * 7 + 3, head.weight, head.bias).argmax(1) == data.test_labels).mean()
    # Nearest class mean is near Bayes-optimal for isotropic Gaussians: the probe must come close.
    means = np.stack([x[data.train_labels == c].mean(0) for c in range(5)])
    ncm = (np.linalg.norm((data.test_features * 7 + 3)[:, None] - means[None], axis=2).argmin(1) == data.test_labels).mean()
    assert acc >= ncm - 0.04 and acc == pytest.approx(head.best_val_accuracy)
    again = train_linear_probe(x, data.train_labels, data.test_features * 7 + 3, data.test_labels, 5,
                               ProbeConfig(), seed=0)
    np.testing.assert_array_equal(head.weight, again.weight)


def test_probe_early_stopping_keeps_best_epoch():
    data = gaussian_mixture(4, 30, 40, separation=1.5, seed=2)
    head = train_linear_probe(data.train_features, data.train_labels, data.test_features, data.test_labels, 4,
                              ProbeConfig(method="early_stopping", max_epochs=50, patience=3), seed=0)
    vals = [h["val_top1"] for h in head.history]
    assert head.best_val_accuracy == max(vals)
    assert head.epochs_run - head.best_epoch <= 3 or head.epochs_run == 50


def test_paper_probe_config():
    cfg = ProbeConfig.paper()
    assert cfg.method == "early_stopping" and not cfg.standardize
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size, cfg.max_epochs,
            cfg.lr_step, cfg.lr_gamma) == ("sgd", 15.0, 0.9, 1e-4, 128, 60, 20, 0.1)
    with pytest.raises(ValueError, match="optimizer"):
        ProbeConfig(optimizer="lbfgs")


def test_class_sizes_profiles():
    np.testing.assert_array_equal(class_sizes(10, 5000, "exp", 0.1).sum(), 20431)
    np.testing.assert_array_equal(class_sizes(4, 100, "step", 0.1), [100, 100, 10, 10])


def test_validation_split_is_balanced_and_seeded():
    labels = np.repeat(np.arange(5), [50, 40, 30, 6, 2])
    held = balanced_validation_split(labels, 5, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(labels[held], minlength=5), [5, 5, 5, 3, 1])
    np.testing.assert_array_equal(held, balanced_validation_split(labels, 5, 5, np.random.default_rng(0)))


def _run(strategy, seed=0):
    data = gaussian_mixture(6, 70, 8, separation=2.5, seed=3)
    return run_active_learning(data.train_features, data.train_labels, data.test_features, data.test_labels, 6,
                               strategy, seed=seed, initial_size=20, round_budget=15, rounds=3, val_per_class=5,
                               probe=ProbeConfig(), progress=False)


def test_loop_rows_and_determinism():
    a, b = _run("margin"), _run("margin")
    fa, fb = a.frame().drop(columns=list(TIMING_COLUMNS)), b.frame().drop(columns=list(TIMING_COLUMNS))
    assert fa.equals(fb)
    for pa, pb in zip(a.picks, b.picks):
        np.testing.assert_array_equal(pa, pb)
    assert list(a.frame()["n_labeled"]) == [20, 35, 50, 65]
    assert list(a.frame()["round"]) == [0, 1, 2, 3]
    for col in ("strategy", "oracle", "seed", "top1", "top5", "balanced_accuracy", "labeled_gini",
                "labeled_normalized_entropy", "labeled_max_min_ratio", "labeled_classes_without_label",
                "batch_distinct_classes", "batch_kl_from_pool", "selection_seconds", "training_seconds"):
        assert col in a.rows[0]
    all_picks = np.concatenate(a.picks)
    assert np.unique(all_picks).size == all_picks.size
    assert not np.isin(all_picks, a.validation_indices).any()
    assert a.label_counts.shape == (4, 6) and (a.label_counts.sum(1) == [20, 35, 50, 65]).all()


def test_loop_paired_initial_round_and_oracle_flag():
    a, b = _run("random"), _run("balanced_random")
    np.testing.assert_array_equal(a.picks[0], b.picks[0])
    assert a.rows[0]["top1"] == b.rows[0]["top1"]
    assert b.rows[0]["oracle"] is True and a.rows[0]["oracle"] is False
    assert not np.array_equal(_run("random", seed=1).picks[0], a.picks[0])


@pytest.mark.slow
def test_round_zero_head_is_shared_across_strategies_with_the_same_rows(monkeypatch):
    """The round-0 head depends on the seed, schedule and probe only: a sweep trains it once per
    seed and every strategy's rows and picks are those of a run that trains it itself."""
    import alkit.loop as loop_module

    data = gaussian_mixture(6, 70, 8, separation=2.5, seed=3)
    args = (data.train_features, data.train_labels, data.test_features, data.test_labels, 6)
    kwargs = dict(initial_size=20, round_budget=15, rounds=2, val_per_class=5, progress=False)
    alone = {s: run_active_learning(*args, s, seed=1, **kwargs) for s in ("margin", "coreset")}
    calls = []
    real = loop_module.train_linear_probe
    monkeypatch.setattr(loop_module, "train_linear_probe", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    shared: dict = {}

    def heads():
        return [key for key in shared if key[:2] == ("loop", "round0_head")]

    together = {s: run_active_learning(*args, s, seed=1, shared=shared, **kwargs) for s in ("margin", "coreset")}
    assert calls.count(20) == 1 and len(heads()) == 1   # round 0 (20 labels) trained once for both
    for s in alone:
        drop = list(TIMING_COLUMNS)
        assert alone[s].frame().drop(columns=drop).equals(together[s].frame().drop(columns=drop))
        for pa, pb in zip(alone[s].picks, together[s].picks):
            np.testing.assert_array_equal(pa, pb)
    other_seed = run_active_learning(*args, "margin", seed=2, shared=shared, **kwargs)
    assert len(heads()) == 2 and calls.count(20) == 2 and other_seed.rows[0]["seed"] == 2


def test_initial_pool_never_overlaps_the_validation_split_for_any_seed():
    from alkit.loop import first_round_split

    labels = np.repeat(np.arange(10), 20)          # 200 points, 50 held out: overlap is likely if allowed
    for seed in range(60):
        held, initial = first_round_split(labels, 10, 5, 100, seed)
        assert not held[initial].any(), seed
        assert np.unique(initial).size == 100 and held.sum() == 50

