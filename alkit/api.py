"""The practitioner's entry point: your embeddings, your labels and your model as a pool.

``make_pool`` turns arrays into the :class:`alkit.pool.PoolState` that every strategy reads,
fitting alkit's linear probe on the labelled points when asked; then
``alkit.select(pool, "margin", budget, seed)`` names the next batch to label.  It sits above the
pool and the probe so that the pool itself imports no trainer.
"""
from __future__ import annotations

import warnings

import numpy as np

from alkit.checks import ParameterError, check_features, check_labels
from alkit.pool import PoolState, probabilities_to_logits
from alkit.probe import ProbeConfig, train_linear_probe


def make_pool(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None = None,
    *,
    held_out: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    logits: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
    fit_head: bool = False,
    val_features: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    probe=None,
    images=None,
) -> PoolState:
    """Build a :class:`PoolState` from features and a label vector with -1 for unlabelled points.

    This is the practitioner's entry point: bring embeddings, the labels you have and, for the
    strategies that need a model, one of: ``fit_head=True`` (alkit's default probe trained on the
    labelled points, its strength chosen on ``val_features``/``val_labels`` when given, else on a
    fifth of the labels; ``probe`` a :class:`alkit.probe.ProbeConfig`), your own linear head
    (``weight`` C × D, ``bias`` C), or any model's outputs for every point (``logits`` N × C, or
    ``probabilities`` N × C, used as log-probabilities). Then ``select(pool, "margin", budget, seed)``.

    ``images``: a callable returning the image tensors of pool rows (:class:`alkit.data.images.PoolImages`),
    for strategies that train on pixels (VAAL).

    ``num_classes`` should be given: inferred from the largest label it misses classes that no
    point has yet (a warning says so).  Features, head and model outputs must be finite.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != np.shape(features)[0]:
        raise ParameterError(
            f"labels must be 1-D with one entry per feature row ({np.shape(features)[0]}), got shape {labels.shape}",
            param="labels",
        )
    if num_classes is None:
        if weight is not None:
            num_classes = int(np.shape(weight)[0])
        elif logits is not None or probabilities is not None:
            num_classes = int(np.shape(logits if logits is not None else probabilities)[1])
        elif not np.any(labels >= 0):
            raise ParameterError("num_classes is needed when no point is labelled yet: pass num_classes=C",
                                 param="num_classes")
        else:
            num_classes = int(labels.max()) + 1
            warnings.warn(f"num_classes inferred as the largest label + 1 = {num_classes}; classes no point has "
                          "yet are missed: pass num_classes=C", UserWarning, stacklevel=2)
    check_labels(labels, num_classes, "labels")
    check_features(features, "features")   # one pass: NaN/inf rows would silently win some strategies
    given = [name for name, v in (("weight/bias", weight), ("logits", logits), ("probabilities", probabilities))
             if v is not None] + (["fit_head"] if fit_head else [])
    if len(given) > 1:
        raise ParameterError(f"give one model for the pool, got {', '.join(given)}", param="fit_head")
    if probabilities is not None:
        logits = probabilities_to_logits(probabilities, "probabilities")
    elif logits is not None:
        logits = np.asarray(logits)
        check_features(logits, "logits")
    labels = labels.astype(np.int64)
    if fit_head:

        labelled = np.flatnonzero(labels >= 0)
        if labelled.size == 0:
            raise ParameterError("fit_head=True needs labelled points (labels ≥ 0) to train the head on",
                                 param="fit_head")
        head = train_linear_probe(np.asarray(features[labelled], np.float32), labels[labelled], val_features,
                                  val_labels, int(num_classes), probe or ProbeConfig())
        weight, bias = head.weight, head.bias
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
        images=images,
    )
