"""Experiments as data: a sweep over (strategy, seed) writes one result per run, atomically.

Each finished run leaves ``<out_dir>/<strategy>__seed<k>.csv`` (its rows), ``.npz`` (picks,
label counts, per-class accuracy) and, written last, ``.json`` (configuration + provenance).
A run whose ``.json`` exists with the same configuration is skipped, so an interrupted sweep
resumes where it stopped and never reuses a result made with other settings.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit.io import atomic_write, provenance, write_json
from alkit.loop import RunResult, run_active_learning
from alkit.probe import ProbeConfig
from alkit.strategies.registry import Strategy, resolve_strategy


def run_path(out_dir: Path, strategy: str, seed: int) -> Path:
    return Path(out_dir) / f"{strategy}__seed{seed}"


def _save_run(stem: Path, result: RunResult, extra: dict) -> None:
    atomic_write(stem.with_suffix(".csv"), lambda tmp: pd.DataFrame(result.rows).to_csv(tmp, index=False))

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, validation_indices=result.validation_indices, label_counts=result.label_counts,
                per_class_accuracy=result.per_class_accuracy,
                **{f"picks_round{r}": p for r, p in enumerate(result.picks)},
            )

    atomic_write(stem.with_suffix(".npz"), write_npz)
    write_json(stem.with_suffix(".json"), {"config": result.config, **extra})  # last: marks the run done


def _finished(stem: Path, config_key: dict) -> bool:
    meta = stem.with_suffix(".json")
    if not (meta.exists() and stem.with_suffix(".csv").exists() and stem.with_suffix(".npz").exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("run_key") == json.loads(json.dumps(config_key, default=str))
    except (OSError, ValueError):
        return False


def run_sweep(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    strategies: Sequence[str | Strategy],
    seeds: Sequence[int],
    *,
    initial_size: int,
    round_budget: int,
    rounds: int,
    val_per_class: int = 0,
    probe: ProbeConfig = ProbeConfig(),
    out_dir: str | Path | None = None,
    dataset: str = "arrays",
    data_meta: dict | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every (strategy, seed); return all rows.  With ``out_dir`` each run is saved as it
    finishes and finished runs with the same settings are loaded instead of recomputed."""
    frames = []
    jobs = [(resolve_strategy(s), int(seed)) for s in strategies for seed in seeds]
    for info, seed in tqdm(jobs, desc=f"sweep {dataset}", disable=not progress):
        key = {"dataset": dataset, "strategy": info.name, "seed": seed, "initial_size": initial_size,
               "round_budget": round_budget, "rounds": rounds, "val_per_class": val_per_class,
               "probe": probe.as_dict(), "data": data_meta or {}, "pool_size": int(train_features.shape[0])}
        key = json.loads(json.dumps(key, default=str))
        stem = run_path(Path(out_dir), info.name, seed) if out_dir is not None else None
        if stem is not None and _finished(stem, key):
            frames.append(pd.read_csv(stem.with_suffix(".csv")))
            continue
        started = time.perf_counter()
        result = run_active_learning(
            train_features, train_labels, test_features, test_labels, num_classes, info, seed=seed,
            initial_size=initial_size, round_budget=round_budget, rounds=rounds, val_per_class=val_per_class,
            probe=probe, progress=progress,
        )
        frame = result.frame()
        frame.insert(0, "dataset", dataset)
        result.rows = frame.to_dict("records")
        if stem is not None:
            _save_run(stem, result, {"run_key": key, "provenance": provenance(wall_seconds=time.perf_counter() - started)})
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def run_from_arrays(args: argparse.Namespace) -> int:
    """``python -m alkit run``: load arrays, run the sweep, write the CSV of all rows."""
    from alkit.cli import UsageError, _load_array
    from alkit.io import atomic_write

    x = _load_array(args.features, "--features")
    y = np.asarray(_load_array(args.labels, "--labels"))
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise UsageError(f"--labels: must hold one label per row of --features ({x.shape[0]}), got {y.shape}")
    if (args.test_features is None) != (args.test_labels is None):
        raise UsageError("--test-features and --test-labels must be given together")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UsageError("--labels: must be non-negative integer classes for every pool point")
    num_classes = args.num_classes or int(y.max()) + 1
    if args.test_features is None:
        if not 0 < args.test_fraction < 1:
            raise UsageError(f"--test-fraction: must lie in (0, 1), got {args.test_fraction}")
        order = np.random.default_rng(12345).permutation(x.shape[0])
        n_test = int(round(args.test_fraction * x.shape[0]))
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        tx, ty, x, y = x[test], y[test], x[train], y[train]
    else:
        tx = _load_array(args.test_features, "--test-features")
        ty = np.asarray(_load_array(args.test_labels, "--test-labels"))
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds: must be comma-separated integers, got {args.seeds!r}") from None
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for name in strategies:
        resolve_strategy(name)
    frame = run_sweep(x, y, tx, ty, num_classes, strategies, seeds, initial_size=args.initial,
                      round_budget=args.budget, rounds=args.rounds, val_per_class=args.val_per_class,
                      dataset=Path(args.features).stem)
    atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    print(f"wrote {len(frame)} rows -> {args.out}")
    return 0
