"""The pool state that every query strategy reads.

A strategy sees frozen features, which points are labelled, which are held out for
validation, the labels of the labelled points only, and the current model (a linear head
``W, b`` and/or precomputed logits).  True labels of unlabelled points are only attached for
strategies registered as *oracle* baselines (see :mod:`alkit.strategies`).

Features may be float16 or float32 and may be a read-only memory map: strategies read them
in chunks (:meth:`PoolState.iter_chunks`) so the extra memory they use does not grow with N.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

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


@dataclass(frozen=True)
class PoolState:
    """Everything a query strategy may read.

    Attributes
    ----------
    features: (N, D) float16/32 array or memory map of frozen features.
    labeled: (N,) bool, True for points already labelled.
    held_out: (N,) bool, True for points reserved for validation (never queried).
    labels: (N,) int64, the class of each labelled point and -1 elsewhere.
    num_classes: C.
    weight, bias: the current linear head, (C, D) and (C,), acting on raw ``features``; or None.
    logits: optional precomputed (N, C) model outputs (e.g. from a fine-tuned network).  When
        None they are computed on the fly, chunk by chunk, from ``weight`` and ``bias``.
    oracle_labels: true labels of *every* point.  Only set for oracle baselines.
    memo: a dict that lives for one active-learning run (the loop passes the same one every
        round), where a strategy may keep work that later rounds of that run reuse when their
        inputs are unchanged — e.g. TypiClust's clustering.  None (the default, a one-off
        selection) means nothing is kept.  Its contents never carry labels of unlabelled points.
    """

    features: np.ndarray
    labeled: np.ndarray
    held_out: np.ndarray
    labels: np.ndarray
    num_classes: int
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    logits: np.ndarray | None = None
    oracle_labels: np.ndarray | None = field(default=None, repr=False)
    memo: dict | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.features.shape[0] if getattr(self.features, "ndim", 0) == 2 else None
        check_features(self.features, "features", check_finite=False)
        for name in ("labeled", "held_out"):
            mask = getattr(self, name)
            if mask.shape != (n,) or mask.dtype != bool:
                raise ValueError(f"{name} must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},) to match features, got {self.labels.shape}")
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        check_labels(self.labels, self.num_classes, "labels")
        if np.any(self.labels[self.labeled] < 0):
            raise ValueError("labels must give a class in [0, C) for every labelled point (found -1)")
        if np.any(self.labels[~self.labeled] != -1):
            raise ValueError("labels must be -1 for unlabelled points: strategies may not see their classes")
        if (self.weight is None) != (self.bias is None):
            raise ValueError("weight and bias of the linear head must be given together")
        if self.weight is not None:
            d = self.features.shape[1]
            if self.weight.shape != (self.num_classes, d) or self.bias.shape != (self.num_classes,):
                raise ValueError(
                    f"head shapes must be weight ({self.num_classes}, {d}) and bias ({self.num_classes},), "
                    f"got {self.weight.shape} and {self.bias.shape}"
                )
        if self.logits is not None and self.logits.shape != (n, self.num_classes):
            raise ValueError(f"logits must have shape ({n}, {self.num_classes}), got {self.logits.shape}")
        if self.memo is not None and not isinstance(self.memo, dict):
            raise ValueError(f"memo must be a dict (one per run) or None, got {type(self.memo).__name__}")
        if self.oracle_labels is not None:
            if self.oracle_labels.shape != (n,):
                raise ValueError(f"oracle_labels must have shape ({n},), got {self.oracle_labels.shape}")
            check_labels(self.oracle_labels, self.num_classes, "oracle_labels", allow_unlabelled=False)

    # ------------------------------------------------------------------ views
    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def eligible(self) -> np.ndarray:
        """Bool mask of points a strategy may query: not labelled, not held out."""
        return ~(self.labeled | self.held_out)

    def eligible_indices(self) -> np.ndarray:
        return np.flatnonzero(self.eligible).astype(np.int64)

    def labeled_indices(self) -> np.ndarray:
        return np.flatnonzero(self.labeled).astype(np.int64)

    @property
    def has_model(self) -> bool:
        return self.logits is not None or self.weight is not None

    def require_model(self, strategy: str) -> None:
        if not self.has_model:
            raise ValueError(
                f"strategy {strategy!r} needs model outputs: give the pool a linear head (weight, bias) or logits"
            )

    def require_head(self, strategy: str) -> None:
        if self.weight is None:
            raise ValueError(
                f"strategy {strategy!r} measures distances in feature space and needs the linear head "
                "(weight, bias); precomputed logits alone are not enough"
            )

    # ------------------------------------------------------------ streaming
    def features_of(self, indices: np.ndarray) -> np.ndarray:
        """Float32 copy of the features of ``indices`` (sorted access is fastest on memmaps)."""
        return np.asarray(self.features[indices], dtype=np.float32)

    def logits_of(self, indices: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Float32 logits of ``indices``; ``features`` may pass their already-loaded features."""
        if self.logits is not None:
            return np.asarray(self.logits[indices], dtype=np.float32)
        if self.weight is None:
            raise ValueError("the pool has neither logits nor a linear head (weight, bias)")
        if features is None:
            features = self.features_of(indices)
        return linear_logits(features, self.weight, self.bias)

    def iter_chunks(
        self, indices: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS, with_logits: bool = True
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Yield ``(indices_chunk, features_chunk float32, logits_chunk or None)`` over ``indices``."""
        for start in range(0, len(indices), chunk_rows):
            idx = indices[start:start + chunk_rows]
            feats = self.features_of(idx)
            yield idx, feats, (self.logits_of(idx, feats) if with_logits else None)

    def with_labels(self, indices: np.ndarray, classes: np.ndarray) -> "PoolState":
        """A new state with ``indices`` labelled as ``classes`` (the model is kept)."""
        labeled = self.labeled.copy()
        labels = self.labels.copy()
        labeled[indices] = True
        labels[indices] = classes
        return replace(self, labeled=labeled, labels=labels)


def linear_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """ℓ = z Wᵀ + b in float32."""
    return np.asarray(features, dtype=np.float32) @ np.asarray(weight, dtype=np.float32).T + np.asarray(
        bias, dtype=np.float32
    )


def make_pool(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None = None,
    *,
    held_out: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    logits: np.ndarray | None = None,
) -> PoolState:
    """Build a :class:`PoolState` from features and a label vector with -1 for unlabelled points.

    This is the practitioner's entry point: bring embeddings, the labels you have, optionally
    your model's head; then ``select(pool, "margin", budget, seed)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != np.shape(features)[0]:
        raise ValueError(
            f"labels must be 1-D with one entry per feature row ({np.shape(features)[0]}), got shape {labels.shape}"
        )
    if num_classes is None:
        if not np.any(labels >= 0):
            raise ValueError("num_classes is needed when no point is labelled yet")
        num_classes = int(labels.max()) + 1
    check_labels(labels, num_classes, "labels")
    labels = labels.astype(np.int64)
    n = labels.shape[0]
    return PoolState(
        features=features,
        labeled=labels >= 0,
        held_out=np.zeros(n, bool) if held_out is None else np.asarray(held_out, bool),
        labels=labels,
        num_classes=int(num_classes),
        weight=None if weight is None else np.asarray(weight, np.float32),
        bias=None if bias is None else np.asarray(bias, np.float32),
        logits=logits,
    )
