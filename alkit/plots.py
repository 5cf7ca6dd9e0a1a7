"""Plots of per-round rows: one plot per panel, stable colours, oracle baselines dashed.

Every function draws on one ``ax`` and returns it; :func:`by_dataset` lays the same plot out
side by side for several data sets (CIFAR-10 beside Tiny-ImageNet-200).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from alkit.checks import ParameterError
from alkit.io import atomic_write
from alkit.stats import mean_interval, paired_differences
from alkit.strategies.registry import in_registry_order, strategy_names

#: Readable names for the metric columns of the loop's rows.
METRIC_LABELS = {
    "top1": "test top-1 accuracy",
    "top5": "test top-5 accuracy",
    "balanced_accuracy": "test balanced accuracy",
    "labeled_normalized_entropy": "labelled set: class entropy (1 = balanced)",
    "batch_normalized_entropy": "queried batch: class entropy (1 = balanced)",
    "labeled_gini": "labelled set: Gini of class counts (0 = balanced)",
    "batch_gini": "queried batch: Gini of class counts (0 = balanced)",
    "batch_distinct_classes": "queried batch: distinct classes",
    "labeled_classes_without_label": "classes with no label",
    "batch_kl_from_pool": "queried batch: KL from pool class distribution",
    "labeled_kl_from_pool": "labelled set: KL from pool class distribution",
    "labeled_max_min_ratio": "labelled set: max/min class count",
}


#: Metrics that live in [0, 1] (their interval bands are drawn within those bounds).
BOUNDED_METRICS = {"top1", "top5", "balanced_accuracy", "labeled_normalized_entropy", "batch_normalized_entropy",
                   "labeled_gini", "batch_gini", "val_top1"}

#: tab20 comes in (dark, light) pairs of one hue: take all dark ones first so that neighbours differ.
_DISTINCT_ORDER = list(range(0, 20, 2)) + list(range(1, 20, 2))


def strategy_colors(strategies: Sequence[str]) -> dict[str, tuple]:
    """Stable colours: a registered strategy gets the same colour in every figure whatever else is
    drawn (by its place in the registry); random is black; a user's strategy gets a colour from a
    hash of its name."""
    palette = sns.color_palette("tab20", 20)
    registered = [s for s in strategy_names() if s != "random"]
    colors = {}
    for s in strategies:
        if s == "random":
            colors[s] = (0.0, 0.0, 0.0)
        elif s in registered:
            colors[s] = palette[_DISTINCT_ORDER[registered.index(s) % 20]]
        else:
            colors[s] = palette[zlib.crc32(s.encode()) % 20]
    return colors


def _is_oracle(frame: pd.DataFrame, strategy: str) -> bool:
    return bool("oracle" in frame and frame.loc[frame["strategy"] == strategy, "oracle"].astype(bool).any())


def strategy_label(strategy: str, frame: pd.DataFrame) -> str:
    """Name, '(oracle)' for oracle baselines, and the seed count when it is below the others'."""
    label = f"{strategy} (oracle)" if _is_oracle(frame, strategy) else strategy
    if "seed" in frame:
        seeds = frame.groupby("strategy")["seed"].nunique()
        if strategy in seeds and seeds[strategy] < seeds.max():
            label += f" [{seeds[strategy]} seed{'s' if seeds[strategy] > 1 else ''}]"
    return label


def _style(frame: pd.DataFrame, strategy: str, colors: dict) -> dict:
    emphasised = strategy in ("random", "base")
    return {"color": colors[strategy], "linestyle": "--" if _is_oracle(frame, strategy) else "-",
            "lw": 2.2 if emphasised else 1.3, "marker": "o", "ms": 2.5, "label": strategy_label(strategy, frame),
            "zorder": 3 if emphasised else 2}


