"""From per-round rows to the summary table and one verdict per claim of the paper.

Everything here is a pure function of the rows that the sweeps wrote (``alkit.experiment``), so
``make reproduce-figures`` regenerates every table from the committed results, offline.

Verdict rule (also printed by the notebook ``e_summary``)
-------------------------------------------------------------------------
Per data set and strategy, ``auc`` is the area under the test top-1 curve against labelled points
(divided by the labelled range, so it is an average accuracy) for one seed, and ``auc_diff`` is
that strategy's ``auc`` minus random's for the same seed (same validation split, initial pool and
round-0 model).  A strategy **wins** on a data set when the 95 % Student-t interval over seeds of
``auc_diff`` lies entirely above 0, **loses** when it lies entirely below 0; otherwise it **ties**.
Oracle baselines are never judged.  *Popular* strategies are the paper's
(:data:`POPULAR_STRATEGIES`); TypiClust and ProbCover are reported but not judged.
Balance is the normalised class entropy (1 = balanced) of the labelled set after the last round,
and of the queried batches averaged over rounds.

1. *Toy results do not carry over to many classes, because of imbalance.*  Judged by intervention
   (:mod:`alkit.experiments.mechanism`: Tiny-ImageNet cut to K classes at the same per-class budgets), for each
   uncertainty strategy S (confidence, margin, entropy).  *Non-transfer*: S's gain over random at
   the largest K is below its gain at the smallest K (the 95 % Welch interval of the difference lies
   below 0).  *Because of imbalance*, at the largest K: (a) balancing the same scores recovers the
   loss (``S_balanced`` − S, paired, interval above 0) and (b) S's class composition alone costs
   accuracy (``S_class_matched`` − random, paired, interval below 0).  *Labels per class explain it
   better* when, at either K, S's gain with 4× the labels per class (double against half schedule)
   rises (interval above 0) by at least as much as the gain falls from the smallest to the largest K.
   Supported: some S does not transfer, and every S that does not shows (a) and (b) and no
   labels-per-class effect that large; not supported: some S does not transfer and none of those
   shows (a) or (b) — or no S fails to transfer; inconclusive: otherwise (the parts point in
   different directions, or the labels explain the curve as well), and without the mechanism runs.
2. *Popular strategies fail to beat random.*  Supported: no popular strategy wins on any judged
   data set; not supported: on every judged data set at least half of them win; inconclusive:
   otherwise.
3. *BASE beats random consistently, with more balanced batches.*  Supported: BASE wins on every
   judged data set and its batches are at least as balanced as the median popular strategy's on
   each; not supported: on some judged data set BASE's mean ``auc_diff`` is ≤ 0; inconclusive:
   otherwise.

A strategy with fewer than :data:`MIN_SEEDS` seeds on a data set is not judged there (it is listed);
with fewer for random itself, every verdict is "inconclusive".
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from alkit.checks import ParameterError
from alkit.experiments.catalog import DATASETS
from alkit.io import atomic_write
from alkit.stats import area_under_curve, mean_interval
from alkit.strategies.registry import in_registry_order

#: The strategies whose failure the paper reports (margin, confidence, coreset, BADGE, …).
POPULAR_STRATEGIES = ("confidence", "margin", "entropy", "mase", "coreset", "badge", "partitioned_coreset",
                      "partitioned_badge", "margin_clustering", "balancing")
#: Data sets on which the claims are judged: the toy one and its many-class counterpart.
TOY_DATASET = "cifar10"
#: Fewer seeds than this per judged data set make every verdict "inconclusive": with 2 seeds a
#: 95 % t-interval is so wide that "no strategy wins" would say nothing.
MIN_SEEDS = 3
MANY_CLASS_DATASET = "tiny-imagenet"

VERDICT_RULE = __doc__[__doc__.index("Verdict rule"):].split("\n", 2)[2].strip()


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the repository root (the folder with pyproject.toml above the
    working directory), so notebooks give the same paths whether run from notebooks/ or the root."""
    path = Path(path)
    if path.is_absolute():
        return path
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "alkit").is_dir():
            return folder / path
    return here / path


def count_range(values) -> str:
    """"10" when every value is 10, else "5–10": a caption's count of seeds."""
    low, high = int(np.min(values)), int(np.max(values))
    return str(low) if low == high else f"{low}–{high}"


