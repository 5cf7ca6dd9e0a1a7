"""The mechanism experiment: is class imbalance *why* uncertainty sampling stops working at many classes?

Claim 1 of the paper says toy results do not carry over to many classes *because* active learners
pick class-imbalanced batches there.  The class-count experiment (:mod:`alkit.experiments.class_count`) shows the
first half: uncertainty sampling's gain over random shrinks from K = 10 to K = 200 classes of
Tiny-ImageNet at the same per-class budgets.  This experiment intervenes on the second half with the
two wrappers of :mod:`alkit.strategies.class_balance`, for each uncertainty strategy S (confidence,
margin, entropy), paired by seed:

* **total gain**: S − random;
* **class composition**: ``S_class_matched`` − random — S's true-class histogram, filled at random;
* **choice within classes**: S − ``S_class_matched`` — the same histogram, S's own points;
  (total = composition + within, seed by seed);
* **balanced scores**: ``S_balanced`` − random and ``S_balanced`` − S — S's scores with per-class
  quotas on the predicted class.

If imbalance is the cause, at K = 200 the composition part is negative and balancing the same
scores recovers the loss.  Two other explanations get their own axis: labels per class (at K = 10
and K = 200, three per-class schedules: :data:`SCHEDULES`) and the toy data set itself (CIFAR-10 at
its cpu schedule with the same wrappers).

Runs: ``results/runs/mechanism/<cell>/<strategy>__seed<s>.*`` (a cell is one data set or K at one
schedule, :class:`Cell`); runs that the class-count experiment or the cpu sweep already hold (the
plain strategies at the paper's schedule) are read from, and when missing written to, their own
folders.  ``python -m alkit reproduce mechanism --jobs 2`` makes every run (resumable), then
``notebooks/i_mechanism`` renders ``results/tables/mechanism.csv``, ``mechanism_parts.csv`` and
the figure.  Claim 1's verdict is judged on :func:`parts_table` (:func:`alkit.report.claim1_verdict`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit.checks import ParameterError
from alkit.experiments import catalog, class_count, launch, loading, runs
from alkit.report import per_seed_auc
from alkit.stats import difference_interval, mean_interval

#: The uncertainty strategies whose gain is decomposed.
SCORE_STRATEGIES = ("confidence", "margin", "entropy")
BALANCED = tuple(f"{s}_balanced" for s in SCORE_STRATEGIES)
MATCHED = tuple(f"{s}_class_matched" for s in SCORE_STRATEGIES)
#: Per K at the paper's per-class schedule.
CLASS_COUNT_STRATEGIES = ("random", "balanced_random", *SCORE_STRATEGIES, *BALANCED, *MATCHED, "base")
#: The labels-per-class axis.
SCHEDULE_STRATEGIES = ("random", "margin", "entropy", "margin_balanced", "entropy_balanced", "base")
SCHEDULE_CLASS_COUNTS = (10, 200)
#: The toy side: CIFAR-10 at its cpu schedule.
TOY_DATASET = "cifar10"
TOY_STRATEGIES = ("random", "balanced_random", *SCORE_STRATEGIES, *BALANCED, *MATCHED)
SEEDS = tuple(range(10))
TOY_SEEDS = tuple(range(5))
#: Per-class budgets: the paper's ImageNet schedule (30 + 8 × 10 per class, as the class-count
#: experiment), half and double of it; the validation split stays 50 per class.
SCHEDULES = {
    "half": {"initial": 15, "round_budget": 5, "rounds": 8, "val_per_class": 50},
    "paper": dict(class_count.PER_CLASS),
    "double": {"initial": 60, "round_budget": 20, "rounds": 8, "val_per_class": 50},
}
#: Smoke scale (CI, seconds): two K, margin's knobs, and schedules that fit the smoke slice of
#: Tiny-ImageNet (6 images per class, 1 held out): a check of the pipeline, not of the method.
SMOKE = {"class_counts": (5, 10), "schedule_class_counts": (10,),
         "strategies": ("random", "margin", "margin_balanced", "margin_class_matched"), "seeds": (0, 1),
         "schedules": {"half": {"initial": 1, "round_budget": 1, "rounds": 2, "val_per_class": 1},
                       "paper": dict(class_count.SMOKE["per_class"]),
                       "double": {"initial": 3, "round_budget": 1, "rounds": 2, "val_per_class": 1}}}
RUNS_DIR = "results/runs/mechanism"


@dataclass(frozen=True)
class Cell:
    """One data set (or Tiny-ImageNet cut to K classes) at one schedule: a folder of runs."""

    name: str                  # folder and table key: "k10", "k200-half", "cifar10"
    dataset: str               # the data set whose features are loaded
    num_classes: int           # K
    schedule: str              # "half" | "paper" | "double" | "cpu" (the toy data set's own)
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def label(self) -> str:
        """How tables and figures name the cell."""
        if self.dataset == TOY_DATASET:
            return "CIFAR-10"
        return f"K = {self.num_classes}" + ("" if self.schedule == "paper" else f" ({self.schedule})")


def cells(scale: str = "cpu") -> list[Cell]:
    """Every cell of the experiment at ``scale`` ("cpu" or "smoke"), in the order they run."""
    if scale not in ("cpu", "smoke"):
        raise ParameterError(f"scale must be 'cpu' or 'smoke', got {scale!r}", param="scale")
    smoke = scale == "smoke"
    counts = SMOKE["class_counts"] if smoke else class_count.CLASS_COUNTS
    schedule_counts = SMOKE["schedule_class_counts"] if smoke else SCHEDULE_CLASS_COUNTS
    seeds = SMOKE["seeds"] if smoke else SEEDS

    def chosen(names):
        return tuple(s for s in names if s in SMOKE["strategies"]) if smoke else tuple(names)

    # The decomposition first (the claim turns on it), then the toy side, then the labels axis.
    out = [Cell(f"k{k}", class_count.SOURCE_DATASET, k, "paper", chosen(CLASS_COUNT_STRATEGIES), seeds)
           for k in counts]
    out.append(Cell(TOY_DATASET, TOY_DATASET, 10, "cpu", chosen(TOY_STRATEGIES), seeds if smoke else TOY_SEEDS))
    out += [Cell(f"k{k}-{name}", class_count.SOURCE_DATASET, k, name, chosen(SCHEDULE_STRATEGIES), seeds)
            for k in schedule_counts for name in ("half", "double")]
    return out


def per_class_budgets(cell: Cell, scale: str) -> dict:
    """The per-class schedule of a Tiny-ImageNet cell at ``scale``."""
    return (SMOKE["schedules"] if scale == "smoke" else SCHEDULES)[cell.schedule]


# --------------------------------------------------------------------------------------------
# Where each run is: the experiment's own folder, or the class-count / cpu sweep's
# --------------------------------------------------------------------------------------------

def borrowed(cell: Cell, strategy: str, scale: str) -> bool:
    """Whether the run belongs to an existing experiment (at cpu scale: the plain strategies at the
    paper's schedule are the class-count experiment's, CIFAR-10's the cpu sweep's)."""
    if scale != "cpu":
        return False
    if cell.dataset == TOY_DATASET:
        return strategy in catalog.CPU_TIER1
    return cell.schedule == "paper" and strategy in class_count.STRATEGIES


def run_folder(cell: Cell, strategy: str, scale: str, out: str | Path, class_count_out: str | Path,
               sweep_out: str | Path) -> Path:
    """The folder of one run of ``cell``."""
    if borrowed(cell, strategy, scale):
        if cell.dataset == TOY_DATASET:
            return Path(sweep_out) / TOY_DATASET
        return class_count.run_folder(cell.num_classes, scale, class_count_out, sweep_out)
    return Path(out) / cell.name


def run_one(data: loading.StudyData, cell: Cell, strategy: str, seed: int, scale: str, out: str | Path,
            class_count_out: str | Path, sweep_out: str | Path, shared: dict | None = None,
            claimed: str = "wait") -> pd.DataFrame:
    """Rows of one (cell, strategy, seed) run, computed unless finished with the same settings."""
    folder = run_folder(cell, strategy, scale, out, class_count_out, sweep_out)
    if cell.dataset == TOY_DATASET:
        return runs.run_configured_sweep(TOY_DATASET, scale, None, data=data, strategies=[strategy], seeds=[seed],
                                         progress=False, shared=shared, claimed=claimed, folder=folder)
    return class_count.run_one(data, cell.num_classes, strategy, seed, class_count_out, sweep_out, scale,
                               per_class_budgets(cell, scale), shared, claimed=claimed, folder=folder)


def pending_runs(scale: str) -> list[tuple]:
    """(dataset, ((cell name, strategy),), seed) tasks in the order they run: cell by cell, seed-major."""
    return [(cell.dataset, ((cell.name, s),), seed) for cell in cells(scale) for seed in cell.seeds
            for s in cell.strategies]


def _shared_key(cell: Cell, seed: int) -> tuple:
    """Runs reading the same features (and so sharing round-0 heads): one (K, seed) subset, or a
    whole data set."""
    if cell.dataset == TOY_DATASET:
        return (TOY_DATASET,)
    return class_count.shared_key(cell.num_classes, seed) + (cell.schedule,)


def worker(dataset: str, task: tuple, seeds: list[int], scale: str, out: str, source: str, data_root: str | None,
           class_count_out: str = class_count.RUNS_DIR, sweep_out: str = class_count.SWEEP_DIR,
           claimed: str = "wait") -> str:
    """One (cell, strategy) task of a parallel mechanism sweep (see :func:`alkit.experiments.launch.run_parallel`)."""
    name, strategy = task
    cell = {c.name: c for c in cells(scale)}[name]
    started = time.perf_counter()
    state = launch.worker_state()
    data = state.data(dataset, launch.worker_loader(dataset, scale, source, data_root))
    finals = []
    for seed in seeds:
        frame = run_one(data, cell, strategy, seed, scale, out, class_count_out, sweep_out,
                        state.shared(_shared_key(cell, seed)), claimed=claimed)
        if not frame.empty:
            finals.append(frame["top1"].iloc[-1])
    return (f"[{cell.label}] {strategy} seed {','.join(map(str, seeds))}: {time.perf_counter() - started:.0f} s "
            f"(top-1 at the end {', '.join(f'{v:.4f}' for v in finals)})")


def run_mechanism(out: str | Path = RUNS_DIR, class_count_out: str | Path = class_count.RUNS_DIR,
                  sweep_out: str | Path = class_count.SWEEP_DIR, *, scale: str = "cpu", jobs: int = 1,
                  source: str = "auto", data_root: str | None = None, extract: bool = True,
                  executor: str | None = None, slurm: launch.SlurmOptions | None = None) -> None:
    """Run (or resume) every run of :func:`cells`; append the wall time to ``<out>/sweep_times.json``.
    ``executor``: as every sweep's (:func:`alkit.experiments.launch.run_phases`): ``"inline"`` (this process),
    ``"local"`` (``jobs`` worker processes) or ``"slurm"`` (a job per unfinished run; returns at
    once); None: inline for one job, local for more."""
    executor = executor or ("local" if jobs > 1 else "inline")
    if executor not in launch.EXECUTORS:
        raise ParameterError(f"executor must be one of {', '.join(launch.EXECUTORS)}, got {executor!r}", param="executor")
    pending = pending_runs(scale)
    by_name = {c.name: c for c in cells(scale)}
    started, started_epoch = time.perf_counter(), time.time()
    kwargs = {"class_count_out": str(class_count_out), "sweep_out": str(sweep_out)}

    def locate(dataset, task, seed):   # where a task's run appears (to print it, to skip it when finished)
        cell = by_name[task[0]]
        folder = run_folder(cell, task[1], scale, out, class_count_out, sweep_out)
        return cell.label, runs.run_path(folder, task[1], seed).with_suffix(".json")

    if executor == "slurm":
        launch.run_slurm(pending, scale, str(out), source=source, data_root=data_root,
                         options=slurm or launch.SlurmOptions(), worker=worker, worker_kwargs=kwargs, locate=locate)
        return
    if executor == "local":
        launch.run_parallel(pending, scale, str(out), source=source, data_root=data_root, jobs=jobs, extract=extract,
                            worker=worker, worker_kwargs=kwargs, locate=locate)
    else:
        loaded, shared = {}, {}   # per data set; per _shared_key
        for dataset, ((name, strategy),), seed in tqdm(pending, desc="mechanism"):
            if dataset not in loaded:
                loaded[dataset] = loading.load_study_data(dataset, scale, source=source, data_root=data_root,
                                                          extract=extract, progress=False)
            cell = by_name[name]
            run_one(loaded[dataset], cell, strategy, seed, scale, out, class_count_out, sweep_out,
                    shared.setdefault(_shared_key(cell, seed), {}))
    ran = 0
    for _, ((name, strategy),), seed in pending:
        folder = run_folder(by_name[name], strategy, scale, out, class_count_out, sweep_out)
        meta = runs.run_path(folder, strategy, seed).with_suffix(".json")
        ran += int(meta.exists() and meta.stat().st_mtime >= started_epoch)
    launch._log_sweep(str(out), f"mechanism ({scale})", jobs, len(pending), ran, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Reading the runs back
# --------------------------------------------------------------------------------------------

def _schedule_of(cell: Cell, scale: str) -> dict:
    """The loop settings every run of the cell must have been made with."""
    if cell.dataset == TOY_DATASET:
        config = catalog.sweep_config(TOY_DATASET, scale)
        return {"initial_size": config.initial_size, "round_budget": config.round_budget, "rounds": config.rounds,
                "val_per_class": config.val_per_class, "num_classes": cell.num_classes}
    return {**class_count.schedule(cell.num_classes, per_class_budgets(cell, scale)), "num_classes": cell.num_classes}


def load_mechanism(out: str | Path = RUNS_DIR, class_count_out: str | Path = class_count.RUNS_DIR,
                   sweep_out: str | Path = class_count.SWEEP_DIR, *, scale: str = "cpu") -> pd.DataFrame:
    """Rows of every finished run of the experiment, with ``cell``, ``cell_label``, ``num_classes``,
    ``schedule`` and the batches' class counts (``batch_counts``).  A run file made with other loop
    settings than its cell's is refused (ValueError), never mixed in."""
    frames = []
    for cell in cells(scale):
        expected = _schedule_of(cell, scale)
        for strategy in cell.strategies:
            folder = run_folder(cell, strategy, scale, out, class_count_out, sweep_out)
            for seed in cell.seeds:
                stem = runs.run_path(folder, strategy, seed)
                if not all(stem.with_suffix(x).is_file() for x in (".json", ".csv", ".npz")):   # not finished
                    continue
                config = json.loads(stem.with_suffix(".json").read_text())["config"]
                made = {k: config.get(k) for k in expected}
                if made != expected:
                    raise ParameterError(f"{stem}.json: made with {made}, not the {cell.label} schedule {expected}; "
                                         "move it away and run `python -m alkit reproduce mechanism` again", param="out")
                frame = pd.read_csv(stem.with_suffix(".csv")).sort_values("round").reset_index(drop=True)
                with np.load(stem.with_suffix(".npz")) as arrays:
                    counts = arrays["label_counts"]
                frame["batch_counts"] = list(np.vstack([counts[:1], np.diff(counts, axis=0)]))
                frames.append(frame.assign(cell=cell.name, cell_label=cell.label, num_classes=cell.num_classes,
                                           schedule=cell.schedule, labelled_per_class_final=
                                           int(frame["n_labeled"].iloc[-1]) / cell.num_classes))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

