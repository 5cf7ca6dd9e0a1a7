"""The class-count experiment: the paper's mechanism tested directly, one image source, one backbone.

Claim 1 says that results on a toy data set do not carry over to ImageNet *because* active learners
pick class-imbalanced batches when there are many classes.  CIFAR-10 against Tiny-ImageNet changes
the images, the resolution and the number of classes at once; here only the number of classes K
moves: Tiny-ImageNet restricted to K ∈ {10, 25, 50, 100, 200} classes (a random subset of the 200,
drawn per seed), with the paper's per-class budgets (30 per class initial, 10 per class per round,
8 rounds, 50 per class validation — the cpu schedule of Tiny-ImageNet, which K = 200 is), the same
EfficientNet-Lite0 features and the same probe.  If the mechanism holds, the uncertainty strategies'
batches grow more imbalanced with K and their gain over random shrinks with it, while BASE keeps its
batches balanced.

Runs live in ``<out>/k<K>/<strategy>__seed<s>.{csv,npz,json}`` (default ``results/runs/class-count``),
resumable like every sweep; K = 200 *is* the cpu sweep of Tiny-ImageNet (the same rows, schedule
and seeds), so its runs are read from, and missing ones written to, that sweep's folder.

    python -m alkit reproduce class-count --jobs 2      # runs, then notebooks/g_class_count
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit.checks import ParameterError
from alkit.experiments import catalog, launch, loading, runs
from alkit.report import summary_table
from alkit.strategies.registry import resolve_strategy

SOURCE_DATASET = "tiny-imagenet"
CLASS_COUNTS = (10, 25, 50, 100, 200)
STRATEGIES = ("random", "balanced_random", "confidence", "margin", "entropy", "mase", "base", "badge")
SEEDS = tuple(range(10))
#: The paper's ImageNet budgets per class (30 k initial, 10 k per round for 1000 classes), as the
#: cpu schedule of Tiny-ImageNet uses them; 50 validation images per class (10 % of Tiny-ImageNet).
PER_CLASS = {"initial": 30, "round_budget": 10, "rounds": 8, "val_per_class": 50}
#: Smoke scale (CI, seconds): a few classes, tiny budgets, on the smoke slice or stand-in.
SMOKE = {"class_counts": (5, 10), "strategies": ("random", "margin", "base"), "seeds": (0, 1),
         "per_class": {"initial": 2, "round_budget": 1, "rounds": 2, "val_per_class": 1}}
RUNS_DIR = "results/runs/class-count"
SWEEP_DIR = "results/runs/cpu"
FULL_CLASSES = catalog.data_spec(SOURCE_DATASET).num_classes


def is_the_sweep(k: int, scale: str, per_class: dict = PER_CLASS) -> bool:
    """Whether K classes with these per-class budgets are the cpu sweep of Tiny-ImageNet itself (all
    its classes, its schedule): those runs are the sweep's."""
    config = catalog.sweep_config(SOURCE_DATASET, "cpu")
    return scale == "cpu" and k == FULL_CLASSES and schedule(k, per_class) == {
        "initial_size": config.initial_size, "round_budget": config.round_budget, "rounds": config.rounds,
        "val_per_class": config.val_per_class}


def run_folder(k: int, scale: str, out: str | Path, sweep_out: str | Path, per_class: dict = PER_CLASS) -> Path:
    """Where the runs with K classes are: the Tiny-ImageNet sweep's folder for the sweep itself
    (:func:`is_the_sweep`), else ``<out>/k<K>``."""
    if is_the_sweep(k, scale, per_class):
        return Path(sweep_out) / SOURCE_DATASET
    return Path(out) / f"k{k}"


def class_subset(total: int, k: int, seed: int) -> np.ndarray:
    """The K classes of seed ``seed``: sorted, drawn without replacement from ``total`` (all of them,
    in order, when K = total — the full data set, not a shuffle of it)."""
    if not 2 <= k <= total:
        raise ParameterError(f"class count must lie in [2, {total}], got {k}", param="class_counts")
    if k == total:
        return np.arange(total)
    return np.sort(np.random.default_rng([int(seed), 7, int(k)]).choice(total, size=k, replace=False))