def plot_metric(frame: pd.DataFrame, metric: str, ax=None, x: str = "n_labeled", title: str | None = None,
                ylabel: str | None = None, band: bool = True):
    """``metric`` against ``x`` for each strategy: mean over seeds and its 95 % t-interval."""
    ax = ax if ax is not None else plt.gca()
    if metric not in frame:
        raise ParameterError(f"metric {metric!r} is not a column of the rows; choose one of {', '.join(frame.columns)}",
                             param="metric")
    colors = strategy_colors(list(frame["strategy"].unique()))
    for strategy in in_registry_order(frame["strategy"].unique()):
        group = frame[frame["strategy"] == strategy]
        stats = group.groupby(x)[metric].apply(lambda v: pd.Series(mean_interval(v.to_numpy()))).unstack()
        ax.plot(stats.index, stats["mean"], **_style(frame, strategy, colors))
        if band:   # a t-interval of a proportion can pass its bounds with few seeds: draw it within them
            low, high = stats["low"], stats["high"]
            if metric in BOUNDED_METRICS:
                low, high = low.clip(0.0, 1.0), high.clip(0.0, 1.0)
            ax.fill_between(stats.index, low, high, color=colors[strategy], alpha=0.12, lw=0)
    ax.set_xlabel({"n_labeled": "labelled points", "round": "round"}.get(x, x))
    ax.set_ylabel(ylabel or METRIC_LABELS.get(metric, metric))
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def plot_difference_from_random(frame: pd.DataFrame, metric: str = "top1", ax=None, baseline: str = "random",
                                title: str | None = None, x: str = "n_labeled"):
    """Each strategy minus ``baseline``, paired by seed at each ``x``: mean and 95 % interval."""
    ax = ax if ax is not None else plt.gca()
    diffs = paired_differences(frame, metric, baseline, by=(x,))
    colors = strategy_colors(list(frame["strategy"].unique()))
    for strategy in in_registry_order(diffs["strategy"].unique()):
        group = diffs[diffs["strategy"] == strategy].sort_values(x)
        ax.plot(group[x], group["mean"], **_style(frame, strategy, colors))
        ax.fill_between(group[x], group["low"], group["high"], color=colors[strategy], alpha=0.12, lw=0)
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xlabel({"n_labeled": "labelled points", "round": "round"}.get(x, x))
    ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} − {baseline}")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def plot_bars(table: pd.DataFrame, value: str, ax=None, low: str | None = None, high: str | None = None,
              title: str | None = None, xlabel: str | None = None, zero_line: bool = True):
    """Horizontal bars of ``value`` per strategy (rows of a summary table), with an interval."""
    ax = ax if ax is not None else plt.gca()
    table = table.set_index("strategy").loc[in_registry_order(table["strategy"].unique())].reset_index()
    colors = strategy_colors(list(table["strategy"]))
    y = range(len(table))
    err = None
    if low and high:
        err = [(table[value] - table[low]).clip(lower=0).to_numpy(), (table[high] - table[value]).clip(lower=0).to_numpy()]
    ax.barh(list(y), table[value], xerr=err, color=[colors[s] for s in table["strategy"]],
            hatch=None, alpha=0.85, error_kw={"lw": 1, "capsize": 2})
    labels = [f"{s} (oracle)" if o else s for s, o in zip(table["strategy"], table.get("oracle", [False] * len(table)))]
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    if zero_line:
        ax.axvline(0.0, color="black", lw=1)
    ax.set_xlabel(xlabel or value)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return ax


#: Where a point's label may go, in points from the point (first free one wins).
_LABEL_OFFSETS = ((4, 3), (4, -9), (-4, 3), (-4, -9), (4, 11), (-4, 11), (4, -17), (-4, -17), (4, 19), (-4, -25))