#: Table order of the schedules within one K.
_SCHEDULE_ORDER = {"half": 0, "paper": 1, "cpu": 1, "double": 2}


def _cell_order(frame: pd.DataFrame) -> list[str]:
    """Cells in table order: the toy data set, then by K, then half, paper, double."""
    firsts = frame.drop_duplicates("cell")
    key = [(r.cell != TOY_DATASET and not r.cell.startswith(TOY_DATASET), r.num_classes, _SCHEDULE_ORDER[r.schedule])
           for r in firsts.itertuples()]
    return [c for _, c in sorted(zip(key, firsts["cell"]))]


def _auc_by_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """AUC of top-1 per (cell, strategy, seed), as a (cell, seed) × strategy table."""
    per_seed = per_seed_auc(frame.drop(columns=["batch_counts"]).assign(dataset=frame["cell"]))
    return per_seed.pivot_table(index=["dataset", "seed"], columns="strategy", values="auc")


def mechanism_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, strategy): Δ AUC vs random with its paired 95 % interval, the queried
    batches' KL from the pool's class distribution and (max+1)/(min+1) class-count ratio (means over
    rounds and seeds), and the labelled set's normalised class entropy after the last round."""
    if frame.empty:
        raise ParameterError("frame: no mechanism runs to tabulate (run `python -m alkit reproduce mechanism`)",
                             param="frame")
    auc = _auc_by_seed(frame)
    queried = frame[frame["round"] > 0]
    last = frame.loc[frame.groupby(["cell", "strategy", "seed"])["round"].idxmax()]
    rows = []
    for name in _cell_order(frame):
        sub = frame[frame["cell"] == name]
        cell_auc = auc.loc[name]
        for strategy in [s for s in CLASS_COUNT_STRATEGIES if s in set(sub["strategy"])]:
            diff = (cell_auc[strategy] - cell_auc["random"]) if "random" in cell_auc else pd.Series(dtype=float)
            interval = mean_interval(diff.to_numpy()) if strategy != "random" else {"mean": np.nan, "low": np.nan,
                                                                                    "high": np.nan}
            batches = queried[(queried["cell"] == name) & (queried["strategy"] == strategy)]
            final = last[(last["cell"] == name) & (last["strategy"] == strategy)]
            rows.append({
                "cell": name, "data": sub["cell_label"].iloc[0], "num_classes": int(sub["num_classes"].iloc[0]),
                "schedule": sub["schedule"].iloc[0], "strategy": strategy,
                "oracle": bool(final["oracle"].astype(bool).any()), "seeds": int(cell_auc[strategy].notna().sum()),
                "labels_per_class_final": float(final["n_labeled"].mean()) / int(sub["num_classes"].iloc[0]),
                "auc_diff": interval["mean"], "auc_diff_lo": interval["low"], "auc_diff_hi": interval["high"],
                "batch_kl_from_pool": float(batches["batch_kl_from_pool"].mean()),
                "batch_max_min_ratio_plus1": float(np.mean([class_count.batch_max_min(c, 1.0)
                                                            for c in batches["batch_counts"]])),
                "labeled_entropy_final": float(final["labeled_normalized_entropy"].mean()),
            })
    return pd.DataFrame(rows)


