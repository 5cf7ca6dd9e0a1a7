"""Checks of the arrays every entry point receives: finite float features, labels in range.

At the bottom of the package (numpy only), so that the pool, the probe and the loops share one
set of messages.
"""
from __future__ import annotations

import numpy as np

#: Rows per chunk when streaming over the pool.  At D = 2048 (float32) and C = 1000 a chunk
#: of 16 384 rows costs about 128 MB of features plus 64 MB of logits: bounded whatever N is.
DEFAULT_CHUNK_ROWS = 16_384


def check_features(features: np.ndarray, name: str = "features", check_finite: bool = True) -> None:
    """Raise a ValueError naming ``name`` unless it is a finite 2-D float array with rows."""
    if not isinstance(features, np.ndarray):
        raise ParameterError(f"{name} must be a numpy array of shape (N, D), got {type(features).__name__}", param=name)
    if features.ndim != 2:
        raise ParameterError(f"{name} must be 2-D (N, D), got shape {features.shape}", param=name)
    if features.shape[0] == 0:
        raise ParameterError(f"{name} is empty (0 rows): the pool needs at least one point", param=name)
    if features.shape[1] == 0:
        raise ParameterError(f"{name} has 0 columns: each point needs at least one feature", param=name)
    if features.dtype not in (np.float16, np.float32, np.float64):   # float128 too: torch has no such type
        raise ParameterError(f"{name} must be float16/float32/float64, got dtype {features.dtype}; cast it first",
                             param=name)
    if check_finite:
        for start in range(0, features.shape[0], DEFAULT_CHUNK_ROWS):
            block = np.asarray(features[start:start + DEFAULT_CHUNK_ROWS])
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0, 0])
                raise ParameterError(f"{name} contains NaN or inf (first at row {bad}); clean or drop those rows",
                                     param=name)


def check_finite_logits(logits, rows: np.ndarray, name: str = "features") -> None:
    """Raise the ValueError of :func:`check_features` for ``name`` unless a chunk of logits (numpy
    or torch; one row per id of ``rows``) is finite: a non-finite feature of a scored row (or a
    non-finite given logit, ``name="logits"``) shows there, so a strategy that scores its rows in
    one pass checks them on the way."""
    finite = logits.isfinite().all(dim=1).numpy() if hasattr(logits, "isfinite") else np.isfinite(logits).all(axis=1)
    if not finite.all():
        bad = int(rows[int(np.argmin(finite))])
        raise ParameterError(f"{name} contains NaN or inf (first at row {bad}); clean or drop those rows", param=name)


#: More classes than this is a mistake (a label id of 10⁹, a wrong --num-classes), not a data set:
#: ImageNet-21k has 21,841.  Refused before a (C × D) head or a C-long count array is allocated.
MAX_CLASSES = 1_000_000


def check_labels(labels: np.ndarray, num_classes: int, name: str = "labels", allow_unlabelled: bool = True) -> None:
    """Raise a ValueError unless labels are integers in [0, C) (or -1 for 'unlabelled'), and C is at
    most :data:`MAX_CLASSES`."""
    if num_classes > MAX_CLASSES:
        raise ParameterError(f"num_classes must be at most {MAX_CLASSES:,}, got {num_classes:,} (a head of "
                             f"{num_classes:,} classes × 1000 features alone would take "
                             f"{num_classes * 4e3 / 2**30:,.0f} GiB); check the labels in {name} and the class count",
                             param="num_classes")
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
        raise ParameterError(f"{name} must hold integer class ids, got dtype {np.asarray(labels).dtype}", param=name)
    low = -1 if allow_unlabelled else 0
    labels = np.asarray(labels)
    known = labels[labels != -1] if allow_unlabelled else labels
    if labels.size and (labels.min() < low or (known.size and known.max() >= num_classes)):
        raise ParameterError(
            f"{name} must lie in [0, {num_classes})" + (" or be -1 for unlabelled" if allow_unlabelled else "")
            + f"; found values in [{labels.min()}, {labels.max()}] (pass the right num_classes or fix the labels)",
            param=name,
        )


# ---------------------------------------------------------------------------------------------
# Scalar parameters: one check for the API, the command line and the notebooks
# ---------------------------------------------------------------------------------------------

class ParameterError(ValueError):
    """A parameter with a value outside what it allows: the message names both and the range, and
    ``param`` holds the parameter's name as data (a command line maps it to its flag)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class MissingPathError(FileNotFoundError):
    """A path given as a parameter that does not exist or lacks what it should hold; ``param`` holds
    the parameter's name, as :class:`ParameterError`'s does."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _range_text(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '≥'} {low}"
    if high is not None:
        return f"{'<' if high_open else '≤'} {high}"
    return "any value"


def check_int(value, name: str, *, low: int | None = None, high: int | None = None, none: bool = False) -> int | None:
    """``value`` as an int when it is an integer (not a bool, not a float) within [low, high];
    None when ``none`` allows it; else :class:`ParameterError` naming ``name``."""
    if value is None and none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ParameterError(f"{name} must be an integer {_range_text(low, high)}"
                             + (" or None" if none else "") + f", got {value!r} ({type(value).__name__})", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ParameterError(f"{name} must be an integer {_range_text(low, high)}, got {value}", param=name)
    return int(value)


def check_float(value, name: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
                high_open: bool = False, none: bool = False) -> float | None:
    """``value`` as a finite float within its range (ints accepted, bools not); None when ``none``
    allows it; else :class:`ParameterError` naming ``name``."""
    if value is None and none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a number {_range_text(low, high, low_open, high_open)}"
                             + (" or None" if none else "") + f", got {value!r} ({type(value).__name__})", param=name)
    value = float(value)
    bad = (not np.isfinite(value) or (low is not None and (value <= low if low_open else value < low))
           or (high is not None and (value >= high if high_open else value > high)))
    if bad:
        raise ParameterError(f"{name} must be a finite number {_range_text(low, high, low_open, high_open)}, "
                             f"got {value}", param=name)
    return value


def check_bool(value, name: str) -> bool:
    """``value`` when it is a bool (True/False, not 0/1 or 'no'); else :class:`ParameterError`."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r} ({type(value).__name__})", param=name)
    return bool(value)


def check_choice(value, name: str, choices) -> str:
    """``value`` when it is one of ``choices``; else :class:`ParameterError` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}", param=name)
    return value
