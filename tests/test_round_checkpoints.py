"""A run killed after any round resumes from its checkpoint with the rows and picks of an uninterrupted run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alkit.loop import TIMING_COLUMNS, run_active_learning
from alkit.synthetic import gaussian_mixture


class Killed(Exception):
    pass


def _data():
    return gaussian_mixture(6, 60, 8, separation=2.5, seed=3)


def _run(d, strategy, **kwargs):
    return run_active_learning(d.train_features, d.train_labels, d.test_features, d.test_labels, d.num_classes,
                               strategy, seed=4, initial_size=12, round_budget=9, rounds=4, val_per_class=3,
                               progress=False, **kwargs)


def _killed_in_round_2(d, strategy, ckpt):
    """Run ``strategy`` with a checkpoint and stop it in round 2, as a kill would."""
    def kill(row, batch):
        if row["round"] == 2:
            raise Killed

    with pytest.raises(Killed):
        _run(d, strategy, checkpoint=ckpt, on_round=kill)


def _same(a, b):
    cols = [c for c in a.frame().columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(a.frame()[cols], b.frame()[cols])
    assert len(a.picks) == len(b.picks) and all(np.array_equal(x, y) for x, y in zip(a.picks, b.picks))
    np.testing.assert_array_equal(a.label_counts, b.label_counts)
    np.testing.assert_array_equal(a.per_class_accuracy, b.per_class_accuracy)


# margin: the warm-started probe; coreset: distance bounds carried in the run's cache;
# typiclust: the clustering computed in the first query round and reused after it.
@pytest.mark.parametrize("strategy", ["margin", "coreset", "typiclust"])
@pytest.mark.parametrize("killed_after", [0, 2])
def test_a_killed_run_resumes_at_its_round_with_the_same_rows_and_picks(tmp_path, strategy, killed_after):
    d = _data()
    whole = _run(d, strategy)
    ckpt = tmp_path / "run.ckpt"
    rounds_seen = []

    def kill(row, batch):
        rounds_seen.append(row["round"])
        if row["round"] == killed_after + 1:   # dies in round killed_after + 1, after its head was trained
            raise Killed

    with pytest.raises(Killed):
        _run(d, strategy, checkpoint=ckpt, on_round=kill)
    assert ckpt.is_file()
    resumed_rounds = []
    again = _run(d, strategy, checkpoint=ckpt, on_round=lambda row, batch: resumed_rounds.append(row["round"]))
    assert resumed_rounds == list(range(killed_after + 1, 5))   # rounds up to the checkpoint are not redone
    _same(whole, again)


def test_a_checkpoint_of_other_settings_is_ignored(tmp_path):
    d = _data()
    ckpt = tmp_path / "run.ckpt"

    _killed_in_round_2(d, "margin", ckpt)
    seen = []
    other = run_active_learning(d.train_features, d.train_labels, d.test_features, d.test_labels, d.num_classes,
                                "entropy", seed=4, initial_size=12, round_budget=9, rounds=4, val_per_class=3,
                                progress=False, checkpoint=ckpt, on_round=lambda row, batch: seen.append(row["round"]))
    assert seen == [0, 1, 2, 3, 4]   # another strategy starts from round 0
    _same(other, _run(d, "entropy"))
    ckpt.write_bytes(b"not a pickle")
    _same(_run(d, "margin", checkpoint=ckpt), _run(d, "margin"))


def test_a_checkpoint_of_other_data_is_ignored(tmp_path):
    """Same settings, other features (re-extracted, edited): the checkpoint is not theirs."""
    d = _data()
    ckpt = tmp_path / "run.ckpt"

    _killed_in_round_2(d, "margin", ckpt)
    other = gaussian_mixture(6, 60, 8, separation=2.5, seed=3)
    other.train_features[5] += 1.0
    seen = []
    again = run_active_learning(other.train_features, other.train_labels, other.test_features, other.test_labels,
                                6, "margin", seed=4, initial_size=12, round_budget=9, rounds=4, val_per_class=3,
                                progress=False, checkpoint=ckpt, on_round=lambda row, batch: seen.append(row["round"]))
    assert seen == [0, 1, 2, 3, 4]


def test_a_coreset_checkpoint_holds_no_copy_of_the_pool_and_resumes_with_its_carry(tmp_path, monkeypatch):
    """The coreset carry kept a reference to the features, pickled into every checkpoint (a copy of
    the pool per round) and dropped after a resume; it keeps a token now."""
    from alkit.strategies import _coreset_engine

    d = gaussian_mixture(6, 200, 64, separation=2.5, seed=3)
    ckpt = tmp_path / "run.ckpt"

    _killed_in_round_2(d, "coreset", ckpt)
    assert ckpt.stat().st_size < d.train_features.nbytes / 4   # 300 KB of features; the state is far smaller
    resumed = []
    real = _coreset_engine.resume
    monkeypatch.setattr(_coreset_engine, "resume", lambda *a, **k: resumed.append(real(*a, **k)) or resumed[-1])
    again = _run(d, "coreset", checkpoint=ckpt)
    assert resumed and resumed[0] is not None   # the first round after the resume starts from the carry
    _same(_run(d, "coreset"), again)
