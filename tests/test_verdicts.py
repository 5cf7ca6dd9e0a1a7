"""The verdict machinery, tested so that a wrong rule fails (issue 13, item 6).

Every expected number below is worked out by hand in a comment (or from a closed form stated in
the test), never by calling the function under test.  The rule is ``alkit.report``'s docstring.

Student-t quantiles used (two-sided 95 %: t_{0.975, ν}):
  ν = 1: the t distribution is Cauchy, F(t) = 1/2 + arctan(t)/π, so t_p = tan(π (p − 1/2));
         t_{0.975, 1} = tan(0.475 π) = 12.7062.
  ν = 2: F(t) = 1/2 + t / (2 √(2 + t²)), so with a = 2p − 1, t_p = a √(2 / (1 − a²));
         t_{0.975, 2} = 0.95 √(2 / 0.0975) = 4.30265,  t_{0.95, 2} = 0.90 √(2 / 0.19) = 2.91999.
  ν = 4: t_{0.975, 4} = 2.776 (table value: NIST/SEMATECH e-Handbook of Statistical Methods,
         section 1.3.6.7.2 "Critical values of the Student's t distribution", column 0.975, ν = 4).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alkit import report
from alkit.stats import area_under_curve, mean_interval, paired_differences


def t_975_df2() -> float:
    a = 0.95
    return a * math.sqrt(2.0 / (1.0 - a * a))


def t_quantile_df1(p: float) -> float:
    return math.tan(math.pi * (p - 0.5))


T_975_DF4_TABLE = 2.776  # NIST/SEMATECH e-Handbook 1.3.6.7.2, rounded to 3 decimals


# ------------------------------------------------------------------------------- mean_interval


def test_t_quantiles_written_here_are_the_textbook_ones():
    # The closed forms above against the printed table (t_{0.975,1} = 12.706, t_{0.975,2} = 4.303).
    assert t_quantile_df1(0.975) == pytest.approx(12.706, abs=5e-4)
    assert t_975_df2() == pytest.approx(4.303, abs=5e-4)


def test_interval_is_student_t_with_sample_sd_for_three_values():
    # [1, 2, 6]: mean 3; deviations −2, −1, 3 → sum of squares 14; s² = 14 / (3 − 1) = 7;
    # standard error √(7 / 3) = 1.52753; half width t_{0.975,2} · 1.52753 = 4.30265 · 1.52753 = 6.57241.
    # (z = 1.96 would give 2.99396; ddof = 0, s² = 14 / 3, would give 4.30265 · 1.24722 = 5.36630.)
    got = mean_interval(np.array([1.0, 2.0, 6.0]))
    half = t_975_df2() * math.sqrt(7.0 / 3.0)
    assert half == pytest.approx(6.57241, abs=1e-5)
    assert got["n"] == 3 and got["mean"] == pytest.approx(3.0)
    assert got["low"] == pytest.approx(3.0 - half, rel=1e-9)
    assert got["high"] == pytest.approx(3.0 + half, rel=1e-9)


def test_interval_is_student_t_with_sample_sd_for_five_values():
    # [2, 4, 4, 5, 10]: mean 5; deviations −3, −1, −1, 0, 5 → sum of squares 36; s² = 36 / 4 = 9, s = 3;
    # standard error 3 / √5 = 1.34164; half width 2.776 · 1.34164 = 3.7244 (table t, 3 decimals).
    # (z = 1.96: 2.6296; ddof = 0, s = √(36 / 5) = 2.6833: 2.776 · 1.2 = 3.3312.)
    got = mean_interval(np.array([2.0, 4.0, 4.0, 5.0, 10.0]))
    half = T_975_DF4_TABLE * 3.0 / math.sqrt(5.0)
    assert got["mean"] == pytest.approx(5.0)
    assert got["high"] - got["mean"] == pytest.approx(half, rel=5e-4)  # the table value is rounded
    assert got["mean"] - got["low"] == pytest.approx(half, rel=5e-4)


def test_interval_for_two_values_uses_one_degree_of_freedom():
    # [0, 2]: mean 1; s² = ((−1)² + 1²) / 1 = 2; standard error √(2 / 2) = 1; half = t_{0.975,1} = 12.7062.
    # (z: 1.96; ddof = 0: s = 1, standard error 1/√2 → 8.985.)
    got = mean_interval(np.array([0.0, 2.0]))
    assert got["low"] == pytest.approx(1.0 - t_quantile_df1(0.975), rel=1e-9)
    assert got["high"] == pytest.approx(1.0 + t_quantile_df1(0.975), rel=1e-9)


def test_interval_level_is_two_sided():
    # 90 % two-sided → the 0.95 quantile: t_{0.95,2} = 0.9 √(2 / 0.19) = 2.91999; half = 2.91999 · √(7/3) = 4.46035.
    got = mean_interval(np.array([1.0, 2.0, 6.0]), level=0.90)
    half = 0.9 * math.sqrt(2.0 / 0.19) * math.sqrt(7.0 / 3.0)
    assert half == pytest.approx(4.46035, abs=1e-5)
    assert got["high"] - 3.0 == pytest.approx(half, rel=1e-9)


def test_interval_drops_non_finite_values_and_handles_tiny_samples():
    # Non-finite entries are dropped: the interval of [1, nan, 2, inf, 6] is that of [1, 2, 6].
    got = mean_interval(np.array([1.0, np.nan, 2.0, np.inf, 6.0]))
    assert got["n"] == 3 and got["high"] == pytest.approx(3.0 + t_975_df2() * math.sqrt(7.0 / 3.0), rel=1e-9)
    one = mean_interval(np.array([0.25]))
    assert (one["mean"], one["low"], one["high"], one["n"]) == (0.25, 0.25, 0.25, 1)
    none = mean_interval(np.array([np.nan]))
    assert none["n"] == 0 and np.isnan(none["mean"]) and np.isnan(none["low"]) and np.isnan(none["high"])


# ------------------------------------------------------------------------------- paired_differences / AUC


def test_paired_differences_pair_by_seed_and_group():
    # Random's luck differs a lot by seed (0.5, 0.8, 0.3); margin = random + d for the same seed.
    # Seed 3 exists for random only and must be ignored.
    luck = {0: 0.5, 1: 0.8, 2: 0.3, 3: 0.0}
    d100 = {0: 0.01, 1: 0.02, 2: 0.06}     # mean 0.03, half 4.30265 · √(7/3) · 0.01 = 0.065724 → straddles 0
    d200 = {0: -0.04, 1: -0.05, 2: -0.09}  # mean −0.06, half 0.065724 → [−0.12572, +0.00572]
    rows = []
    for seed, base in luck.items():
        rows += [{"strategy": "random", "seed": seed, "n_labeled": 100, "top1": base},
                 {"strategy": "random", "seed": seed, "n_labeled": 200, "top1": base + 0.1}]
        if seed in d100:
            rows += [{"strategy": "margin", "seed": seed, "n_labeled": 100, "top1": base + d100[seed]},
                     {"strategy": "margin", "seed": seed, "n_labeled": 200, "top1": base + 0.1 + d200[seed]}]
    out = paired_differences(pd.DataFrame(rows[::-1]), "top1").set_index("n_labeled")  # row order must not matter
    half = t_975_df2() * math.sqrt(7.0 / 3.0) * 0.01
    assert out.loc[100, "n"] == 3 and out.loc[100, "mean"] == pytest.approx(0.03, abs=1e-12)
    assert out.loc[100, "low"] == pytest.approx(0.03 - half, abs=1e-12)
    assert (out.loc[100, "wins"], out.loc[100, "losses"]) == (3, 0)
    assert out.loc[200, "mean"] == pytest.approx(-0.06, abs=1e-12)
    assert out.loc[200, "high"] == pytest.approx(-0.06 + half, abs=1e-12)
    assert (out.loc[200, "wins"], out.loc[200, "losses"]) == (0, 3)
    with pytest.raises(ValueError, match="baseline"):
        paired_differences(pd.DataFrame(rows), "top1", baseline="entropy")


def test_area_is_trapezoid_over_sorted_x_divided_by_the_range():
    # x = 0, 1, 3 and y = 0, 1, 1: (0.5 · 1 + 1 · 2) / 3 = 0.83333; input order must not matter.
    assert area_under_curve([3, 0, 1], [1.0, 0.0, 1.0]) == pytest.approx(2.5 / 3)
    assert area_under_curve([100, 200, 300], [0.5, 0.6, 0.7]) == pytest.approx(0.6)
    assert area_under_curve([5], [0.4]) == pytest.approx(0.4)          # one point: its value
    assert area_under_curve([5, 5], [0.4, 0.6]) == pytest.approx(0.5)  # no range: the mean


# ------------------------------------------------------------------------------- outcome


@pytest.mark.parametrize("low, high, expected", [
    (0.001, 0.02, "win"),
    (-0.02, -0.001, "loss"),
    (-0.01, 0.02, "tie"),         # straddles 0
    (-0.02, 0.01, "tie"),         # straddles 0, mostly below
    (0.0, 0.02, "tie"),           # touches 0: not entirely above
    (-0.02, 0.0, "tie"),          # touches 0: not entirely below
    (0.0, 0.0, "tie"),
    (np.nan, 0.02, "tie"),        # non-finite bounds are never a verdict
    (0.01, np.inf, "tie"),
    (-np.inf, -0.01, "tie"),
    (np.nan, np.nan, "tie"),
])
def test_outcome_needs_the_whole_interval_on_one_side_of_zero(low, high, expected):
    assert report.outcome(low, high) == expected


# ------------------------------------------------------------------------------- summary_table


def _rows(dataset, strategy, seed, auc, oracle=False, labeled_entropy=1.0, batch_entropy=1.0):
    """Two rounds (100 and 200 labels) with a flat curve, so the seed's AUC and final top-1 are ``auc``."""
    return [{"dataset": dataset, "strategy": strategy, "oracle": oracle, "seed": seed, "round": r,
             "n_labeled": 100 * (r + 1), "top1": auc, "balanced_accuracy": auc,
             "labeled_normalized_entropy": labeled_entropy, "labeled_gini": 0.0,
             "labeled_classes_without_label": 0, "batch_normalized_entropy": batch_entropy,
             "batch_distinct_classes": 10}
            for r in range(2)]