def list_parameter(value, name: str, kind: type = str) -> list | None:
    """A notebook's list parameter as a list of ``kind`` (None stays None).  papermill's ``-p NAME
    VALUE`` passes a string: ``'["cifar10", "tiny-imagenet"]'`` (JSON) and ``cifar10,tiny-imagenet``
    are read as lists; anything else fails here, in the first cell, with the form that works."""
    if value is None:
        return None
    given = value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        except ValueError:
            parsed = None
        value = parsed
    if not isinstance(value, (list, tuple)) or not value:
        raise ParameterError(f"{name} must be a non-empty list, got {given!r}; with papermill pass it as YAML "
                             f"(-y '{name}: [a, b]') or as -p {name} a,b", param=name)
    try:
        items = [kind(v) if not isinstance(v, kind) else v for v in value]
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must hold {kind.__name__} values, got {given!r}", param=name) from None
    if kind is int and any(isinstance(v, bool) or float(v) != int(v) for v in value):
        raise ParameterError(f"{name} must hold integers, got {given!r}", param=name)
    return items


def output_dir(requested: str | Path | None, notebook: str, kind: str) -> Path:
    """Where a notebook writes its ``kind`` ("figures" or "tables"): ``requested`` when given (``make
    reproduce-figures`` passes results/figures and results/tables), else
    ``notebooks/executed/<notebook>/<kind>``, so that running a notebook by hand, with any
    parameters, never overwrites the committed files."""
    if requested:
        return resolve_path(requested)
    return resolve_path(Path("notebooks") / "executed" / notebook / kind)


def dataset_titles(frame: pd.DataFrame) -> dict[str, str]:
    """Panel titles that say what the numbers are made of (a stand-in says so)."""
    titles = {}
    for ds, group in frame.groupby("dataset"):
        title = DATASETS[ds].title if ds in DATASETS else ds
        sources = sorted(set(group["data_source"].astype(str))) if "data_source" in group else []
        titles[ds] = f"{title}\n[{'; '.join(sources)}]" if sources else title
    return titles


#: The paper's two training regimes, as panel titles say them (rows carry them in a ``regime`` column).
REGIMES = {"linear": "linear probe on frozen features", "finetune": "network fine-tuned end to end"}


def with_regimes(linear: pd.DataFrame, finetune: pd.DataFrame) -> pd.DataFrame:
    """The rows of both regimes in one frame, with a ``regime`` column ("linear", "finetune")."""
    return pd.concat([linear.assign(regime="linear"), finetune.assign(regime="finetune")], ignore_index=True)


def regime_titles(frame: pd.DataFrame) -> dict[str, str]:
    """Panel titles per regime: data set, regime and what the numbers are made of."""
    titles = {}
    for regime, group in frame.groupby("regime", sort=False):
        names = ", ".join(DATASETS[d].title if d in DATASETS else d for d in group["dataset"].unique())
        sources = "; ".join(sorted(set(group["data_source"].astype(str)))) if "data_source" in group else ""
        titles[regime] = f"{names}: {REGIMES.get(regime, regime)}" + (f"\n[{sources}]" if sources else "")
    return titles


