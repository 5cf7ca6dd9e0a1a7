"""A short demo on synthetic pools: every strategy, accuracy and imbalance against labels.

``python -m alkit demo --out results/demo`` — a few-class and a many-class Gaussian mixture
(the paper's contrast), every registered strategy, a few seeds.  Writes the rows as CSV and
figures as PNG/PDF.
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from alkit.data.synthetic import gaussian_mixture
from alkit.experiments.runs import run_sweep
from alkit.io import atomic_write, provenance, write_json
from alkit.plots import plot_difference_from_random, plot_metric, save_figure
from alkit.probe import ProbeConfig
from alkit.strategies import strategy_names

#: Two pools with the same number of points per class budget: few vs many classes.
DEMO_POOLS = {
    "toy (10 classes)": dict(num_classes=10, n_max=150, dim=24, separation=2.2),
    "many-class (60 classes)": dict(num_classes=60, n_max=40, dim=24, separation=3.0, profile="exp",
                                    imbalance_ratio=0.25),
}


def run_demo(out: Path, seeds=(0, 1, 2), rounds: int = 4, per_class_budget: int = 2) -> pd.DataFrame:
    frames = []
    for name, spec in DEMO_POOLS.items():
        data = gaussian_mixture(**spec, n_test_per_class=30, seed=7)
        c = data.num_classes
        frame = run_sweep(data.train_features, data.train_labels, data.test_features, data.test_labels, c,
                          strategy_names(variants=False), seeds, initial_size=2 * c, round_budget=per_class_budget * c,
                          rounds=rounds, val_per_class=3, probe=ProbeConfig(),
                          dataset=name, progress=True)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def draw(frame: pd.DataFrame, out: Path) -> list[Path]:
    datasets = list(frame["dataset"].unique())
    panels = [("top1", "test top-1"), ("labeled_normalized_entropy", "labelled-set class entropy (1 = balanced)")]
    fig, axes = plt.subplots(3, len(datasets), figsize=(6 * len(datasets), 12), squeeze=False)
    for j, ds in enumerate(datasets):
        sub = frame[frame["dataset"] == ds]
        plot_metric(sub, "top1", axes[0, j], title=f"{ds}: accuracy", ylabel=panels[0][1])
        plot_difference_from_random(sub, "top1", axes[1, j], title=f"{ds}: difference from random (paired by seed)")
        plot_metric(sub, "labeled_normalized_entropy", axes[2, j], title=f"{ds}: class balance of labelled set",
                    ylabel=panels[1][1])
    axes[0, -1].legend(fontsize=7, ncol=2, loc="lower right")
    fig.suptitle("alkit demo on synthetic Gaussian mixtures (not the paper's data)", fontsize=12)
    fig.tight_layout()
    paths = save_figure(fig, out / "demo_strategies")
    plt.close(fig)
    return paths


def write_demo(out: str | Path, seeds: tuple[int, ...] = (0, 1, 2), rounds: int = 4) -> list[Path]:
    """Run the demo and write its rows (CSV), figures and provenance under ``out``; returns the figures."""
    out = Path(out)
    started = time.perf_counter()
    frame = run_demo(out, tuple(seeds), rounds)
    atomic_write(out / "demo_rows.csv", lambda tmp: frame.to_csv(tmp, index=False))
    paths = draw(frame, out)
    write_json(out / "demo_provenance.json", provenance(wall_seconds=time.perf_counter() - started,
                                                         pools={k: str(v) for k, v in DEMO_POOLS.items()}))
    return paths