# Random's per-seed AUC: large seed luck, so only pairing by seed makes small differences visible.
RANDOM_LUCK = {0: 0.50, 1: 0.70, 2: 0.60, 3: 0.90}


def _frame(diffs: dict[str, dict[int, float]], dataset="toy", oracle=(), **entropies) -> pd.DataFrame:
    rows = []
    for seed, auc in RANDOM_LUCK.items():
        rows += _rows(dataset, "random", seed, auc)
    for strategy, per_seed in diffs.items():
        for seed, d in per_seed.items():
            rows += _rows(dataset, strategy, seed, RANDOM_LUCK[seed] + d, oracle=strategy in oracle,
                          **entropies.get(strategy, {}))
    return pd.DataFrame(rows)


def test_summary_pairs_by_seed_not_by_means():
    # margin − random per seed: 0.02, 0.021, 0.019 (seed 3 has no margin run and is not paired).
    # Paired: mean 0.02, s = 0.001, half = 4.30265 · 0.001 / √3 = 0.0024841 → [0.017516, 0.022484]: win.
    # Unpaired, margin's mean AUC (0.62) minus random's over its seeds (0.675) is −0.055, and the
    # per-seed AUCs spread by ±0.1, so any unpaired interval straddles 0 or lies below it.
    table = report.summary_table(_frame({"margin": {0: 0.02, 1: 0.021, 2: 0.019}})).set_index("strategy")
    half = t_975_df2() * 0.001 / math.sqrt(3.0)
    m = table.loc["margin"]
    assert m["seeds"] == 3 and m["wins"] == 3
    assert m["auc_diff"] == pytest.approx(0.02, abs=1e-12)
    assert m["auc_diff_low"] == pytest.approx(0.02 - half, abs=1e-9)
    assert m["auc_diff_high"] == pytest.approx(0.02 + half, abs=1e-9)
    assert m["final_diff"] == pytest.approx(0.02, abs=1e-12)
    assert m["outcome"] == "win"
    r = table.loc["random"]
    assert r["outcome"] == "baseline" and r["seeds"] == 4
    assert np.isnan(r["auc_diff"]) and np.isnan(r["auc_diff_low"]) and pd.isna(r["wins"])
    assert r["auc_top1"] == pytest.approx(np.mean(list(RANDOM_LUCK.values())))


