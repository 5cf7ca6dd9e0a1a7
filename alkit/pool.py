"""The pool state that every query strategy reads.

A strategy sees frozen features, which points are labelled, which are held out for
validation, the labels of the labelled points only, and the current model (a linear head
``W, b`` and/or precomputed logits).  True labels of unlabelled points are only attached for
strategies registered as *oracle* baselines (see :mod:`alkit.strategies`).

Features may be float16 or float32 and may be a read-only memory map: strategies read them
in chunks (:meth:`PoolState.iter_chunks`) so the extra memory they use does not grow with N.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import numpy as np

from alkit.checks import DEFAULT_CHUNK_ROWS, ParameterError, check_features, check_labels
from alkit.rows import gather_rows

#: Key under which a ``shared`` dict records the shape and dtype of the features it serves.
_SHARED_FEATURES_KEY = ("alkit.pool", "features")
#: Version of :meth:`StrategyCache.state_dict`'s layout; :meth:`~StrategyCache.load_state_dict` refuses others.
CACHE_STATE_FORMAT = 1


@dataclass(frozen=True, eq=False)
class StrategyCache:
    """Work that strategies (and the loop) reuse between calls on one feature matrix, in the open.

    The loop makes one per active-learning run and passes it in every round's :class:`PoolState`
    (``cache=``); a one-off :func:`alkit.strategies.select` without it computes everything afresh,
    with the same picks.  Two dicts, by lifetime:

    run: what one run reuses across its rounds — coreset's carried distance bounds, TypiClust's
        clustering, the check that the features are finite.  A fresh dict per run.
    shared: what depends on the data alone (the features, and for the loop's round-0 heads the
        labels that come with them) and may serve every run on it — ProbCover's δ and δ-graph, the
        round-0 heads.  A caller running many runs on one data set (a sweep) passes the same dict
        to each; one dict per feature matrix (it refuses features of another shape or dtype).

    Keys are tuples that start with their owner's name, e.g. ``("typiclust", "kmeans", K, digest of
    the clustered row ids)``; never object ids or hashes of the feature bytes: the cache is bound
    to ``features`` and a :class:`PoolState` with other features refuses it.  Nothing stored here
    may carry labels of unlabelled points.  ``run`` holds derived state only (ids, distances,
    cluster ids: never the features), which :meth:`state_dict` checks when the loop checkpoints it
    and :meth:`load_state_dict` restores on resume.
    """

    features: np.ndarray
    run: dict = field(default_factory=dict)
    shared: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("run", "shared"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a dict, got {type(getattr(self, name)).__name__}")
        signature = self._signature()
        served = self.shared.setdefault(_SHARED_FEATURES_KEY, signature)
        if served != signature:
            raise ValueError(f"shared holds work for features of shape {served[0]} ({served[1]}), not "
                             f"{signature[0]} ({signature[1]}): pass one shared dict per feature matrix")

    def __repr__(self) -> str:
        return (f"StrategyCache(features {tuple(np.shape(self.features))}, run keys {len(self.run)}, "
                f"shared keys {len(self.shared) - 1})")

    def _signature(self) -> tuple[tuple[int, ...], str]:
        return tuple(np.shape(self.features)), str(getattr(self.features, "dtype", ""))

    def state_dict(self) -> dict:
        """What a run's checkpoint keeps of this cache: its ``run`` dict, as derived state only.

        Keys of the returned dict:

        ``format``: :data:`CACHE_STATE_FORMAT`.
        ``features``: (shape, dtype) of the features the work was done on.
        ``run``: the ``run`` dict — coreset's carry (per candidate: its id, distance bound, centres
            met, nearest centre and runner-up; the centres' ids, the centring mean and a token of the
            features), TypiClust's cluster ids, the finite-features check.

        ``shared`` is left out: it outlives the run and is rebuilt from the data.  Every value must be
        a number, string, bool, None, a numeric array or tensor (moved to the CPU) or a dict / list /
        tuple of those, and no array may be or view the features: a checkpoint holds what was derived
        from the pool, never a copy of it (a ValueError names the offending key).  Containers are
        copied, arrays are not: pickle the result before the next round changes them.
        """
        run = {}
        for key, value in self.run.items():
            if not (isinstance(key, tuple) and key and isinstance(key[0], str)):
                raise ValueError(f"StrategyCache.run key {key!r} must be a tuple starting with its owner's name")
            run[key] = _derived(value, self.features, repr(key))
        return {"format": CACHE_STATE_FORMAT, "features": self._signature(), "run": run}

    def load_state_dict(self, state: dict) -> None:
        """Replace the ``run`` dict by the one :meth:`state_dict` saved, on features of the same shape and
        dtype (a ValueError otherwise).  Work made on other data of that shape is kept out by its
        owner (coreset checks its features token) and, in the loop, by the checkpoint's fingerprint."""
        if not isinstance(state, dict) or state.get("format") != CACHE_STATE_FORMAT:
            raise ValueError(f"not a StrategyCache state of format {CACHE_STATE_FORMAT}")
        shape, dtype = state["features"]
        own = self._signature()
        if (tuple(shape), str(dtype)) != own:
            raise ValueError(f"the state was saved for features of shape {tuple(shape)} ({dtype}), not {own[0]} "
                             f"({own[1]})")
        run = {key: _derived(value, self.features, repr(key)) for key, value in state["run"].items()}
        self.run.clear()
        self.run.update(run)


