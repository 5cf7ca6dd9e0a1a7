"""Plots of per-round rows: metric against labels, per strategy, mean and 95 % interval over seeds."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from alkit.stats import mean_interval, paired_differences


def strategy_colors(strategies: list[str]) -> dict[str, tuple]:
    """Stable colours: the same strategy has the same colour in every figure."""
    import seaborn as sns

    palette = sns.color_palette("tab20", 20)
    ordered = sorted(strategies)
    return {s: ("black" if s == "random" else palette[i % 20]) for i, s in enumerate(ordered)}


def _label(strategy: str, frame: pd.DataFrame) -> str:
    oracle = frame.loc[frame["strategy"] == strategy, "oracle"].any() if "oracle" in frame else False
    return f"{strategy} (oracle)" if oracle else strategy


def plot_metric(frame: pd.DataFrame, metric: str, ax=None, x: str = "n_labeled", title: str | None = None,
                ylabel: str | None = None):
    """``metric`` against ``x`` for each strategy: mean over seeds and its 95 % t-interval."""
    ax = ax or plt.gca()
    colors = strategy_colors(list(frame["strategy"].unique()))
    for strategy, group in frame.groupby("strategy", sort=True):
        stats = group.groupby(x)[metric].apply(lambda v: pd.Series(mean_interval(v.to_numpy()))).unstack()
        style = "--" if group["oracle"].any() else "-"
        ax.plot(stats.index, stats["mean"], style, color=colors[strategy], label=_label(strategy, frame), lw=1.5,
                marker="o", ms=2.5)
        ax.fill_between(stats.index, stats["low"], stats["high"], color=colors[strategy], alpha=0.15, lw=0)
    ax.set_xlabel("labelled points" if x == "n_labeled" else x)
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def plot_difference_from_random(frame: pd.DataFrame, metric: str = "top1", ax=None, baseline: str = "random",
                                title: str | None = None):
    """Each strategy minus ``baseline``, paired by seed and round: mean and 95 % interval."""
    ax = ax or plt.gca()
    diffs = paired_differences(frame, metric, baseline)
    colors = strategy_colors(list(frame["strategy"].unique()))
    for strategy, group in diffs.groupby("strategy", sort=True):
        style = "--" if frame.loc[frame["strategy"] == strategy, "oracle"].any() else "-"
        ax.plot(group["n_labeled"], group["mean"], style, color=colors[strategy], label=_label(strategy, frame),
                lw=1.5, marker="o", ms=2.5)
        ax.fill_between(group["n_labeled"], group["low"], group["high"], color=colors[strategy], alpha=0.15, lw=0)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xlabel("labelled points")
    ax.set_ylabel(f"{metric} − {baseline}")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return ax


def save_figure(fig, stem: str | Path, formats=("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically."""
    from alkit.io import atomic_write

    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight"))
        paths.append(path)
    return paths