def restrict(features: np.ndarray, labels: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``classes``, relabelled 0 … K−1 in the order of ``classes`` (sorted)."""
    keep = np.isin(labels, classes)
    return np.asarray(features[keep]), np.searchsorted(classes, labels[keep]).astype(labels.dtype)


def schedule(k: int, per_class: dict = PER_CLASS) -> dict:
    """Loop settings for K classes from the per-class budgets."""
    return {"initial_size": per_class["initial"] * k, "round_budget": per_class["round_budget"] * k,
            "rounds": per_class["rounds"], "val_per_class": per_class["val_per_class"]}


def run_one(data: loading.StudyData, k: int, strategy: str, seed: int, out: str | Path, sweep_out: str | Path,
            scale: str = "cpu", per_class: dict = PER_CLASS, shared: dict | None = None,
            claimed: str = "wait", folder: str | Path | None = None) -> pd.DataFrame:
    """Rows of one (K, strategy, seed) run, computed unless finished with the same settings.

    ``shared``: the ``shared`` dict of the run's :class:`alkit.pool.StrategyCache` (round-0 heads),
    one per feature matrix: per :func:`shared_key`.  ``claimed``: see :func:`alkit.experiments.runs.run_sweep`
    (a run another worker holds is skipped with ``"skip"``: no rows).  ``folder``: where the run
    goes instead of :func:`run_folder` (an experiment keeping runs of its own; same run key)."""
    folder = Path(folder) if folder is not None else run_folder(k, scale, out, sweep_out, per_class)
    if is_the_sweep(k, scale, per_class):   # the data set itself: a run of the cpu sweep
        frame = runs.run_configured_sweep(SOURCE_DATASET, "cpu", sweep_out, data=data, strategies=[strategy],
                                          seeds=[seed], progress=False, shared=shared, claimed=claimed,
                                          folder=folder)
    else:
        classes = class_subset(data.num_classes, k, seed)
        train_features, test_features = data.loop_features()
        x, y = restrict(train_features, data.train_labels, classes)
        tx, ty = restrict(test_features, data.test_labels, classes)
        train_fp, test_fp = data.fingerprints()
        meta = {"source": data.source, "of": SOURCE_DATASET, "train_fingerprint": train_fp,
                "test_fingerprint": test_fp, "scale": scale, "num_classes": k,
                "classes": classes.tolist()}
        probe = catalog.sweep_config(SOURCE_DATASET, scale).probe
        frame = runs.run_sweep(x, y, tx, ty, k, [strategy], [seed], **schedule(k, per_class), probe=probe,
                               out_dir=folder, dataset=f"{SOURCE_DATASET}-k{k}",
                               data_meta=meta, data_source=data.source, progress=False, shared=shared,
                               claimed=claimed)
    frame = frame.copy()
    frame["num_classes"] = k
    return frame


def pending_runs(class_counts: Sequence[int], strategies: Sequence[str], seeds: Sequence[int]) -> list[tuple]:
    """(dataset, ((K, strategy),), seed) tasks, cheapest K first and seed-major within each K, in
    the shape :func:`alkit.experiments.launch.run_parallel` hands out."""
    return [(SOURCE_DATASET, ((int(k), s),), int(seed)) for k in sorted(class_counts) for seed in seeds
            for s in strategies]


def shared_key(k: int, seed: int, total: int = FULL_CLASSES) -> tuple:
    """Which runs read the same features: those of one (K, seed) — the K classes drawn for that
    seed — and, with every class (K = total), those of every seed."""
    return (int(k),) if k == total else (int(k), int(seed))


def worker(dataset: str, task: tuple, seeds: list[int], scale: str, out: str, source: str, data_root: str | None,
           sweep_out: str = SWEEP_DIR, per_class: dict | None = None, claimed: str = "wait") -> str:
    """One (K, strategy) task of a parallel class-count sweep (see :func:`alkit.experiments.launch.run_parallel`)."""
    k, strategy = task
    started = time.perf_counter()
    state = launch.worker_state()
    data = state.data(dataset, launch.worker_loader(dataset, scale, source, data_root))
    finals = []
    for seed in seeds:
        frame = run_one(data, k, strategy, seed, out, sweep_out, scale, per_class or PER_CLASS,
                        state.shared(shared_key(k, seed, data.num_classes)), claimed=claimed)
        if not frame.empty:
            finals.append(frame["top1"].iloc[-1])
    return (f"[K = {k}] {strategy} seed {','.join(map(str, seeds))}: {time.perf_counter() - started:.0f} s "
            f"(top-1 at the end {', '.join(f'{v:.4f}' for v in finals)})")


def run_class_count(out: str | Path = RUNS_DIR, sweep_out: str | Path = SWEEP_DIR, *, scale: str = "cpu",
                    class_counts: Sequence[int] = CLASS_COUNTS, strategies: Sequence[str] = STRATEGIES,
                    seeds: Sequence[int] = SEEDS, per_class: dict = PER_CLASS, jobs: int = 1,
                    source: str = "auto", data_root: str | None = None, extract: bool = True) -> None:
    """Run (or resume) every (K, strategy, seed); append the wall time to ``<out>/sweep_times.json``."""
    for name in strategies:
        resolve_strategy(name)
    pending = pending_runs(class_counts, strategies, seeds)
    started, started_epoch = time.perf_counter(), time.time()
    if jobs > 1:
        def locate(dataset, task, seed):   # where a task's run appears, to print it as it does
            k, strategy = task
            return f"K = {k}", runs.run_path(run_folder(k, scale, out, sweep_out, per_class), strategy, seed).with_suffix(".json")

        launch.run_parallel(pending, scale, str(out), source=source, data_root=data_root, jobs=jobs,
                            extract=extract, worker=worker, locate=locate,
                            worker_kwargs={"sweep_out": str(sweep_out), "per_class": dict(per_class)})
    else:
        data = loading.load_study_data(SOURCE_DATASET, scale, source=source, data_root=data_root,
                                          extract=extract, progress=False)
        shared: dict = {}
        for _, ((k, strategy),), seed in tqdm(pending, desc="class count"):
            run_one(data, k, strategy, seed, out, sweep_out, scale, per_class,
                    shared.setdefault(shared_key(k, seed, data.num_classes), {}))
    ran = 0
    for _, ((k, strategy),), seed in pending:
        meta = runs.run_path(run_folder(k, scale, out, sweep_out, per_class), strategy, seed).with_suffix(".json")
        ran += int(meta.exists() and meta.stat().st_mtime >= started_epoch)
    launch._log_sweep(str(out), f"class-count ({scale})", jobs, len(pending), ran, time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# Reading the runs back, the table
# --------------------------------------------------------------------------------------------

def load_class_count(out: str | Path = RUNS_DIR, sweep_out: str | Path = SWEEP_DIR, *, scale: str = "cpu",
                     class_counts: Sequence[int] = CLASS_COUNTS, strategies: Sequence[str] = STRATEGIES,
                     seeds: Sequence[int] | None = SEEDS) -> pd.DataFrame:
    """Rows of the finished runs, with ``num_classes``; the batches' class counts as ``batch_counts``."""
    frames = []
    for k in class_counts:
        for stem in runs.finished_runs(run_folder(k, scale, out, sweep_out)):
            frame = pd.read_csv(stem.with_suffix(".csv"))
            if frame["strategy"].iloc[0] not in strategies or (seeds is not None and frame["seed"].iloc[0] not in seeds):
                continue
            with np.load(stem.with_suffix(".npz")) as arrays:
                counts = arrays["label_counts"]
            batches = np.vstack([counts[:1], np.diff(counts, axis=0)])   # round 0: the initial pool
            frame = frame.sort_values("round").reset_index(drop=True)
            frame["batch_counts"] = list(batches)
            frame["num_classes"] = k
            frame["dataset"] = f"K = {k}"
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def batch_max_min(counts: np.ndarray, pseudo: float = 0.0) -> float:
    """max/min of a batch's class counts (inf when a class got none), with ``pseudo`` added to every
    count (``pseudo=1`` keeps it finite, to plot)."""
    counts = np.asarray(counts, np.float64) + pseudo
    return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")


def class_count_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (K, strategy): Δ AUC of top-1 vs random paired by seed with its 95 % t-interval,
    and the queried batches' balance (means over rounds 1 … R and seeds)."""
    if frame.empty:
        raise ParameterError("frame: no class-count runs to tabulate (run `python -m alkit reproduce class-count`)",
                             param="frame")
    summary = summary_table(frame.drop(columns=["batch_counts"]))
    queried = frame[frame["round"] > 0]
    rows = []
    for r in summary.itertuples(index=False):
        k = int(str(r.dataset).split("=")[1])
        batches = queried[(queried["num_classes"] == k) & (queried["strategy"] == r.strategy)]
        ratios = [batch_max_min(c) for c in batches["batch_counts"]]
        rows.append({
            "num_classes": k, "strategy": r.strategy, "oracle": r.oracle, "seeds": r.seeds,
            "auc_diff": r.auc_diff, "auc_diff_lo": r.auc_diff_low, "auc_diff_hi": r.auc_diff_high,
            "outcome": r.outcome, "auc_top1": r.auc_top1, "final_top1": r.final_top1,
            "batch_entropy": float(batches["batch_normalized_entropy"].mean()),
            "batch_max_min_ratio": float(np.mean(ratios)),
            "batch_max_min_ratio_plus1": float(np.mean([batch_max_min(c, 1.0) for c in batches["batch_counts"]])),
            "batch_empty_class_share": float(np.mean([(np.asarray(c) == 0).mean() for c in batches["batch_counts"]])),
            "batch_kl_from_pool": float(batches["batch_kl_from_pool"].mean()),
        })
    out = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    return out.sort_values(["num_classes", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c,
                           ignore_index=True)