def test_summary_judges_with_the_t_interval_of_the_paired_differences():
    # confidence − random per seed: 0.04, 0.05, 0.09 → mean 0.06, s = √7 · 0.01 = 0.026458.
    # t, ddof = 1: half = 4.30265 · 0.026458 / √3 = 0.065724 → low −0.00572: tie.
    # z = 1.96 would give half 0.029939 → low +0.0301 (win); ddof = 0 (s = 0.021602) half 0.053663
    # → low +0.00634 (win).  So both wrong intervals turn this tie into a win.
    # entropy − random: −0.04, −0.05, −0.09 is the mirror image: tie, not loss.
    table = report.summary_table(_frame({"confidence": {0: 0.04, 1: 0.05, 2: 0.09},
                                         "entropy": {0: -0.04, 1: -0.05, 2: -0.09}})).set_index("strategy")
    half = t_975_df2() * math.sqrt(7.0) * 0.01 / math.sqrt(3.0)
    assert table.loc["confidence", "auc_diff_low"] == pytest.approx(0.06 - half, abs=1e-9)
    assert table.loc["confidence", "auc_diff_low"] < 0 < table.loc["confidence", "auc_diff_high"]
    assert table.loc["confidence", "outcome"] == "tie"
    assert table.loc["entropy", "auc_diff_high"] == pytest.approx(-0.06 + half, abs=1e-9)
    assert table.loc["entropy", "outcome"] == "tie"