#: The parts of S's gain: (name, strategy minus, baseline), with S standing for the score strategy.
PARTS = (("total", "{s}", "random"), ("composition", "{s}_class_matched", "random"),
         ("within_classes", "{s}", "{s}_class_matched"), ("balanced", "{s}_balanced", "random"),
         ("balancing_gain", "{s}_balanced", "{s}"))


def parts_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, S, part): the paired difference of AUC (mean, 95 % t-interval, seeds) for
    each part of :data:`PARTS` whose two strategies both ran in the cell."""
    if frame.empty:
        raise ParameterError("frame: no mechanism runs to tabulate (run `python -m alkit reproduce mechanism`)",
                             param="frame")
    auc = _auc_by_seed(frame)
    rows = []
    for name in _cell_order(frame):
        sub = frame[frame["cell"] == name]
        cell_auc = auc.loc[name]
        for s in SCORE_STRATEGIES:
            for part, minus, base in PARTS:
                a, b = minus.format(s=s), base.format(s=s)
                if a not in cell_auc or b not in cell_auc:
                    continue
                diff = (cell_auc[a] - cell_auc[b]).dropna().to_numpy()
                if diff.size == 0:   # one of the two did not run in this cell
                    continue
                interval = mean_interval(diff)
                rows.append({"cell": name, "data": sub["cell_label"].iloc[0],
                             "num_classes": int(sub["num_classes"].iloc[0]), "schedule": sub["schedule"].iloc[0],
                             "strategy": s, "part": part, "comparison": f"{a} − {b}", "seeds": int(diff.size),
                             "mean": interval["mean"], "lo": interval["low"], "hi": interval["high"]})
    return pd.DataFrame(rows)


def per_seed_parts(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-seed values behind :func:`parts_table` (cell, strategy, part, seed, value): what
    comparisons across cells (K = 10 against K = 200) are made of."""
    auc = _auc_by_seed(frame)
    rows = []
    for name in _cell_order(frame):
        cell_auc = auc.loc[name]
        for s in SCORE_STRATEGIES:
            for part, minus, base in PARTS:
                a, b = minus.format(s=s), base.format(s=s)
                if a in cell_auc and b in cell_auc:
                    for seed, value in (cell_auc[a] - cell_auc[b]).dropna().items():
                        rows.append({"cell": name, "strategy": s, "part": part, "seed": int(seed), "value": value})
    return pd.DataFrame(rows)


