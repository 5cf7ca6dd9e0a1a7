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
        raise ValueError(f"{name} must be a numpy array of shape (N, D), got {type(features).__name__}")
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {features.shape}")
    if features.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows): the pool needs at least one point")
    if features.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns: each point needs at least one feature")
    if not np.issubdtype(features.dtype, np.floating):
        raise ValueError(f"{name} must be float16/float32/float64, got dtype {features.dtype}; cast it first")
    if check_finite:
        for start in range(0, features.shape[0], DEFAULT_CHUNK_ROWS):
            block = np.asarray(features[start:start + DEFAULT_CHUNK_ROWS])
            if not np.isfinite(block).all():
                bad = start + int(np.argwhere(~np.isfinite(block))[0, 0])
                raise ValueError(f"{name} contains NaN or inf (first at row {bad}); clean or drop those rows")


def check_labels(labels: np.ndarray, num_classes: int, name: str = "labels", allow_unlabelled: bool = True) -> None:
    """Raise a ValueError unless labels are integers in [0, C) (or -1 for 'unlabelled')."""
    if not np.issubdtype(np.asarray(labels).dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {np.asarray(labels).dtype}")
    low = -1 if allow_unlabelled else 0
    labels = np.asarray(labels)
    known = labels[labels != -1] if allow_unlabelled else labels
    if labels.size and (labels.min() < low or (known.size and known.max() >= num_classes)):
        raise ValueError(
            f"{name} must lie in [0, {num_classes})" + (" or be -1 for unlabelled" if allow_unlabelled else "")
            + f"; found values in [{labels.min()}, {labels.max()}] (pass the right num_classes or fix the labels)"
        )