def test_summary_wins_and_losses_from_clear_paired_intervals():
    # mase: 0.03, 0.04, 0.05 → mean 0.04, s = 0.01, half = 0.024841 → [0.01516, 0.06484]: win.
    # coreset: the negatives → [−0.06484, −0.01516]: loss.
    table = report.summary_table(_frame({"mase": {0: 0.03, 1: 0.04, 2: 0.05},
                                         "coreset": {0: -0.03, 1: -0.04, 2: -0.05}})).set_index("strategy")
    assert table.loc["mase", "outcome"] == "win" and table.loc["mase", "wins"] == 3
    assert table.loc["coreset", "outcome"] == "loss" and table.loc["coreset", "wins"] == 0


def test_summary_never_judges_an_oracle_and_says_so_for_one_seed():
    # balanced_random (oracle): +0.04, +0.05, +0.06 → [0.0252, 0.0748], which would be a win: it is "oracle".
    # entropy has one seed (seed 1, +0.03): a zero-width interval [0.03, 0.03] would be a win: it is n/a.
    table = report.summary_table(_frame({"balanced_random": {0: 0.04, 1: 0.05, 2: 0.06}, "entropy": {1: 0.03}},
                                        oracle=("balanced_random",))).set_index("strategy")
    b = table.loc["balanced_random"]
    assert bool(b["oracle"]) and b["outcome"] == "oracle"
    assert b["auc_diff"] == pytest.approx(0.05, abs=1e-12)  # the numbers are still reported
    e = table.loc["entropy"]
    assert e["seeds"] == 1 and e["outcome"] == "n/a (1 seed)" and not bool(e["oracle"])
    assert e["auc_diff"] == pytest.approx(0.03, abs=1e-12)
    assert table.loc["random", "outcome"] == "baseline"


# ------------------------------------------------------------------------------- claim_verdicts, hand-made tables

TOY, MANY = report.TOY_DATASET, report.MANY_CLASS_DATASET
DIFF = {"win": 0.01, "tie": 0.001, "loss": -0.01}  # with half width 0.005: [+0.005, +0.015], [−0.004, +0.006], …


