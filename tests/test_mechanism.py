"""The mechanism experiment: its cells, its runs end to end at smoke scale, and the parts of a
strategy's gain worked out by hand."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alkit.experiments import class_count, mechanism, runs

from alkit import report
from alkit.stats import mean_interval


def test_cells_hold_every_run_the_experiment_asks_for():
    cells = {c.name: c for c in mechanism.cells("cpu")}
    plain = {"random", "balanced_random", "confidence", "margin", "entropy", "base"}
    knobs = {f"{s}_{kind}" for s in ("confidence", "margin", "entropy") for kind in ("balanced", "class_matched")}
    for k in (10, 25, 50, 100, 200):
        assert set(cells[f"k{k}"].strategies) == plain | knobs and cells[f"k{k}"].seeds == tuple(range(10))
    schedule = {"random", "margin", "entropy", "margin_balanced", "entropy_balanced", "base"}
    for k in (10, 200):
        for name in ("half", "double"):
            assert set(cells[f"k{k}-{name}"].strategies) == schedule and len(cells[f"k{k}-{name}"].seeds) == 10
    toy = cells["cifar10"]
    assert set(toy.strategies) == (plain - {"base"}) | knobs and toy.seeds == tuple(range(5))
    assert len(cells) == 10
    # per-class schedules: half and double of the paper's 30 + 8 × 10
    assert mechanism.SCHEDULES["paper"] == class_count.PER_CLASS
    assert class_count.schedule(200, mechanism.SCHEDULES["half"])["initial_size"] == 3000
    assert class_count.schedule(10, mechanism.SCHEDULES["double"])["round_budget"] == 200


def test_shared_runs_are_read_from_their_own_experiments(tmp_path):
    cells = {c.name: c for c in mechanism.cells("cpu")}
    where = lambda cell, s: mechanism.run_folder(cells[cell], s, "cpu", "M", "CC", "SW")   # noqa: E731
    assert str(where("k10", "margin")) == "CC/k10"                        # the class-count experiment's
    assert str(where("k200", "margin")) == "SW/tiny-imagenet"             # the cpu sweep's (K = 200)
    assert str(where("k200", "margin_balanced")) == "M/k200"              # the experiment's own
    assert str(where("k200-half", "margin")) == "M/k200-half"             # other schedules: own
    assert str(where("cifar10", "margin")) == "SW/cifar10"
    assert str(where("cifar10", "margin_class_matched")) == "M/cifar10"
    smoke = mechanism.cells("smoke")[0]
    assert str(mechanism.run_folder(smoke, "margin", "smoke", "M", "CC", "SW")) == f"M/{smoke.name}"


@pytest.mark.slow
def test_smoke_runs_end_to_end_resume_and_tabulate(tmp_path, monkeypatch):
    out, cc, sweep = tmp_path / "m", tmp_path / "cc", tmp_path / "sweep"
    mechanism.run_mechanism(out, cc, sweep, scale="smoke", source="synthetic")
    frame = mechanism.load_mechanism(out, cc, sweep, scale="smoke")
    expected = sum(len(c.strategies) * len(c.seeds) for c in mechanism.cells("smoke"))
    assert frame.groupby(["cell", "strategy", "seed"]).ngroups == expected
    assert json.loads((out / "sweep_times.json").read_text())[-1]["runs_run"] == expected
    # a second call recomputes nothing
    monkeypatch.setattr(runs, "run_active_learning", lambda *a, **k: pytest.fail("recomputed a finished run"))
    mechanism.run_mechanism(out, cc, sweep, scale="smoke", source="synthetic")
    table = mechanism.mechanism_table(frame)
    assert {"auc_diff", "auc_diff_lo", "auc_diff_hi", "batch_kl_from_pool", "batch_max_min_ratio_plus1",
            "labeled_entropy_final"} <= set(table.columns)
    assert table.loc[table["strategy"] == "margin_class_matched", "oracle"].all()
    assert set(table["cell"]) == {c.name for c in mechanism.cells("smoke")}


def test_a_run_made_with_another_schedule_is_refused(tmp_path):
    out, cc, sweep = tmp_path / "m", tmp_path / "cc", tmp_path / "sweep"
    cell = mechanism.cells("smoke")[0]
    data = class_count.loading.load_study_data("tiny-imagenet", "smoke", source="synthetic", progress=False)
    mechanism.run_one(data, cell, "random", 0, "smoke", out, cc, sweep)
    stem = runs.run_path(out / cell.name, "random", 0)
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta["config"]["round_budget"] += 1
    stem.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not the K = 5 schedule"):
        mechanism.load_mechanism(out, cc, sweep, scale="smoke")


# ----------------------------------------------------------------------------- parts, by hand

def _run_rows(cell: str, k: int, schedule: str, strategy: str, seed: int, auc: float) -> pd.DataFrame:
    """Two rounds with the same top-1 ``auc``, so that the area under the curve is ``auc`` exactly."""
    return pd.DataFrame({
        "dataset": "x", "data_source": "hand-made", "strategy": strategy, "oracle": strategy.endswith("_matched"),
        "seed": seed, "round": [0, 1], "n_labeled": [k, 2 * k], "top1": [auc, auc],
        "batch_kl_from_pool": [0.0, 0.1], "labeled_normalized_entropy": [1.0, 0.9],
        "batch_counts": [np.ones(k), np.r_[np.full(k - 1, 1), 3]],
        "cell": cell, "cell_label": cell, "num_classes": k, "schedule": schedule})


#: Per seed AUC at K = 10 and K = 200 (margin's gain falls; its composition costs; balancing recovers).
HAND = {
    ("k10", 10): {"random": [0.50, 0.52, 0.51], "margin": [0.53, 0.55, 0.54],
                  "margin_class_matched": [0.505, 0.525, 0.515], "margin_balanced": [0.53, 0.55, 0.545]},
    ("k200", 200): {"random": [0.40, 0.41, 0.42], "margin": [0.39, 0.40, 0.41],
                    "margin_class_matched": [0.385, 0.395, 0.404], "margin_balanced": [0.405, 0.415, 0.424]},
}


def _hand_frame() -> pd.DataFrame:
    return pd.concat([_run_rows(cell, k, "paper", s, seed, auc) for (cell, k), by in HAND.items()
                      for s, values in by.items() for seed, auc in enumerate(values)], ignore_index=True)


def test_parts_are_the_paired_differences_and_add_up():
    parts = mechanism.parts_table(_hand_frame()).set_index(["cell", "part"])
    # K = 200: margin − random per seed −0.01, −0.01, −0.01 → total −0.01 (zero width)
    assert parts.loc[("k200", "total"), "mean"] == pytest.approx(-0.01)
    # composition: matched − random = −0.015, −0.015, −0.016 → mean −0.0153333
    assert parts.loc[("k200", "composition"), "mean"] == pytest.approx(-0.046 / 3)
    # within: margin − matched = 0.005, 0.005, 0.006
    assert parts.loc[("k200", "within_classes"), "mean"] == pytest.approx(0.016 / 3)
    # total = composition + within, exactly, per cell
    for cell in ("k10", "k200"):
        assert parts.loc[(cell, "total"), "mean"] == pytest.approx(
            parts.loc[(cell, "composition"), "mean"] + parts.loc[(cell, "within_classes"), "mean"])
    # balancing gain: balanced − margin = 0.015, 0.015, 0.014, with the t interval of those three
    expected = mean_interval(np.array([0.015, 0.015, 0.014]))
    row = parts.loc[("k200", "balancing_gain")]
    assert (row["mean"], row["lo"], row["hi"]) == pytest.approx((expected["mean"], expected["low"], expected["high"]))


def test_claim1_is_supported_from_hand_made_runs():
    evidence = mechanism.claim1_evidence(_hand_frame())
    row = evidence.set_index("strategy").loc["margin"]
    # gain at 10: 0.03, 0.03, 0.03; at 200: −0.01 each → change −0.04 (zero-variance samples: no width)
    assert row["change"] == pytest.approx(-0.04)
    assert row["composition_hi"] < 0 < row["balancing_gain_lo"]
    verdict, text = report.claim1_verdict(evidence)
    assert verdict == "supported" and "margin" in text
    # the same runs without the balanced strategy: one intervention missing → inconclusive
    no_balanced = _hand_frame().query("strategy != 'margin_balanced'")
    assert report.claim1_verdict(mechanism.claim1_evidence(no_balanced))[0] == "inconclusive"