def _label_points(ax, points, fontsize: float = 6) -> None:
    """Annotate each (x, y, text) beside its point, at the first offset of :data:`_LABEL_OFFSETS`
    whose box overlaps no label placed before (approximate boxes in display units): labels of points
    that lie close together no longer print over each other."""
    ax.autoscale_view()
    to_display = ax.transData.transform
    per_point = ax.figure.dpi / 72.0
    placed: list[tuple[float, float, float, float]] = []
    for px, py, text in sorted(points, key=lambda p: (-p[1], p[0])):
        cx, cy = to_display((px, py))
        width, height = 0.6 * fontsize * len(text) * per_point, fontsize * per_point
        choice = _LABEL_OFFSETS[0]
        for dx, dy in _LABEL_OFFSETS:
            left = cx + dx * per_point - (width if dx < 0 else 0)
            bottom = cy + dy * per_point
            box = (left, bottom, left + width, bottom + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                choice = (dx, dy)
                break
        else:
            left, bottom = cx + choice[0] * per_point, cy + choice[1] * per_point
            box = (left, bottom, left + width, bottom + height)
        placed.append(box)
        ax.annotate(text, (px, py), fontsize=fontsize, xytext=choice, textcoords="offset points",
                    ha="right" if choice[0] < 0 else "left")


def plot_balance_vs_benefit(summary: pd.DataFrame, ax=None, title: str | None = None,
                            x: str = "mean_batch_entropy", y: str = "auc_diff"):
    """One point per strategy (rows of :func:`alkit.report.summary_table`): batch balance against
    the paired difference from random, with the 95 % interval of the latter."""
    ax = ax if ax is not None else plt.gca()
    table = summary[summary["strategy"] != "random"]
    colors = strategy_colors(list(table["strategy"]))
    most = int(table["seeds"].max()) if "seeds" in table and len(table) else 0
    for row in table.itertuples(index=False):
        s = row.strategy
        marker = "D" if row.oracle else "o"
        seeds_note = f" [{row.seeds} seed{'s' if row.seeds > 1 else ''}]" if getattr(row, "seeds", most) < most else ""
        yerr = [[max(getattr(row, y) - row.auc_diff_low, 0)], [max(row.auc_diff_high - getattr(row, y), 0)]]
        ax.errorbar(getattr(row, x), getattr(row, y), yerr=yerr, fmt=marker, color=colors[s], ms=6 if s == "base" else 4,
                    mfc="none" if row.oracle else colors[s], capsize=2, lw=1,
                    label=(f"{s} (oracle)" if row.oracle else s) + seeds_note)
    _label_points(ax, [(getattr(r, x), getattr(r, y), r.strategy + (f" [{r.seeds} seed{'s' if r.seeds > 1 else ''}]"
                                                                    if getattr(r, "seeds", most) < most else ""))
                       for r in table.itertuples(index=False)])
    ax.axhline(0.0, color="black", lw=1)
    ax.set_xlabel(METRIC_LABELS.get("batch_normalized_entropy") if x == "mean_batch_entropy" else x)
    ax.set_ylabel("Δ area under top-1 curve vs random" if y == "auc_diff" else y)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def _log_x_at(ax, values) -> None:
    """A log x axis ticked at exactly ``values`` (class counts, labels per class), no minor ticks."""
    ticks = sorted(set(values))
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()


def plot_against_classes(table: pd.DataFrame, value: str, ax=None, low: str | None = None, high: str | None = None,
                         ylabel: str | None = None, title: str | None = None, logy: bool = False, zero_line: bool = False):
    """``value`` of each strategy against the number of classes (one point per K, log axis), with
    the interval ``low``–``high`` as error bars when given (the class-count experiment)."""
    ax = ax if ax is not None else plt.gca()
    colors = strategy_colors(list(table["strategy"].unique()))
    strategies = in_registry_order(table["strategy"].unique())
    offsets = {s: 1.0 + 0.025 * (i - (len(strategies) - 1) / 2) for i, s in enumerate(strategies)}   # no overlaps
    for strategy in strategies:
        sub = table[table["strategy"] == strategy].sort_values("num_classes")
        x = sub["num_classes"].to_numpy() * offsets[strategy]
        style = _style(table.assign(seed=0) if "seed" not in table else table, strategy, colors)
        style["label"] = f"{strategy} (oracle)" if _is_oracle(table, strategy) else strategy
        if low and high:
            err = [sub[value] - sub[low], sub[high] - sub[value]]
            ax.errorbar(x, sub[value], yerr=err, capsize=2, elinewidth=0.8, **style)
        else:
            ax.plot(x, sub[value], **style)
    if zero_line:
        ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    _log_x_at(ax, table["num_classes"])
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("number of classes K")
    ax.set_ylabel(ylabel or METRIC_LABELS.get(value, value))
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


#: How the mechanism figure draws each part of a strategy's gain over random (alkit.experiments.mechanism.PARTS).
PART_STYLES = {
    "total": dict(color="black", marker="o", label="total: S − random"),
    "composition": dict(color="tab:red", marker="s", label="class composition: S_class_matched − random (oracle)"),
    "within_classes": dict(color="tab:blue", marker="^", label="choice within classes: S − S_class_matched"),
    "balanced": dict(color="tab:green", marker="D", ls="--", label="balanced scores: S_balanced − random"),
}


def plot_parts_against_classes(parts: pd.DataFrame, strategy: str, ax=None, title: str | None = None):
    """The parts of ``strategy``'s gain over random (:func:`alkit.experiments.mechanism.parts_table` rows at the
    paper's schedule) against the number of classes, each with its 95 % interval."""
    ax = ax if ax is not None else plt.gca()
    sub = parts[(parts["strategy"] == strategy) & (parts["schedule"] == "paper")]
    names = [p for p in PART_STYLES if p in set(sub["part"])]
    for i, part in enumerate(names):
        rows = sub[sub["part"] == part].sort_values("num_classes")
        x = rows["num_classes"].to_numpy() * (1.0 + 0.03 * (i - (len(names) - 1) / 2))   # no overlaps
        ax.errorbar(x, rows["mean"], yerr=[rows["mean"] - rows["lo"], rows["hi"] - rows["mean"]], capsize=2,
                    elinewidth=0.8, lw=1.3, ms=4, **PART_STYLES[part])
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    _log_x_at(ax, sub["num_classes"])
    ax.set_xlabel("number of classes K (Tiny-ImageNet subsets)")
    ax.set_ylabel("Δ area under top-1 curve")
    ax.set_title(title or f"S = {strategy}", fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def plot_parts_bars(parts: pd.DataFrame, ax=None, title: str | None = None):
    """Horizontal bars of the parts of each strategy's gain in one cell (:func:`alkit.experiments.mechanism.parts_table`
    rows), coloured as in :func:`plot_parts_against_classes`, with their 95 % intervals."""
    ax = ax if ax is not None else plt.gca()
    rows = parts[parts["part"].isin(PART_STYLES)]
    order = {p: i for i, p in enumerate(PART_STYLES)}
    rows = rows.sort_values(["strategy", "part"], key=lambda c: c.map(order) if c.name == "part" else c)
    y = np.arange(len(rows))
    ax.barh(y, rows["mean"], color=[PART_STYLES[p]["color"] for p in rows["part"]], alpha=0.85,
            xerr=[(rows["mean"] - rows["lo"]).clip(lower=0), (rows["hi"] - rows["mean"]).clip(lower=0)],
            error_kw={"lw": 1, "capsize": 2})
    ax.set_yticks(y, [f"{s}: {p.replace('_', ' ')}" for s, p in zip(rows["strategy"], rows["part"])], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=1)
    ax.set_xlabel("Δ area under top-1 curve")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return ax


def plot_against_labels(table: pd.DataFrame, ax=None, title: str | None = None):
    """Δ AUC vs random of each strategy against the labels per class at the end of the run (one
    point per schedule; :func:`alkit.experiments.mechanism.mechanism_table` rows of one K), with intervals."""
    ax = ax if ax is not None else plt.gca()
    sub = table[table["strategy"] != "random"]
    colors = strategy_colors([s.removesuffix("_balanced") for s in sub["strategy"].unique()])
    for strategy in in_registry_order(sub["strategy"].unique()):
        rows = sub[sub["strategy"] == strategy].sort_values("labels_per_class_final")
        style = dict(color=colors[strategy.removesuffix("_balanced")], marker="o", ms=4, lw=1.3,   # S_balanced: S's hue
                     ls="--" if strategy.endswith("_balanced") else "-", label=strategy)
        ax.errorbar(rows["labels_per_class_final"], rows["auc_diff"], capsize=2, elinewidth=0.8,
                    yerr=[rows["auc_diff"] - rows["auc_diff_lo"], rows["auc_diff_hi"] - rows["auc_diff"]], **style)
    ax.axhline(0.0, color="grey", lw=0.8, ls=":")
    _log_x_at(ax, sub["labels_per_class_final"])
    ax.set_xlabel("labels per class at the end (half, paper, double schedule)")
    ax.set_ylabel("Δ area under top-1 curve vs random")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return ax


def by_dataset(frame: pd.DataFrame, draw: Callable, datasets: Sequence[str], titles: dict[str, str] | None = None,
               width: float = 6.0, height: float = 4.4, legend: bool = True, suptitle: str | None = None,
               column: str = "dataset"):
    """One panel per data set, side by side: ``draw(rows_of_that_dataset, ax, title)``; ``column``
    names another column whose values are the panels (``"regime"``: linear beside fine-tuned)."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(width * len(datasets), height), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        sub = frame[frame[column] == ds]
        if sub.empty:
            ax.text(0.5, 0.5, f"no results for {ds}", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        draw(sub, ax, (titles or {}).get(ds, ds))
    if legend:
        handles = {}   # one entry per strategy: a panel's "[5 seeds]" note is in the caption's seed counts
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab.split(" [")[0], h)
        fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8,
                   frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def stamp(fig, text: str, color: str = "firebrick") -> None:
    """A line of small print under the figure (what the data are: synthetic, caveats)."""
    fig.text(0.01, -0.02, text, fontsize=8, color=color, ha="left", va="top", wrap=True)


def save_figure(fig, stem: str | Path, formats=("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically (PDF without a timestamp, so re-renders of
    the same results give the same bytes)."""
    paths = []
    for fmt in formats:
        path = Path(f"{stem}.{fmt}")
        meta = {"CreationDate": None} if fmt == "pdf" else {"Software": None} if fmt == "png" else None
        atomic_write(path, lambda tmp, fmt=fmt, meta=meta: fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight",
                                                                       metadata=meta))
        paths.append(path)
    return paths