def _random(ds, seeds=5):
    return {"dataset": ds, "strategy": "random", "oracle": False, "seeds": seeds, "auc_diff": np.nan,
            "auc_diff_low": np.nan, "auc_diff_high": np.nan, "wins": pd.NA, "outcome": "baseline",
            "final_labeled_entropy": 1.0, "mean_batch_entropy": 1.0}


def _row(ds, strategy, out, diff=None, seeds=5, labeled=0.99, batch=0.98, oracle=False):
    """A summary row whose interval (diff ± 0.005) matches the outcome string written in the test."""
    d = DIFF[out] if diff is None else diff
    return {"dataset": ds, "strategy": strategy, "oracle": oracle, "seeds": seeds, "auc_diff": d,
            "auc_diff_low": d - 0.005, "auc_diff_high": d + 0.005, "wins": seeds if d > 0 else 0,
            "outcome": "oracle" if oracle else out, "final_labeled_entropy": labeled, "mean_batch_entropy": batch}


def _verdicts(rows, **kw) -> pd.Series:
    return report.claim_verdicts(pd.DataFrame(rows), **kw).set_index("claim")["verdict"]


# Claim 1 is judged on the interventions: hand-made evidence rows (alkit.experiments.mechanism.claim1_evidence's shape).
SIGN = {"+": (0.01, 0.005, 0.015), "-": (-0.01, -0.015, -0.005), "0": (0.0, -0.005, 0.005)}


def _evidence(strategy="margin", change="-", balancing="+", composition="-", labels_few="0", labels_many="0",
              labels_size=None) -> dict:
    """One strategy's evidence: each part's sign ("+" interval above 0, "-" below, "0" across)."""
    row = {"strategy": strategy, "few": 10, "many": 200}
    for name, sign in (("gain_few", "+"), ("gain_many", "0"), ("change", change), ("composition", composition),
                       ("within", "0"), ("balancing_gain", balancing), ("labels_few", labels_few),
                       ("labels_many", labels_many)):
        mean, lo, hi = SIGN[sign]
        if name.startswith("labels") and labels_size is not None and sign == "+":
            mean, lo, hi = labels_size, labels_size - 0.004, labels_size + 0.004
        row |= {name: mean, f"{name}_lo": lo, f"{name}_hi": hi}
    return row


def _claim1(*rows) -> tuple[str, str]:
    return report.claim1_verdict(pd.DataFrame(list(rows)))


def test_claim1_supported_when_every_non_transferring_strategy_shows_both_interventions():
    # margin's gain falls (change below 0); balancing recovers (+) and its composition costs (−).
    # confidence transfers (change across 0): it is not asked for the mechanism.
    verdict, text = _claim1(_evidence("margin"), _evidence("confidence", change="0", balancing="0", composition="0"))
    assert verdict == "supported" and "margin: gain +0.0100" in text and "falls" in text


def test_claim1_not_supported_when_toy_results_carry_over():
    # No strategy's gain falls from K = 10 to K = 200 (a rise is no fall either).
    assert _claim1(_evidence("margin", change="0"), _evidence("entropy", change="+"))[0] == "not supported"


def test_claim1_not_supported_when_neither_intervention_points_to_imbalance():
    verdict, text = _claim1(_evidence("margin", balancing="0", composition="0"),
                            _evidence("entropy", balancing="-", composition="+"))
    assert verdict == "not supported" and "neither balancing" in text


def test_claim1_inconclusive_when_the_parts_point_in_different_directions():
    # balancing recovers but the composition alone costs nothing.
    verdict, text = _claim1(_evidence("margin", balancing="+", composition="0"))
    assert verdict == "inconclusive" and "different directions for margin" in text
    # one strategy shows both, another neither.
    verdict, text = _claim1(_evidence("margin"), _evidence("entropy", balancing="0", composition="0"))
    assert verdict == "inconclusive" and "not for entropy" in text


