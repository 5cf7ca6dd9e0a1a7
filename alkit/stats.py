"""Small statistics over seeds: means with t-intervals, paired differences, areas under curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from alkit.checks import ParameterError


def mean_interval(values: np.ndarray, level: float = 0.95) -> dict:
    """Mean and two-sided Student-t interval; a single value gives a zero-width interval."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "n": 0}
    mean = values.mean()
    if n == 1:
        return {"mean": mean, "low": mean, "high": mean, "n": 1}
    half = sps.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def paired_differences(frame: pd.DataFrame, metric: str, baseline: str = "random", by=("n_labeled",)) -> pd.DataFrame:
    """Per strategy and ``by`` group: mean (and interval) over seeds of metric − baseline's metric
    for the same seed — paired, so the shared initial pool's luck cancels."""
    keys = ["seed", *by]
    base = frame[frame["strategy"] == baseline].set_index(keys)[metric]
    if base.empty:
        raise ParameterError(f"baseline strategy {baseline!r} has no rows: include it in the sweep", param="baseline")
    rows = []
    for strategy, group in frame[frame["strategy"] != baseline].groupby("strategy"):
        g = group.set_index(keys)[metric]
        diff = (g - base.reindex(g.index)).dropna().reset_index()
        for key, sub in diff.groupby(list(by)):
            key = key if isinstance(key, tuple) else (key,)
            d = sub[metric].to_numpy()
            rows.append({"strategy": strategy, **dict(zip(by, key)), **mean_interval(d),
                         "wins": int((d > 0).sum()), "losses": int((d < 0).sum())})
    return pd.DataFrame(rows)


def area_under_curve(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid area under y(x), divided by the x range (so it is an average metric)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if x.size < 2 or x[-1] == x[0]:
        return float(y.mean()) if y.size else float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def difference_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Mean of ``a`` minus mean of ``b`` for two independent samples, with its Welch t-interval
    (unequal variances; Welch–Satterthwaite degrees of freedom).  NaNs are dropped; fewer than two
    values on a side give NaN bounds."""
    a, b = (np.asarray(v, np.float64) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return {"mean": np.nan, "low": np.nan, "high": np.nan, "n": (a.size, b.size)}
    mean = a.mean() - b.mean()
    if a.size < 2 or b.size < 2:
        return {"mean": mean, "low": np.nan, "high": np.nan, "n": (a.size, b.size)}
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = np.sqrt(va + vb)
    if se == 0:
        return {"mean": mean, "low": mean, "high": mean, "n": (a.size, b.size)}
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = sps.t.ppf(0.5 + level / 2, dof) * se
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": (a.size, b.size)}
