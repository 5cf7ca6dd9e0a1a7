"""The active-learning loop: initial pool plus R rounds for one (features, strategy, seed).

Everything random comes from one seed through named streams, so that all strategies run with
the same seed share the validation split, the initial pool and the round-0 model (paired
comparisons), and a run repeated with the same inputs gives identical rows and picks.
"""
from __future__ import annotations

import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit.checks import ParameterError, check_bool, check_int
from alkit.io import array_fingerprint, atomic_write
from alkit.metrics import classification_metrics, imbalance_metrics
from alkit.pool import PoolState, StrategyCache, check_features, check_labels
from alkit.probe import PROBE_PRESETS, LinearHead, ProbeConfig, train_linear_probe
from alkit.strategies.registry import Strategy, StrategyInfo, check_budget, resolve_strategy, select

#: Layout of a round checkpoint (2: the run's cache as :meth:`alkit.pool.StrategyCache.state_dict`);
#: a checkpoint of another layout is ignored and its run starts over.
CHECKPOINT_FORMAT = 2

#: Named random streams: each is ``default_rng([seed, STREAM, round])``.
STREAMS = {"validation": 0, "initial": 1, "selection": 2, "training": 3}


def stream(seed: int, name: str, round_index: int = 0) -> np.random.Generator:
    """The generator of one named stream (see :data:`STREAMS`) for one round."""
    return np.random.default_rng([int(seed), STREAMS[name], int(round_index)])