def across_cells(per_seed: pd.DataFrame, strategy: str, part: str, cell_a: str, cell_b: str) -> dict:
    """``part`` of ``strategy`` in ``cell_a`` minus in ``cell_b`` (different class subsets or
    schedules: independent samples, Welch interval)."""
    def values(cell):
        sel = (per_seed["cell"] == cell) & (per_seed["strategy"] == strategy) & (per_seed["part"] == part)
        return per_seed.loc[sel, "value"].to_numpy()

    return difference_interval(values(cell_a), values(cell_b))


__all__ = ["Cell", "cells", "run_mechanism", "load_mechanism", "mechanism_table", "parts_table", "per_seed_parts",
           "across_cells", "SCHEDULES", "SCORE_STRATEGIES"]


# --------------------------------------------------------------------------------------------
# The numbers claim 1 is judged on
# --------------------------------------------------------------------------------------------

def _interval_columns(name: str, interval: dict) -> dict:
    return {name: interval["mean"], f"{name}_lo": interval["low"], f"{name}_hi": interval["high"]}


def claim1_evidence(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per uncertainty strategy S: what :func:`alkit.report.claim1_verdict` judges.

    ``few`` / ``many``: the smallest and largest K at the paper's schedule.  Columns (each with
    ``_lo`` / ``_hi``, its 95 % interval): ``gain_few``, ``gain_many`` (S − random, paired);
    ``change`` (gain at many minus at few; Welch, the class subsets differ); at many classes
    ``composition`` (S_class_matched − random), ``within`` (S − S_class_matched) and
    ``balancing_gain`` (S_balanced − S), all paired; ``labels_few`` and ``labels_many``: S's gain with
    the double minus the half per-class schedule at that K (Welch); ``toy_gain``,
    ``toy_composition``, ``toy_balancing_gain``: the same parts on the toy data set (CIFAR-10)."""
    per_seed = per_seed_parts(frame)
    paper = frame[frame["schedule"] == "paper"]
    if per_seed.empty or paper.empty:
        return pd.DataFrame()
    few, many = int(paper["num_classes"].min()), int(paper["num_classes"].max())

    def paired(cell: str, s: str, part: str) -> dict:
        sel = (per_seed["cell"] == cell) & (per_seed["strategy"] == s) & (per_seed["part"] == part)
        return mean_interval(per_seed.loc[sel, "value"].to_numpy())

    rows = []
    for s in SCORE_STRATEGIES:
        if not ((per_seed["strategy"] == s) & (per_seed["part"] == "total")).any():
            continue
        row = {"strategy": s, "few": few, "many": many}
        row |= _interval_columns("gain_few", paired(f"k{few}", s, "total"))
        row |= _interval_columns("gain_many", paired(f"k{many}", s, "total"))
        row |= _interval_columns("change", across_cells(per_seed, s, "total", f"k{many}", f"k{few}"))
        row |= _interval_columns("composition", paired(f"k{many}", s, "composition"))
        row |= _interval_columns("within", paired(f"k{many}", s, "within_classes"))
        row |= _interval_columns("balancing_gain", paired(f"k{many}", s, "balancing_gain"))
        for side, k in (("few", few), ("many", many)):
            row |= _interval_columns(f"labels_{side}", across_cells(per_seed, s, "total", f"k{k}-double", f"k{k}-half"))
        row |= _interval_columns("toy_gain", paired(TOY_DATASET, s, "total"))
        row |= _interval_columns("toy_composition", paired(TOY_DATASET, s, "composition"))
        row |= _interval_columns("toy_balancing_gain", paired(TOY_DATASET, s, "balancing_gain"))
        rows.append(row)
    return pd.DataFrame(rows)