def test_claim1_inconclusive_when_labels_per_class_move_the_gain_as_much():
    # 4× the labels per class raise margin's gain by 0.02 ≥ its fall 0.01 from K = 10 to 200.
    verdict, text = _claim1(_evidence("margin", labels_many="+", labels_size=0.02))
    assert verdict == "inconclusive" and "labels per class move the gain of margin" in text
    # a smaller labels effect (0.005 < 0.01) leaves the verdict to the interventions
    assert _claim1(_evidence("margin", labels_few="+", labels_size=0.005))[0] == "supported"


def test_claim1_inconclusive_without_mechanism_runs():
    assert _claim1() == ("inconclusive", "no mechanism runs (python -m alkit reproduce mechanism)")
    out = report.claim_verdicts(pd.DataFrame([_random(TOY), _row(TOY, "margin", "win")])).set_index("claim")
    assert out.loc[1, "verdict"] == "inconclusive" and "no mechanism runs" in out.loc[1, "evidence"]


def test_claim1_reads_the_mechanism_evidence_through_claim_verdicts():
    rows = [_random(TOY), _row(TOY, "margin", "win"), _random(MANY), _row(MANY, "margin", "tie")]
    out = report.claim_verdicts(pd.DataFrame(rows), mechanism=pd.DataFrame([_evidence()])).set_index("claim")
    assert out.loc[1, "verdict"] == "supported"
    assert "for reference, not in the rule: win on cifar10 but not on tiny-imagenet: margin" in out.loc[1, "evidence"]


def _claim2(toy: dict, many: dict, extra=()) -> list[dict]:
    return ([_random(TOY)] + [_row(TOY, s, o) for s, o in toy.items()]
            + [_random(MANY)] + [_row(MANY, s, o) for s, o in many.items()] + list(extra))


def test_claim2_supported_when_no_popular_strategy_wins_anywhere():
    # Ties and losses only among popular strategies; BASE, typiclust and the oracle win, which is irrelevant.
    extra = [_row(d, s, "win") for d in (TOY, MANY) for s in ("base", "typiclust")]
    extra += [_row(d, "balanced_random", "win", oracle=True) for d in (TOY, MANY)]
    v = _verdicts(_claim2({"margin": "tie", "confidence": "loss", "badge": "tie"},
                          {"margin": "loss", "confidence": "tie", "badge": "tie"}, extra))
    assert v[2] == "supported"


def test_claim2_not_supported_when_at_least_half_win_on_every_judged_set():
    # toy: 2/2 win; many: 1/2 win — exactly half counts as "at least half".
    v = _verdicts(_claim2({"margin": "win", "confidence": "win"}, {"margin": "win", "confidence": "tie"}))
    assert v[2] == "not supported"


def test_claim2_inconclusive_otherwise():
    # toy: 2/2 win, many: 0/2 win.
    v = _verdicts(_claim2({"margin": "win", "confidence": "win"}, {"margin": "tie", "confidence": "loss"}))
    assert v[2] == "inconclusive"
    # toy: 2/3 win, many: 1/3 win (< half).
    v = _verdicts(_claim2({"margin": "win", "confidence": "win", "entropy": "tie"},
                          {"margin": "win", "confidence": "tie", "entropy": "tie"}))
    assert v[2] == "inconclusive"


def test_claim2_needs_some_judged_popular_strategy():
    # Only random and BASE were run: no popular strategy was judged, so "they fail to beat random"
    # has no evidence either way.
    v = _verdicts([_random(TOY), _row(TOY, "base", "tie"), _random(MANY), _row(MANY, "base", "tie")])
    assert v[2] == "inconclusive"


def test_popular_strategy_with_too_few_seeds_is_left_out_and_listed():
    # margin has 2 seeds on the many-class set and a (hand-forced) win there: it is not judged, so no
    # popular strategy wins anywhere → claim 2 supported; it is listed in every row's evidence.
    rows = _claim2({"margin": "tie", "confidence": "tie"}, {"confidence": "tie"},
                   [_row(MANY, "margin", "win", seeds=2)])
    out = report.claim_verdicts(pd.DataFrame(rows)).set_index("claim")
    assert out.loc[2, "verdict"] == "supported"
    assert "tiny-imagenet: 0/1 popular strategies win" in out.loc[2, "evidence"]
    for claim in (1, 2, 3):
        assert "not judged (fewer than 3 seeds): margin on tiny-imagenet (2)" in out.loc[claim, "evidence"]