def balanced_validation_split(labels: np.ndarray, num_classes: int, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask holding out ``per_class`` random points of each class (at most half a class).

    Draws with ``rng.choice`` rather than :func:`alkit.data.datasets.rows_per_class` (a permutation per
    class): every committed run's validation split comes from these draws."""
    held = np.zeros(labels.shape[0], bool)
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        take = min(per_class, members.size // 2)
        if take:
            held[rng.choice(members, size=take, replace=False)] = True
    return held


def first_round_split(
    labels: np.ndarray, num_classes: int, val_per_class: int, initial_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(held-out validation mask, sorted initial labelled rows) of a run with this seed."""
    held_out = balanced_validation_split(labels, num_classes, val_per_class, stream(seed, "validation"))
    candidates = np.flatnonzero(~held_out)
    if initial_size > candidates.size:
        raise ValueError(f"initial_size {initial_size} exceeds the {candidates.size} points outside validation")
    return held_out, np.sort(stream(seed, "initial").choice(candidates, size=initial_size, replace=False))


@dataclass
class RunResult:
    """Tidy rows (one per round) plus what does not fit a row."""

    rows: list[dict]
    picks: list[np.ndarray]             # indices labelled in each round (round 0: the initial pool)
    validation_indices: np.ndarray
    label_counts: np.ndarray            # (rounds + 1, C) labelled-set class counts
    per_class_accuracy: np.ndarray      # (rounds + 1, C) test accuracy per class
    config: dict = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in metrics.items() if k != "counts"}


def run_active_learning(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    strategy: str | Strategy | StrategyInfo,
    *,
    seed: int,
    initial_size: int,
    round_budget: int,
    rounds: int,
    val_per_class: int = 0,
    probe: ProbeConfig = ProbeConfig(),
    strategy_name: str | None = None,
    progress: bool = True,
    on_round: Callable[[dict, np.ndarray], None] | None = None,
    shared: dict | None = None,
    images=None,
    checkpoint: str | Path | None = None,
    allow_missing_classes: bool = False,
) -> RunResult:
    """Run the initial random pool plus ``rounds`` query rounds; return a :class:`RunResult`.

    Each round: train a linear probe on the labelled features (by default a converged L2 logistic
    regression whose strength is chosen on the held-out, class-balanced validation split, whose
    labels are free; each strength starts from the previous round's solution); evaluate it on the
    test set; build the pool state (labels of labelled points only, the new head); ask the
    strategy for ``round_budget`` points; reveal their labels.  The final round trains and
    evaluates without querying.  ``on_round(row, picks)`` is called after each round.

    The run's :class:`alkit.pool.StrategyCache` is made here and passed to the strategy every
    round: its ``run`` dict lives for this run.  ``shared``: its ``shared`` dict, which a caller
    running many runs on these features and labels (a sweep) passes to each of them; it keeps
    what depends on the data alone — ProbCover's δ-graph, and the round-0 head, which depends on
    the seed, the schedule and the probe but not on the strategy, so it is trained once per such
    key and reused (the rows are the same as if it were trained again).  None: a fresh one.

    ``images``: the pool's images (:class:`alkit.data.images.PoolImages`, one per row of
    ``train_features``), handed to the strategy in every round's pool state; only strategies that
    train on pixels (VAAL) need them.  The fine-tuning loop (:mod:`alkit.finetune`) always has them.

    ``checkpoint``: a file where the state after every round is saved (atomically) and from which
    a run killed or preempted mid-way resumes at the round it was in: rows, picks, the previous
    head (the next probe's warm start) and the run's cache (its
    :meth:`~alkit.pool.StrategyCache.state_dict`: coreset's bounds, TypiClust's clusters, a few
    arrays of N entries, never a copy of the features) are restored, and every random stream is
    keyed by (seed, round), so the resumed run gives the rows and picks of an uninterrupted one.  A checkpoint of other settings is ignored.
    The caller deletes it once the finished run is saved.

    ``allow_missing_classes``: run although some of the ``num_classes`` classes have no training
    point (refused by default: a wrong ``num_classes`` would skew every balance metric).
    """
    info = resolve_strategy(strategy)
    name = strategy_name or info.name
    if "images" in info.needs and images is None:
        raise ValueError(f"strategy {info.name!r} trains on the pool's images: pass images= (alkit.data.images.PoolImages "
                         "of the pool's rows) or run it in the fine-tuning loop (`python -m alkit finetune`)")
    check_features(train_features, "train_features")
    check_features(test_features, "test_features")
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(f"train_labels must have shape ({train_features.shape[0]},), got {train_labels.shape}")
    if test_labels.shape != (test_features.shape[0],):
        raise ValueError(f"test_labels must have shape ({test_features.shape[0]},), got {test_labels.shape}")
    if test_features.shape[1] != train_features.shape[1]:
        raise ValueError("test_features must have the same dimension as train_features")
    seed = check_int(seed, "seed", low=0)
    if isinstance(probe, str):   # a preset by name, as on the command lines
        probe = ProbeConfig.named(probe)
    if not isinstance(probe, ProbeConfig):
        raise ParameterError(f"probe must be an alkit.ProbeConfig or a preset name ({', '.join(PROBE_PRESETS)}), "
                             f"got {type(probe).__name__}", param="probe")
    num_classes = check_int(num_classes, "num_classes", low=1)
    rounds = check_int(rounds, "rounds", low=0)
    val_per_class = check_int(val_per_class, "val_per_class", low=0)
    check_labels(train_labels, num_classes, "train_labels", allow_unlabelled=False)
    check_labels(test_labels, num_classes, "test_labels", allow_unlabelled=False)
    absent = np.flatnonzero(np.bincount(train_labels, minlength=num_classes) == 0)
    if absent.size and not check_bool(allow_missing_classes, "allow_missing_classes"):
        # every balance metric would count them as classes the strategy failed to label
        raise ParameterError(f"num_classes={num_classes}, but train_labels hold no point of class"
                             f"{'es' if absent.size > 1 else ''} {', '.join(map(str, absent[:10]))}"
                             f"{' …' if absent.size > 10 else ''}; pass the number of classes the data has "
                             "(relabel the classes 0 … C−1), or allow_missing_classes=True if the pool lacks them",
                             param="num_classes")
    initial_size = check_budget(initial_size)
    round_budget = check_budget(round_budget)

    n = train_features.shape[0]
    held_out, initial = first_round_split(train_labels, num_classes, val_per_class, initial_size, seed)
    available = int((~held_out).sum())
    if initial_size + rounds * round_budget > available:
        raise ValueError(f"round_budget: {initial_size} initial + {rounds} rounds × {round_budget} = "
                         f"{initial_size + rounds * round_budget} labels, more than the {available} points outside "
                         "validation; lower rounds or round_budget")
    val_idx = np.flatnonzero(held_out)
    labeled = np.zeros(n, bool)
    labeled[initial] = True
    pool_distribution = np.bincount(train_labels[~held_out], minlength=num_classes)
    val_x = np.asarray(train_features[val_idx], np.float32) if val_idx.size else None
    val_y = train_labels[val_idx] if val_idx.size else None

    config = {"strategy": name, "oracle": info.oracle, "seed": int(seed), "initial_size": initial_size,
              "round_budget": round_budget, "rounds": rounds, "val_per_class": val_per_class,
              "probe": probe.as_dict(), "num_classes": num_classes, "pool_size": n}
    rows: list[dict] = []
    picks = [initial]
    counts_per_round, per_class_per_round = [], []
    batch, selection_seconds = initial, 0.0
    head: LinearHead | None = None   # the previous round's head: warm start of this round's probe
    cache = StrategyCache(train_features, shared={} if shared is None else shared)
    # A checkpoint belongs to these settings *and* this data: with other features or labels under the
    # same settings (re-extracted, edited), it would resume the wrong run.
    data = array_fingerprint(train_features, train_labels) if checkpoint is not None else None
    state = _read_checkpoint(checkpoint, config, data)
    if state is not None:   # resume after the last saved round
        rows, picks, counts_per_round, per_class_per_round = (state["rows"], state["picks"], state["counts"],
                                                              state["per_class"])
        batch, selection_seconds, head = state["batch"], state["selection_seconds"], state["head"]
        cache.load_state_dict(state["cache"])
        for p in picks[1:]:
            labeled[p] = True
    bar = tqdm(range(len(rows), rounds + 1), desc=f"{name} seed {seed}", disable=not progress, leave=False)
    first_key = ("loop", "round0_head", int(seed), initial_size, val_per_class, num_classes, repr(probe))
    for r in bar:
        lab_idx = np.flatnonzero(labeled)
        if r == 0 and first_key in cache.shared:
            head = cache.shared[first_key]
        else:
            head = train_linear_probe(
                np.asarray(train_features[lab_idx], np.float32), train_labels[lab_idx], val_x, val_y,
                num_classes, probe, stream(seed, "training", r), warm_start=head,
            )
            if r == 0:
                cache.shared[first_key] = head
        metrics = classification_metrics(head.logits(test_features), test_labels, num_classes)
        labeled_imb = imbalance_metrics(train_labels[lab_idx], num_classes, pool_distribution)
        batch_imb = imbalance_metrics(train_labels[batch], num_classes, pool_distribution)
        row = {
            "strategy": name, "oracle": info.oracle, "seed": int(seed), "round": r,
            "n_labeled": int(lab_idx.size), "batch_size": int(batch.size),
            "top1": metrics["top1"], "top5": metrics["top5"], "balanced_accuracy": metrics["balanced_accuracy"],
            **head.record(),
            **_prefixed("labeled_", labeled_imb), **_prefixed("batch_", batch_imb),
            "selection_seconds": selection_seconds, "training_seconds": head.seconds,
        }
        rows.append(row)
        counts_per_round.append(labeled_imb["counts"])
        per_class_per_round.append(metrics["per_class_accuracy"])
        if on_round is not None:
            on_round(row, batch)
        bar.set_postfix(n=lab_idx.size, top1=f"{metrics['top1']:.3f}")
        if r == rounds:
            break
        pool = PoolState(
            features=train_features, labeled=labeled.copy(), held_out=held_out,
            labels=np.where(labeled, train_labels, -1).astype(np.int64), num_classes=num_classes,
            weight=head.weight, bias=head.bias, cache=cache, images=images,
        )
        started = time.perf_counter()
        batch = select(pool, info, round_budget, stream(seed, "selection", r + 1),
                       oracle_labels=train_labels if info.oracle else None)
        selection_seconds = time.perf_counter() - started
        labeled[batch] = True
        picks.append(batch)
        if checkpoint is not None:
            _write_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "config": config, "data": data, "rows": rows, "picks": picks,
                "counts": counts_per_round, "per_class": per_class_per_round, "batch": batch,
                "selection_seconds": selection_seconds, "head": head, "cache": cache.state_dict()})
    return RunResult(rows, picks, val_idx, np.stack(counts_per_round), np.stack(per_class_per_round), config)


def _write_checkpoint(path: str | Path, state: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)

    atomic_write(path, write)


def _read_checkpoint(path: str | Path | None, config: dict, data: str | None = None) -> dict | None:
    """The state a checkpoint of this run holds, or None (none, unreadable, other settings or other
    data: ``data`` is the fingerprint of the run's features and labels; or another
    :data:`CHECKPOINT_FORMAT`, which restarts the run).
    Unpickled: a checkpoint is this package's own file beside the run it belongs to."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError):
        return None
    ours = (isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and state.get("config") == config
            and state.get("data") == data)
    return state if ours else None


TIMING_COLUMNS = ("selection_seconds", "training_seconds")