def regime_summary(frame: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """:func:`summary_table` of each regime, one after the other (a ``regime`` column first)."""
    tables = [summary_table(group, metric).assign(regime=regime)
              for regime, group in frame.groupby("regime", sort=False)]
    table = pd.concat(tables, ignore_index=True)
    return table[["regime", *[c for c in table.columns if c != "regime"]]]


def figure_note(frame: pd.DataFrame) -> str:
    """Small print for a figure: a loud line naming the panels of synthetic data (only those),
    seeds and intervals, and each real data set's caveat."""
    def title(ds: str) -> str:
        return DATASETS[ds].title if ds in DATASETS else ds

    synthetic, real = [], []
    for ds, group in frame.groupby("dataset", sort=False):
        sources = " ".join(set(group["data_source"].astype(str))) if "data_source" in group else ""
        (synthetic if "synthetic" in sources.lower() else real).append(ds)
    lines = []
    if synthetic:
        which = "these panels are" if not real else f"the panel{'s' if len(synthetic) > 1 else ''} of " + \
            ", ".join(title(d) for d in synthetic) + (" are" if len(synthetic) > 1 else " is")
        lines.append(f"SYNTHETIC DATA: {which} not measurements on the paper's data sets.")
    seeds = frame.groupby(["dataset", "strategy"])["seed"].nunique().groupby("dataset").agg(["min", "max"])
    lines.append("Mean over seeds with 95 % t-interval (" + ", ".join(
        f"{d}: {lo} seeds" if lo == hi else f"{d}: {lo}–{hi} seeds per strategy" for d, (lo, hi) in seeds.iterrows())
                 + "); differences are paired by seed.")
    for ds in real:
        if ds in DATASETS and DATASETS[ds].caveat:
            lines.append(f"{DATASETS[ds].title}: {DATASETS[ds].caveat}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Per-seed numbers
# --------------------------------------------------------------------------------------------

def per_seed_auc(frame: pd.DataFrame, metric: str = "top1") -> pd.DataFrame:
    """One row per (dataset, strategy, seed): area under ``metric`` against labelled points."""
    rows = []
    for (ds, strategy, seed), run in frame.groupby(["dataset", "strategy", "seed"], sort=True):
        run = run.sort_values("n_labeled")
        rows.append({"dataset": ds, "strategy": strategy, "seed": int(seed),
                     "oracle": bool(run["oracle"].astype(bool).any()),
                     "auc": area_under_curve(run["n_labeled"].to_numpy(), run[metric].to_numpy()),
                     "final": float(run[metric].iloc[-1]), "rounds": int(run["round"].max())})
    return pd.DataFrame(rows)


def _paired(per_seed: pd.DataFrame, column: str, baseline: str) -> pd.DataFrame:
    """``column`` minus the baseline's for the same (dataset, seed)."""
    base = per_seed[per_seed["strategy"] == baseline].set_index(["dataset", "seed"])[column]
    out = per_seed.copy()
    out[f"{column}_diff"] = out[column].to_numpy() - base.reindex(
        pd.MultiIndex.from_frame(out[["dataset", "seed"]])).to_numpy()
    return out


def outcome(low: float, high: float) -> str:
    """'win' if the interval lies above 0, 'loss' if below, else 'tie'."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "tie"
    return "win" if low > 0 else "loss" if high < 0 else "tie"


def summary_table(frame: pd.DataFrame, metric: str = "top1", baseline: str = "random") -> pd.DataFrame:
    """Per data set × strategy: AUC, paired difference from ``baseline`` (mean, 95 % interval, seeds
    won), final accuracy, final balance of the labelled set and mean balance of the batches."""
    if frame.empty:
        raise ParameterError("frame: no rows to summarise", param="frame")
    per_seed = _paired(_paired(per_seed_auc(frame, metric), "auc", baseline), "final", baseline)
    last = frame.loc[frame.groupby(["dataset", "strategy", "seed"])["round"].idxmax()]
    queried = frame[frame["round"] > 0]
    rows = []
    for (ds, strategy), group in per_seed.groupby(["dataset", "strategy"], sort=False):
        diff = group["auc_diff"].to_numpy()
        interval = mean_interval(diff)
        # Seeds that count: those paired with a baseline run of the same seed (all, for the baseline).
        seeds = len(group) if strategy == baseline else int(np.isfinite(diff).sum())
        final_rows = last[(last["dataset"] == ds) & (last["strategy"] == strategy)]
        batches = queried[(queried["dataset"] == ds) & (queried["strategy"] == strategy)]
        is_base = strategy == baseline
        rows.append({
            "dataset": ds, "strategy": strategy, "oracle": bool(group["oracle"].any()), "seeds": seeds,
            "final_labels": int(final_rows["n_labeled"].max()),
            f"auc_{metric}": float(group["auc"].mean()),
            "auc_diff": np.nan if is_base else float(interval["mean"]),
            "auc_diff_low": np.nan if is_base else float(interval["low"]),
            "auc_diff_high": np.nan if is_base else float(interval["high"]),
            "wins": np.nan if is_base else int((diff > 0).sum()),
            "outcome": "baseline" if is_base else ("oracle" if group["oracle"].any() else
                                                    f"n/a ({seeds} seed)" if seeds < 2 else
                                                    outcome(interval["low"], interval["high"])),
            f"final_{metric}": float(group["final"].mean()),
            "final_diff": np.nan if is_base else float(group["final_diff"].mean()),
            "final_balanced_accuracy": float(final_rows["balanced_accuracy"].mean()),
            "final_labeled_entropy": float(final_rows["labeled_normalized_entropy"].mean()),
            "final_labeled_gini": float(final_rows["labeled_gini"].mean()),
            "final_labeled_kl_from_pool": (float(final_rows["labeled_kl_from_pool"].mean())
                                           if "labeled_kl_from_pool" in final_rows else np.nan),
            "final_classes_without_label": float(final_rows["labeled_classes_without_label"].mean()),
            "mean_batch_entropy": float(batches["batch_normalized_entropy"].mean()) if len(batches) else np.nan,
            "mean_batch_distinct_classes": float(batches["batch_distinct_classes"].mean()) if len(batches) else np.nan,
        })
    table = pd.DataFrame(rows)
    table["wins"] = table["wins"].astype("Int64")  # a count, blank for the baseline
    order = {s: i for i, s in enumerate(in_registry_order(table["strategy"].unique()))}
    return table.sort_values(["dataset", "strategy"], key=lambda col: col.map(order) if col.name == "strategy"
                             else col).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Verdicts
# --------------------------------------------------------------------------------------------

def _popular(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The popular strategies judged on ``dataset``: those with at least MIN_SEEDS seeds."""
    sub = table[(table["dataset"] == dataset) & table["strategy"].isin(POPULAR_STRATEGIES) & ~table["oracle"]
                & (table["seeds"] >= MIN_SEEDS)]
    return sub.set_index("strategy")


def _balance_gap(table: pd.DataFrame, dataset: str, column: str = "final_labeled_entropy") -> float:
    """Random's final labelled-set entropy minus the popular strategies' mean (> 0: less balanced).
    With ``column="final_labeled_kl_from_pool"`` the sign is flipped (KL grows with imbalance)."""
    sub = table[table["dataset"] == dataset].set_index("strategy")
    popular = _popular(table, dataset)
    if "random" not in sub.index or popular.empty or column not in sub:
        return float("nan")
    gap = float(sub.loc["random", column] - popular[column].mean())
    return -gap if "kl" in column else gap


def _significant(row, name: str) -> int:
    """+1 if the interval of ``name`` lies above 0, −1 if below, 0 otherwise (or unknown)."""
    lo, hi = row.get(f"{name}_lo", np.nan), row.get(f"{name}_hi", np.nan)
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _text(row, name: str) -> str:
    return f"{row[name]:+.4f} [{row[name + '_lo']:+.4f}, {row[name + '_hi']:+.4f}]"


def claim1_verdict(evidence: pd.DataFrame) -> tuple[str, str]:
    """Claim 1's verdict and its evidence in words, from :func:`alkit.experiments.mechanism.claim1_evidence`
    (one row per uncertainty strategy; rule: module docstring)."""
    needed = ("change", "composition", "balancing_gain")
    if evidence.empty or not all(f"{n}_lo" in evidence for n in needed):
        return "inconclusive", "no mechanism runs (python -m alkit reproduce mechanism)"
    parts, failing, both, neither, labels, unknown = [], [], [], [], [], []
    for row in evidence.to_dict("records"):
        s, few, many = row["strategy"], row["few"], row["many"]
        # A part without its runs is unknown, never "no effect": the change first, then the interventions
        # (needed only when the gain falls).
        lacking = [n for n in needed if not (np.isfinite(row[f"{n}_lo"]) and np.isfinite(row[f"{n}_hi"]))]
        if "change" in lacking or (lacking and _significant(row, "change") < 0):
            parts.append(f"{s}: missing runs for {', '.join(lacking)}")
            unknown.append(s)
            continue
        transfers = _significant(row, "change") >= 0
        recovers = _significant(row, "balancing_gain") > 0
        composition_hurts = _significant(row, "composition") < 0
        drop = -row["change"]
        label_effects = [k for side, k in (("few", few), ("many", many))
                         if f"labels_{side}_lo" in row and _significant(row, f"labels_{side}") > 0
                         and row[f"labels_{side}"] >= drop]
        text = (f"{s}: gain {_text(row, 'gain_few')} at K = {few}, {_text(row, 'gain_many')} at K = {many} "
                f"(change {_text(row, 'change')}, {'no fall' if transfers else 'falls'}); at K = {many} "
                f"balancing its scores {_text(row, 'balancing_gain')} "
                f"({'recovers' if recovers else 'does not recover'}), its class composition alone "
                f"{_text(row, 'composition')} ({'costs' if composition_hurts else 'does not cost'}), its choice "
                f"within classes {_text(row, 'within')}")
        if any(f"labels_{side}" in row and np.isfinite(row[f"labels_{side}"]) for side in ("few", "many")):
            text += ("; 4× the labels per class (double vs half) moves its gain by " + ", ".join(
                f"{_text(row, f'labels_{side}')} at K = {k}" for side, k in (("few", few), ("many", many))
                if np.isfinite(row.get(f"labels_{side}", np.nan))))
        parts.append(text)
        if transfers:
            continue
        failing.append(s)
        if recovers and composition_hurts:
            both.append(s)
        if not recovers and not composition_hurts:
            neither.append(s)
        if label_effects:
            labels.append(s)
    if unknown:
        verdict, why = "inconclusive", f"runs are missing for {', '.join(unknown)}"
    elif not failing:
        verdict, why = "not supported", "no uncertainty strategy's gain falls from few to many classes"
    elif set(both) == set(failing) and not labels:
        verdict, why = "supported", (f"{', '.join(failing)} lose their gain at many classes, and both interventions "
                                     "point to imbalance")
    elif set(neither) == set(failing):
        verdict, why = "not supported", (f"{', '.join(failing)} lose their gain at many classes, but neither balancing "
                                         "their scores nor their class composition accounts for it")
    else:
        reasons = []
        mixed = [s for s in failing if s not in both and s not in neither]
        if mixed:
            reasons.append(f"the two interventions point in different directions for {', '.join(mixed)}")
        if labels:
            if both:
                reasons.append(f"both interventions point to imbalance for {', '.join(both)}")
            reasons.append(("but " if both else "") + f"the labels per class move the gain of {', '.join(labels)} "
                           "at least as much as the number of classes does")
        if both and set(both) != set(failing) and not mixed:
            reasons.append(f"imbalance accounts for {', '.join(both)} but not for "
                           f"{', '.join(s for s in failing if s not in both)}")
        verdict, why = "inconclusive", "; ".join(reasons) or "mixed evidence"
    return verdict, f"{why}. " + "; ".join(parts)


def claim_verdicts(table: pd.DataFrame, toy: str = TOY_DATASET, many: str = MANY_CLASS_DATASET,
                   judged: Sequence[str] | None = None, mechanism: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim of the paper: verdict and the numbers behind it (rule: module docstring).
    ``mechanism``: the evidence claim 1 is judged on (:func:`alkit.experiments.mechanism.claim1_evidence`);
    without it claim 1 is inconclusive."""
    judged = list(judged or [d for d in (toy, many) if d in set(table["dataset"])])
    missing = [d for d in (toy, many) if d not in set(table["dataset"])]
    rows = []
    # The baseline needs MIN_SEEDS seeds; a strategy with fewer is left out of the judgement (listed).
    few = {}
    for ds in judged:
        sub = table[table["dataset"] == ds].set_index("strategy")
        if "random" not in sub.index or sub.loc["random", "seeds"] < MIN_SEEDS:
            few[ds] = int(sub.loc["random", "seeds"]) if "random" in sub.index else 0
    unjudged = table[table["dataset"].isin(judged) & (table["seeds"] < MIN_SEEDS)]

    # Claim 1 -------------------------------------------------------------------------------
    verdict, evidence = claim1_verdict(mechanism if mechanism is not None else pd.DataFrame())
    if not missing:   # beside the rule, not part of it: what the two data sets show
        toy_pop, many_pop = _popular(table, toy), _popular(table, many)
        transfer_fails = sorted(s for s in toy_pop.index if toy_pop.loc[s, "outcome"] == "win"
                                and s in many_pop.index and many_pop.loc[s, "outcome"] != "win")
        kl_toy, kl_many = (_balance_gap(table, d, "final_labeled_kl_from_pool") for d in (toy, many))
        evidence += (f"; for reference, not in the rule: win on {toy} but not on {many}: "
                     f"{', '.join(transfer_fails) or 'none'}; labelled-set KL from the pool above random's "
                     f"{kl_toy:+.4f} vs {kl_many:+.4f} nats")
    rows.append({"claim": 1, "verdict": verdict, "evidence": evidence})

    # Claim 2 -------------------------------------------------------------------------------
    counts = {}
    for ds in judged:
        pop = _popular(table, ds)
        counts[ds] = (int((pop["outcome"] == "win").sum()), int(len(pop)),
                      sorted(pop.index[pop["outcome"] == "win"]))
    if not counts:
        verdict = "inconclusive"
    elif all(m and k == 0 for k, m, _ in counts.values()):  # not vacuously: no popular strategy judged
        verdict = "supported"
    elif all(m and k >= m / 2 for k, m, _ in counts.values()):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    rows.append({"claim": 2, "verdict": verdict, "evidence": "; ".join(
        f"{ds}: {k}/{m} popular strategies win" + (f" ({', '.join(w)})" if w else "")
        for ds, (k, m, w) in counts.items()) or "no judged data set"})

    # Claim 3 -------------------------------------------------------------------------------
    parts, wins_all, balanced_all, not_better = [], True, True, False
    for ds in judged:
        sub = table[table["dataset"] == ds].set_index("strategy")
        if "base" not in sub.index:
            parts.append(f"{ds}: BASE not run")
            wins_all = balanced_all = False
            continue
        base = sub.loc["base"]
        if base["seeds"] < MIN_SEEDS:
            parts.append(f"{ds}: BASE has {int(base['seeds'])} seeds (< {MIN_SEEDS})")
            wins_all = balanced_all = False
            continue
        median_pop = float(_popular(table, ds)["mean_batch_entropy"].median())
        balanced = bool(base["mean_batch_entropy"] >= median_pop)
        wins_all &= base["outcome"] == "win"
        balanced_all &= balanced
        not_better |= bool(base["auc_diff"] <= 0)
        parts.append(f"{ds}: AUC diff {base['auc_diff']:+.4f} [{base['auc_diff_low']:+.4f}, {base['auc_diff_high']:+.4f}] "
                     f"({base['outcome']}, {int(base['wins'])}/{int(base['seeds'])} seeds), batch entropy "
                     f"{base['mean_batch_entropy']:.3f} vs popular median {median_pop:.3f}")
    if not judged:
        verdict = "inconclusive"
    elif not_better:
        verdict = "not supported"
    elif wins_all and balanced_all:
        verdict = "supported"
    else:
        verdict = "inconclusive"
    rows.append({"claim": 3, "verdict": verdict, "evidence": "; ".join(parts) or "no judged data set"})

    claims = {1: "Results on a toy data set (CIFAR-10) do not carry over to many classes, because active "
                 "learners pick class-imbalanced batches there",
              2: "Popular AL strategies fail to beat random sampling",
              3: "BASE beats random sampling consistently, with more class-balanced batches"}
    out = pd.DataFrame(rows)
    if few:
        out["evidence"] = (f"random has fewer than {MIN_SEEDS} seeds ({', '.join(f'{d}: {n}' for d, n in few.items())}): "
                           + out["verdict"] + " by the rule, reported as inconclusive; " + out["evidence"])
        out["verdict"] = "inconclusive"
    if len(unjudged):
        out["evidence"] += ("; not judged (fewer than %d seeds): " % MIN_SEEDS
                            + ", ".join(f"{r.strategy} on {r.dataset} ({r.seeds})" for r in unjudged.itertuples()))
    out.insert(1, "statement", out["claim"].map(claims))
    out["judged_on"] = ", ".join(judged)
    return out


# --------------------------------------------------------------------------------------------
# What changed between two sets of runs (the earlier probe against the current one)
# --------------------------------------------------------------------------------------------

def change_table(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str] = ("before", "after")) -> pd.DataFrame:
    """Per data set × strategy of either summary (:func:`summary_table`): seeds, Δ AUC vs random
    with its 95 % interval, the outcome and the final top-1, before and after, and whether the
    outcome moved (random's own row carries its final top-1)."""
    keep = ["dataset", "strategy", "oracle", "seeds", "auc_diff", "auc_diff_low", "auc_diff_high", "outcome",
            "final_top1"]
    a, b = labels
    merged = before[keep].merge(after[keep], on=["dataset", "strategy"], how="outer", suffixes=(f"_{a}", f"_{b}"))
    merged["oracle"] = merged[f"oracle_{a}"].fillna(merged[f"oracle_{b}"]).astype(bool)
    merged = merged.drop(columns=[f"oracle_{a}", f"oracle_{b}"])
    merged["outcome_changed"] = merged[f"outcome_{a}"] != merged[f"outcome_{b}"]
    order = {s: i for i, s in enumerate(in_registry_order(merged["strategy"].unique()))}
    return merged.sort_values(["dataset", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c,
                              ignore_index=True)


def claims_change(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str] = ("before", "after"),
                  mechanism_after: pd.DataFrame | None = None, **kwargs) -> pd.DataFrame:
    """Each claim's verdict under both summaries (:func:`claim_verdicts` with ``kwargs``); claim 1's
    mechanism evidence, made with the current probe, goes with ``after`` only."""
    a, b = labels
    va, vb = claim_verdicts(before, **kwargs), claim_verdicts(after, mechanism=mechanism_after, **kwargs)
    out = va[["claim", "statement", "verdict"]].rename(columns={"verdict": f"verdict_{a}"})
    out[f"verdict_{b}"] = vb["verdict"].to_numpy()
    out[f"evidence_{b}"] = vb["evidence"].to_numpy()
    return out


# --------------------------------------------------------------------------------------------
# Tables on disk
# --------------------------------------------------------------------------------------------

def _fmt(value) -> str:
    if value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else ""
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "" if np.isnan(value) else str(value)
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def write_table(table: pd.DataFrame, stem: str | Path, title: str | None = None) -> list[Path]:
    """``stem.csv`` and ``stem.md`` (atomic)."""
    stem = Path(stem)
    csv = atomic_write(stem.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    text = (f"## {title}\n\n" if title else "") + to_markdown(table)
    md = atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(text))
    return [csv, md]


def compact_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The columns people read first, with readable names."""
    cols = {"dataset": "data set", "strategy": "strategy", "seeds": "seeds", "auc_top1": "AUC top-1",
            "auc_diff": "Δ AUC vs random", "auc_diff_low": "95 % low", "auc_diff_high": "95 % high",
            "wins": "seeds won", "outcome": "outcome", "final_top1": "final top-1",
            "final_labeled_entropy": "final labelled entropy", "mean_batch_entropy": "mean batch entropy"}
    sub = table[[c for c in cols if c in table]].rename(columns=cols)
    sub["strategy"] = [f"{s} (oracle)" if o else s for s, o in zip(table["strategy"], table["oracle"])]
    return sub


def runs_inventory(frame: pd.DataFrame) -> pd.DataFrame:
    """Which (dataset, strategy) have how many finished seeds: what the figures rest on; with the
    mean wall time per run spent selecting and training (summed over rounds, as measured on the
    machine each run records in its provenance)."""
    keys = ["dataset", "strategy"]
    out = (frame.groupby(keys)["seed"].agg(lambda s: ",".join(map(str, sorted(set(s)))))
           .rename("seeds").reset_index())
    timing = [c for c in ("selection_seconds", "training_seconds") if c in frame]
    if timing:
        per_run = frame.groupby(keys + ["seed"])[timing].sum().groupby(level=keys).mean().round(1)
        per_run.columns = [c.replace("_seconds", " s / run") for c in timing]
        out = out.merge(per_run.reset_index(), on=keys, how="left")
    return out


def sweep_times(results_dir: str | Path) -> pd.DataFrame:
    """The sweeps that wrote ``results_dir`` (its ``sweep_times.json``, appended by every
    ``python -m alkit reproduce results`` sweep): when, at which commit, with how many workers and
    threads, how many runs planned and run, and the wall time in minutes.  Empty if there is none."""
    path = Path(results_dir) / "sweep_times.json"
    if not path.is_file():
        return pd.DataFrame()
    table = pd.DataFrame(json.loads(path.read_text()))
    table["wall_minutes"] = (table["wall_seconds"] / 60).round(1)
    cols = ["finished_utc", "git_commit", "command", "jobs", "torch_threads", "cpu_count", "runs_planned",
            "runs_run", "wall_minutes"]
    return table[[c for c in cols if c in table]]