def test_popular_leaves_out_oracles_other_data_sets_and_unpopular_strategies():
    table = pd.DataFrame([_random(TOY), _row(TOY, "margin", "win"), _row(TOY, "confidence", "win", oracle=True),
                          _row(TOY, "badge", "win", seeds=2), _row(TOY, "typiclust", "win"),
                          _row(TOY, "base", "win"), _row(MANY, "entropy", "win")])
    assert list(report._popular(table, TOY).index) == ["margin"]


def _claim3(base: dict, popular_batch=(0.94, 0.95, 0.99), extra=()) -> list[dict]:
    """margin, confidence, entropy (ties) with the given mean batch entropies on both data sets
    (median 0.95, mean 0.96); ``base`` maps data set → (outcome, auc_diff, batch entropy, seeds)."""
    rows = []
    for ds in (TOY, MANY):
        rows.append(_random(ds))
        rows += [_row(ds, s, "tie", batch=b) for s, b in zip(("margin", "confidence", "entropy"), popular_batch)]
        if ds in base:
            out, diff, batch, seeds = base[ds]
            rows.append(_row(ds, "base", out, diff=diff, batch=batch, seeds=seeds))
    return rows + list(extra)


def test_claim3_supported_when_base_wins_everywhere_with_batches_at_least_the_median():
    # toy: 0.955 ≥ median 0.95 (though below the mean 0.96); many: 0.95 = median ("at least as balanced").
    v = _verdicts(_claim3({TOY: ("win", 0.01, 0.955, 5), MANY: ("win", 0.01, 0.95, 5)}))
    assert v[3] == "supported"


def test_claim3_not_supported_when_base_mean_difference_is_not_positive_somewhere():
    # many: mean Δ AUC exactly 0 ([−0.005, +0.005], tie) — "≤ 0" includes 0.
    v = _verdicts(_claim3({TOY: ("win", 0.01, 1.0, 5), MANY: ("tie", 0.0, 1.0, 5)}))
    assert v[3] == "not supported"
    v = _verdicts(_claim3({TOY: ("loss", None, 1.0, 5), MANY: ("win", 0.01, 1.0, 5)}))
    assert v[3] == "not supported"


def test_claim3_inconclusive_otherwise():
    # Wins everywhere but its batches on the many-class set are below the popular median (0.949 < 0.95).
    v = _verdicts(_claim3({TOY: ("win", 0.01, 1.0, 5), MANY: ("win", 0.01, 0.949, 5)}))
    assert v[3] == "inconclusive"
    # A tie with a positive mean (+0.001) on the many-class set.
    v = _verdicts(_claim3({TOY: ("win", 0.01, 1.0, 5), MANY: ("tie", 0.001, 1.0, 5)}))
    assert v[3] == "inconclusive"
    # BASE not run on the many-class set.
    v = _verdicts(_claim3({TOY: ("win", 0.01, 1.0, 5)}))
    assert v[3] == "inconclusive"
    # BASE with 2 seeds (< MIN_SEEDS) on the many-class set: not judged there, even with a "win".
    out = report.claim_verdicts(pd.DataFrame(_claim3({TOY: ("win", 0.01, 1.0, 5), MANY: ("win", 0.01, 1.0, 2)})))
    out = out.set_index("claim")
    assert out.loc[3, "verdict"] == "inconclusive" and "BASE has 2 seeds" in out.loc[3, "evidence"]


# ------------------------------------------------------------------------------- MIN_SEEDS for random


