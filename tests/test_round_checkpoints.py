"""A run killed after any round resumes from its checkpoint with the rows and picks of an uninterrupted run."""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from alkit.data.synthetic import gaussian_mixture
from alkit.loop import TIMING_COLUMNS, run_active_learning
from alkit.pool import PoolState, StrategyCache
from alkit.strategies import select


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
@pytest.mark.slow
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


def _count_set_ups(monkeypatch):
    """Record, for every coreset call from now on, whether it started from a carry (True) or set
    every candidate up against every centre afresh (False)."""
    from alkit.strategies import _coreset_engine

    started_from_carry = []
    real = _coreset_engine.resume

    def resume(*args, **kwargs):
        carried = real(*args, **kwargs)
        started_from_carry.append(carried is not None)
        return carried

    monkeypatch.setattr(_coreset_engine, "resume", resume)
    return started_from_carry


def test_a_resumed_coreset_run_reuses_its_carry_with_the_same_picks(tmp_path, monkeypatch):
    """The carry used to be dropped after a resume (it was bound to the features object): the
    resumed rounds set up from scratch.  Now no resumed round does, and the picks are unchanged."""
    d = gaussian_mixture(6, 200, 64, separation=2.5, seed=3)
    ckpt = tmp_path / "run.ckpt"
    _killed_in_round_2(d, "coreset", ckpt)   # the checkpoint holds rounds 0-1 and round 2's batch

    set_ups = _count_set_ups(monkeypatch)
    whole = _run(d, "coreset")
    assert set_ups == [False, True, True, True]   # only the first query round sets up afresh
    set_ups.clear()
    again = _run(d, "coreset", checkpoint=ckpt)
    assert set_ups == [True, True]   # rounds 2 and 3 query; both start from the carry
    _same(whole, again)


def test_a_coreset_checkpoint_is_bounded_by_the_state_it_must_hold(tmp_path):
    """A 1,200 × 64 pool: the checkpoint held the features (307 KB of a 364 KB file).  What it must
    hold: per pool row at most the carry (candidate id, bound, centres met, nearest centre and
    runner-up: 36 bytes) and its pick (8 bytes), under 6 × 8 bytes; plus rows, head and config, a
    few KB.  A copy of the features (D × 4 = 256 bytes a row) cannot fit."""
    d = gaussian_mixture(6, 200, 64, separation=2.5, seed=3)
    n = d.train_features.shape[0]
    ckpt = tmp_path / "run.ckpt"
    _killed_in_round_2(d, "coreset", ckpt)
    bound = 6 * 8 * n + 16_384
    assert bound < d.train_features.nbytes / 4   # so the bound means something at this size
    assert ckpt.stat().st_size < bound
    state = pickle.loads(ckpt.read_bytes())
    assert ("coreset", "carry") in state["cache"]["run"]   # small because derived, not because dropped


def test_the_cache_state_round_trips_and_holds_no_features(monkeypatch):
    """state_dict → pickle → load_state_dict on another copy of the features: the next coreset call
    starts from the carry, with the picks of a selection from scratch."""
    d = gaussian_mixture(6, 100, 16, separation=2.5, seed=1)
    x = d.train_features
    labeled = np.zeros(x.shape[0], bool)
    labeled[::20] = True

    def pool(features, cache, extra=()):
        mask = labeled.copy()
        mask[list(extra)] = True
        return PoolState(features=features, labeled=mask, held_out=np.zeros_like(mask),
                         labels=np.where(mask, d.train_labels, -1).astype(np.int64), num_classes=6, cache=cache)

    cache = StrategyCache(x)
    first = select(pool(x, cache), "coreset", 10, np.random.default_rng(0))
    state = cache.state_dict()
    assert set(state) == {"format", "features", "run"} and ("coreset", "carry") in state["run"]

    copy = x.copy()
    restored = StrategyCache(copy)
    restored.load_state_dict(pickle.loads(pickle.dumps(state)))
    set_ups = _count_set_ups(monkeypatch)
    again = select(pool(copy, restored, first), "coreset", 10, np.random.default_rng(1))
    assert set_ups == [True]
    np.testing.assert_array_equal(again, select(pool(x, None, first), "coreset", 10, np.random.default_rng(1)))

    with pytest.raises(ValueError, match="shape"):
        StrategyCache(x[:50].copy()).load_state_dict(state)


@pytest.mark.parametrize("leak", ["features", "rows", "tensor", "object"])
def test_the_cache_state_refuses_the_features_and_opaque_objects(leak):
    import torch

    x = gaussian_mixture(3, 20, 4, seed=0).train_features
    value = {"features": x, "rows": x[2:5], "tensor": torch.from_numpy(x), "object": object()}[leak]
    cache = StrategyCache(x)
    cache.run[("mine", "stuff")] = {"ids": np.arange(3), "kept": (1.0, value)}
    with pytest.raises(ValueError, match="mine"):
        cache.state_dict()