def _derived(value, features, where: str):
    """``value`` with its containers copied, after checking that it is plain derived state (see
    :meth:`StrategyCache.state_dict`): no object arrays, nothing that is or views ``features``."""
    if value is None or isinstance(value, (bool, int, float, str, bytes, np.generic)):
        return value
    if isinstance(value, dict):
        return {k: _derived(v, features, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_derived(v, features, f"{where}[{i}]") for i, v in enumerate(value))
    torch = sys.modules.get("torch")   # a tensor exists only once torch is imported
    if torch is not None and isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        storage = value.untyped_storage()
        low, high = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
    elif isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise ValueError(f"StrategyCache.run{where}: an object array is not plain derived state")
        low, high = np.lib.array_utils.byte_bounds(value)
    else:
        raise ValueError(f"StrategyCache.run{where}: a {type(value).__name__} is not plain derived state (numbers, "
                         "strings, arrays, tensors and dicts / lists / tuples of them)")
    if isinstance(features, np.ndarray) and features.size and high > low:
        f_low, f_high = np.lib.array_utils.byte_bounds(features)
        if low < f_high and f_low < high:
            raise ValueError(f"StrategyCache.run{where} is or views the feature matrix: keep what was derived from "
                             "it (ids, distances, a token), never the features themselves")
    return value


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
    cache: the :class:`StrategyCache` of the run (the loop passes the same one every round),
        bound to ``features``, where strategies keep work that later rounds or runs reuse when
        their inputs are unchanged — e.g. TypiClust's clustering.  None (the default, a one-off
        selection) means nothing is kept.
    images: for strategies that train on pixels (VAAL), a callable ``images(rows)`` returning the
        (len(rows), 3, H, W) float image tensor of those pool rows (e.g.
        :class:`alkit.data.images.PoolImages`); the loops set it when they have the images.  None:
        feature strategies only.
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
    cache: StrategyCache | None = field(default=None, repr=False, compare=False)
    images: Callable[[np.ndarray], object] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.features.shape[0] if getattr(self.features, "ndim", 0) == 2 else None
        check_features(self.features, "features", check_finite=False)
        for name in ("labeled", "held_out"):
            mask = getattr(self, name)
            if mask.shape != (n,) or mask.dtype != bool:
                raise ParameterError(f"{name} must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}",
                                     param=name)
        if self.labels.shape != (n,):
            raise ParameterError(f"labels must have shape ({n},) to match features, got {self.labels.shape}",
                                 param="labels")
        if not isinstance(self.num_classes, (int, np.integer)) or self.num_classes < 1:
            raise ParameterError(f"num_classes must be a positive integer, got {self.num_classes!r}",
                                 param="num_classes")
        check_labels(self.labels, self.num_classes, "labels")
        if np.any(self.labels[self.labeled] < 0):
            raise ParameterError("labels must give a class in [0, C) for every labelled point (found -1)",
                                 param="labels")
        if np.any(self.labels[~self.labeled] != -1):
            raise ParameterError("labels must be -1 for unlabelled points: strategies may not see their classes",
                                 param="labels")
        if (self.weight is None) != (self.bias is None):
            raise ParameterError("weight and bias of the linear head must be given together", param="weight")
        if self.weight is not None:
            d = self.features.shape[1]
            if self.weight.shape != (self.num_classes, d) or self.bias.shape != (self.num_classes,):
                raise ParameterError(
                    f"head shapes must be weight ({self.num_classes}, {d}) and bias ({self.num_classes},), "
                    f"got {self.weight.shape} and {self.bias.shape}",
                    param="weight",
                )
        if self.weight is not None and not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise ParameterError("the linear head (weight, bias) contains NaN or inf; retrain it or drop it",
                                 param="weight")
        if self.logits is not None and self.logits.shape != (n, self.num_classes):
            raise ParameterError(f"logits must have shape ({n}, {self.num_classes}), got {self.logits.shape}",
                                 param="logits")
        if self.cache is not None:
            if not isinstance(self.cache, StrategyCache):
                raise ParameterError(f"cache must be an alkit.pool.StrategyCache or None, got "
                                     f"{type(self.cache).__name__}", param="cache")
            if self.cache.features is not self.features:
                raise ParameterError("cache is bound to another feature matrix: make one StrategyCache(features) "
                                     "per feature matrix (and per run)", param="cache")
        if self.images is not None:
            if not callable(self.images):
                raise ParameterError(f"images must be a callable rows -> image tensor (alkit.data.images.PoolImages), "
                                     f"got {type(self.images).__name__}", param="images")
            if hasattr(self.images, "__len__") and len(self.images) != n:
                raise ParameterError(f"images holds {len(self.images)} images but the pool has {n} rows: pass the "
                                     "images of the pool's rows, in the same order", param="images")
        if self.oracle_labels is not None:
            if self.oracle_labels.shape != (n,):
                raise ParameterError(f"oracle_labels must have shape ({n},), got {self.oracle_labels.shape}",
                                     param="oracle_labels")
            check_labels(self.oracle_labels, self.num_classes, "oracle_labels", allow_unlabelled=False)

    def __repr__(self) -> str:
        model = "linear head" if self.weight is not None else "logits" if self.logits is not None else "no model"
        return (f"PoolState(N={self.size:,}, D={self.dim}, C={self.num_classes}, labelled={int(self.labeled.sum()):,}, "
                f"held_out={int(self.held_out.sum()):,}, eligible={int(self.eligible.sum()):,}, {model}, "
                f"features {self.features.dtype})")

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
            raise ParameterError(
                f"strategy {strategy!r} needs model outputs: give the pool a linear head (weight, bias) or logits",
                param="strategy",
            )

    def require_head(self, strategy: str) -> None:
        if self.weight is None:
            raise ParameterError(
                f"strategy {strategy!r} measures distances in feature space and needs the linear head "
                "(weight, bias); precomputed logits alone are not enough",
                param="weight",
            )

    def require_images(self, strategy: str) -> None:
        if self.images is None:
            raise ParameterError(
                f"strategy {strategy!r} trains on the pool's images and needs images= (PoolState.images: a "
                "callable returning the image tensors of pool rows, e.g. alkit.data.images.PoolImages): run it in "
                "the fine-tuning loop (`python -m alkit finetune`, alkit.finetune.FineTuningTrainer) "
                "or pass images= to run_active_learning / make_pool",
                param="images",
            )

    # ------------------------------------------------------------ streaming
    def features_of(self, indices: np.ndarray) -> np.ndarray:
        """Float32 copy of the features of ``indices`` (:func:`alkit.rows.gather_rows`)."""
        return gather_rows(self.features, indices)

    def logits_of(self, indices: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """Float32 logits of ``indices``; ``features`` may pass their already-loaded features."""
        if self.logits is not None:
            return np.asarray(self.logits[indices], dtype=np.float32)
        if self.weight is None:
            raise ParameterError("the pool has neither logits nor a linear head (weight, bias)", param="weight")
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


def probabilities_to_logits(probabilities: np.ndarray, name: str = "probabilities") -> np.ndarray:
    """log p as float32 logits (softmax(log p) = p), after checking that p is a distribution per row."""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 2:
        raise ParameterError(f"{name} must be 2-D (N, C), got shape {p.shape}", param=name)
    if not np.isfinite(p).all() or (p < 0).any():
        raise ParameterError(f"{name} must be finite and non-negative", param=name)
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(sums - 1.0)))
        raise ParameterError(f"{name} rows must sum to 1 (row {bad} sums to {sums[bad]:.4f}); pass logits= for scores",
                             param=name)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(p), np.log(np.finfo(np.float32).tiny)).astype(np.float32)