def _decided(random_seeds_many) -> list[dict]:
    """A table whose verdicts are decided when random has enough seeds: claim 1 supported (with the
    mechanism evidence of :func:`_evidence`), claim 2 inconclusive (1/1 vs 0/1) and claim 3
    supported (BASE wins on both with batches 1.0 ≥ 0.98)."""
    return [_random(TOY), _row(TOY, "margin", "win", labeled=0.99), _row(TOY, "base", "win", batch=1.0),
            _random(MANY, seeds=random_seeds_many), _row(MANY, "margin", "tie", labeled=0.95),
            _row(MANY, "base", "win", batch=1.0)]


def test_min_seeds_is_three_as_documented():
    assert report.MIN_SEEDS == 3


def test_random_with_min_seeds_is_enough():
    v = _verdicts(_decided(3), mechanism=pd.DataFrame([_evidence()]))
    assert (v[1], v[2], v[3]) == ("supported", "inconclusive", "supported")


def test_random_with_too_few_seeds_makes_every_verdict_inconclusive():
    out = report.claim_verdicts(pd.DataFrame(_decided(2)), mechanism=pd.DataFrame([_evidence()])).set_index("claim")
    assert list(out["verdict"]) == ["inconclusive"] * 3
    assert all(e.startswith("random has fewer than 3 seeds (tiny-imagenet: 2)") for e in out["evidence"])
    assert "supported by the rule" in out.loc[1, "evidence"]  # what the rule would have said is kept
    # random missing on a judged data set is the extreme case.
    no_random = [r for r in _decided(5) if not (r["dataset"] == MANY and r["strategy"] == "random")]
    assert set(_verdicts(no_random)) == {"inconclusive"}


# ------------------------------------------------------------------------------- end to end, per-round rows


def test_verdicts_from_per_round_rows():
    # cifar10: margin and BASE − random per seed 0.02, 0.021, 0.019 → win (half 0.00248).
    # tiny-imagenet: margin 0.04, 0.05, 0.09 → tie (low −0.00572; a z or ddof = 0 interval would make it a
    # win); BASE 0.03, 0.04, 0.05 → win (low 0.01516).  Final labelled entropy: random 1.0, margin 0.99 on
    # cifar10 and 0.95 on tiny-imagenet; batch entropy: BASE 1.0, margin 0.9.
    # Claim 1: no mechanism runs → inconclusive (its rule from runs: tests/test_mechanism.py).
    # Claim 2: 1/1 popular wins on cifar10, 0/1 on tiny-imagenet → inconclusive.
    # Claim 3: BASE wins on both with batches 1.0 ≥ 0.9 → supported.
    margin = {TOY: {0: 0.02, 1: 0.021, 2: 0.019}, MANY: {0: 0.04, 1: 0.05, 2: 0.09}}
    base = {TOY: {0: 0.02, 1: 0.021, 2: 0.019}, MANY: {0: 0.03, 1: 0.04, 2: 0.05}}
    frames = [_frame({"margin": margin[ds], "base": base[ds]}, dataset=ds,
                     margin={"labeled_entropy": 0.99 if ds == TOY else 0.95, "batch_entropy": 0.9})
              for ds in (TOY, MANY)]
    table = report.summary_table(pd.concat(frames, ignore_index=True))
    got = table.set_index(["dataset", "strategy"])["outcome"]
    assert (got[(TOY, "margin")], got[(MANY, "margin")], got[(TOY, "base")], got[(MANY, "base")]) == \
        ("win", "tie", "win", "win")
    v = _verdicts(table)
    assert (v[1], v[2], v[3]) == ("inconclusive", "inconclusive", "supported")


def test_claim1_missing_runs_are_unknown_not_no_effect():
    # margin's gain falls but its balanced runs are missing: that is no evidence of "no recovery".
    row = _evidence("margin") | {"balancing_gain": np.nan, "balancing_gain_lo": np.nan, "balancing_gain_hi": np.nan}
    verdict, text = report.claim1_verdict(pd.DataFrame([row]))
    assert verdict == "inconclusive" and "missing for margin" in text
    # and a strategy without its K = 200 runs says nothing about transfer
    row = _evidence("margin", change="0") | {"change": np.nan, "change_lo": np.nan, "change_hi": np.nan}
    assert report.claim1_verdict(pd.DataFrame([row]))[0] == "inconclusive"
