"""The active-learning loop: initial pool plus R rounds for one (pool, strategy, seed).

Everything random comes from one seed through named streams, so that all strategies run with
the same seed share the validation split, the initial pool and the round-0 model (paired
comparisons), and a run repeated with the same inputs gives identical rows and picks.

The loop owns the rows, the streams and the checkpoints; what differs between regimes — how a
round's model is trained on the labelled rows — is its :class:`Trainer`: a linear probe on frozen
features (:class:`LinearProbeTrainer`, the default) or the whole network fine-tuned on the images
(:class:`alkit.finetune.FineTuningTrainer`).
"""
from __future__ import annotations

import contextlib
import functools
import pickle
import time
from dataclasses import dataclass, field, replace
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

#: Layout of a round checkpoint (3: the loop's state, the run's cache as
#: :meth:`alkit.pool.StrategyCache.state_dict` and the trainer's state inside a round); a
#: checkpoint of another layout is taken for another run's (:attr:`Trainer.refuses_foreign_checkpoints`).
CHECKPOINT_FORMAT = 3

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
        raise ParameterError(f"initial_size {initial_size} exceeds the {candidates.size} points outside validation",
                             param="initial_size")
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


# --------------------------------------------------------------------------------------------
# Trainers: how one round's model is trained
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunData:
    """What every round of one run trains and is tested on (the loop makes it once per run)."""

    train: object               # the pool's inputs, one per row: features (N, D), or PoolImages to fine-tune
    train_labels: np.ndarray
    test: object
    test_labels: np.ndarray
    num_classes: int
    validation: np.ndarray      # pool rows of the free, class-balanced validation split
    images: object = None       # the pool's images (PoolImages) for strategies that train on pixels (VAAL)


@dataclass(frozen=True)
class PoolView:
    """The pool as the strategy sees it after a round: its features and the head (W, b) on them."""

    features: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


class OneProcess:
    """The ranks of a run in one process: it is the main one, with nothing to share or wait for."""

    size = 1
    is_main = True

    def broadcast(self, obj):
        return obj

    def barrier(self) -> None:
        pass


class Trainer:
    """How each round's model is trained: the part of a run that differs between regimes.

    :func:`run_active_learning` calls :meth:`fit` once per round with the labelled rows and the
    round's ``training`` stream; the fit it returns gives the loop

    * ``record()``: the row columns of the training (``probe_method``, ``val_top1``, …) and
      ``seconds``, its time;
    * ``test_logits(data)``: (n_test, C) logits, for the round's metrics;
    * ``pool_view(data)``: the pool's features and head for the strategy (:class:`PoolView`),
      asked for only in rounds that query;
    * ``carry``: what the next round's fit receives as ``previous`` and a checkpoint keeps;
    * ``detail()``: a dict for the run's ``config["rounds_detail"]``, or None.

    This base class holds the defaults, those of a trainer in one process on frozen features;
    :class:`LinearProbeTrainer` and :class:`alkit.finetune.FineTuningTrainer` fill in the rest.
    """

    #: True: the pool's features are its inputs in every round (a frozen backbone), so one
    #: :class:`alkit.pool.StrategyCache` serves the whole run and the caller's ``shared`` work.
    #: False: each fit re-embeds the pool, and nothing derived from one round's features is reused.
    frozen_features = True
    #: What a checkpoint of other settings or data (or an unreadable one) meets: False, it is
    #: ignored and the run starts over; True, the run stops with an error naming the file.
    refuses_foreign_checkpoints = False
    ranks = OneProcess()

    def check_inputs(self, train, test) -> None:
        """Raise a ValueError naming what is wrong with the pool's or the test set's inputs."""

    def identity(self) -> dict:
        """The recipe's entries of a sweep's run key (:func:`alkit.experiments.runs.run_sweep`): a
        finished run made with another recipe is never taken for this one."""
        return {}

    def settings(self, strategy: StrategyInfo, train) -> dict:
        """The trainer's entries of the run's config: its identity, and what it derives for this
        strategy and these inputs."""
        return self.identity()

    def strategy_options(self, strategy: StrategyInfo) -> dict:
        """Keyword options this recipe gives ``strategy`` (fine-tuning's carries VAAL's)."""
        return {}

    def fingerprint(self, data: RunData) -> str:
        """A digest of the run's data: a checkpoint of the same settings on other data is not this run's."""
        raise NotImplementedError

    def first_round_key(self) -> str | None:
        """What, besides the seed and the schedule, makes round 0's fit the same in every run of a
        sweep (it is then fitted once and shared); None: never shared."""
        return None

    @contextlib.contextmanager
    def running(self, data: RunData):
        """The span of one run (devices, process groups); yields the data the rounds use."""
        yield data

    def fit(self, data: RunData, round_index: int, rows: np.ndarray, rng: np.random.Generator, *,
            previous=None, resume=None, save_progress: Callable[[object], None] | None = None):
        """Train on the labelled ``rows`` (draws from ``rng``).  ``previous``: the last fit's
        ``carry``; ``resume``: training state a checkpoint saved inside this round;
        ``save_progress(state)``: offer the loop such state to checkpoint."""
        raise NotImplementedError


@dataclass
class LinearFit:
    """One round of the linear probe: its head, which is also the next round's warm start."""

    head: LinearHead

    @property
    def seconds(self) -> float:
        return self.head.seconds

    @property
    def carry(self) -> LinearHead:
        return self.head

    def record(self) -> dict:
        return self.head.record()

    def test_logits(self, data: RunData) -> np.ndarray:
        return self.head.logits(data.test)

    def pool_view(self, data: RunData) -> PoolView:
        return PoolView(data.train, self.head.weight, self.head.bias)

    def detail(self) -> None:
        return None


class LinearProbeTrainer(Trainer):
    """The frozen-feature regime (the default): each round a linear probe on the labelled features —
    by default a converged L2 logistic regression whose strength is chosen on the validation split,
    each strength warm-started from the previous round's solution (:func:`alkit.probe.train_linear_probe`)."""

    def __init__(self, probe: ProbeConfig | str = ProbeConfig()) -> None:
        if isinstance(probe, str):   # a preset by name, as on the command lines
            probe = ProbeConfig.named(probe)
        if not isinstance(probe, ProbeConfig):
            raise ParameterError(f"probe must be an alkit.ProbeConfig or a preset name ({', '.join(PROBE_PRESETS)}), "
                                 f"got {type(probe).__name__}", param="probe")
        self.probe = probe

    def __repr__(self) -> str:
        return f"LinearProbeTrainer({self.probe!r})"

    def check_inputs(self, train, test) -> None:
        check_features(train, "train_features")
        check_features(test, "test_features")
        if test.shape[1] != train.shape[1]:
            raise ParameterError("test_features must have the same dimension as train_features", param="test_features")

    def identity(self) -> dict:
        return {"probe": self.probe.as_dict()}

    def fingerprint(self, data: RunData) -> str:
        return array_fingerprint(data.train, data.train_labels)

    def first_round_key(self) -> str:
        return repr(self.probe)

    def fit(self, data: RunData, round_index: int, rows: np.ndarray, rng: np.random.Generator, *,
            previous: LinearHead | None = None, resume=None, save_progress=None) -> LinearFit:
        # A probe trains in seconds: nothing to save or resume inside a round.
        val = data.validation
        val_x = np.asarray(data.train[val], np.float32) if val.size else None
        val_y = data.train_labels[val] if val.size else None
        return LinearFit(train_linear_probe(np.asarray(data.train[rows], np.float32), data.train_labels[rows], val_x,
                                            val_y, data.num_classes, self.probe, rng, warm_start=previous))


def resolve_trainer(trainer: Trainer | None, probe: ProbeConfig | str | None) -> Trainer:
    """The run's trainer: ``trainer``, or a linear probe with ``probe`` (default :class:`ProbeConfig`)."""
    if trainer is None:
        return LinearProbeTrainer(ProbeConfig() if probe is None else probe)
    if probe is not None:
        raise ParameterError("probe: the trainer carries its recipe; pass probe= to LinearProbeTrainer or leave it out",
                             param="probe")
    if not isinstance(trainer, Trainer):
        raise ParameterError(f"trainer must be an alkit.loop.Trainer (LinearProbeTrainer, FineTuningTrainer), got "
                             f"{type(trainer).__name__}", param="trainer")
    return trainer


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

@dataclass
class LoopState:
    """Where a run stands at the start of a round: what a checkpoint keeps of the loop."""

    picks: list                       # per round: the rows labelled in it (round 0: the initial pool)
    batch: np.ndarray                 # the rows labelled for the coming round
    rows: list = field(default_factory=list)
    counts: list = field(default_factory=list)       # labelled-set class counts per round
    per_class: list = field(default_factory=list)    # per-class test accuracy per round
    details: list = field(default_factory=list)      # the trainer's detail() per round
    selection_seconds: float = 0.0
    previous: object = None           # the last fit's carry (the linear probe's warm start)


def run_active_learning(
    train_features,
    train_labels: np.ndarray,
    test_features,
    test_labels: np.ndarray,
    num_classes: int,
    strategy: str | Strategy | StrategyInfo,
    *,
    seed: int,
    initial_size: int,
    round_budget: int,
    rounds: int,
    val_per_class: int = 0,
    probe: ProbeConfig | str | None = None,
    trainer: Trainer | None = None,
    strategy_name: str | None = None,
    progress: bool = True,
    on_round: Callable[[dict, np.ndarray], None] | None = None,
    shared: dict | None = None,
    images=None,
    checkpoint: str | Path | None = None,
    allow_missing_classes: bool = False,
) -> RunResult:
    """Run the initial random pool plus ``rounds`` query rounds; return a :class:`RunResult`.

    Each round: the trainer fits the labelled rows (with the held-out, class-balanced validation
    split, whose labels are free); the fit is evaluated on the test set; the pool state (labels of
    labelled points only, the pool's features and the fit's head) goes to the strategy, which picks
    ``round_budget`` points; their labels are revealed.  The final round trains and evaluates
    without querying.  ``on_round(row, picks)`` is called after each round.

    ``train_features`` / ``test_features``: the pool's and the test set's inputs, as the trainer
    takes them.  ``trainer``: a :class:`Trainer`; None, a :class:`LinearProbeTrainer` with ``probe``
    (a :class:`alkit.probe.ProbeConfig` or a preset name; default :class:`ProbeConfig`), whose
    inputs are feature arrays; :class:`alkit.finetune.FineTuningTrainer` takes the images
    (:class:`alkit.data.images.PoolImages`), trains the network on them each round and re-embeds
    the pool with it.

    The run's :class:`alkit.pool.StrategyCache` is made here and passed to the strategy every
    round: its ``run`` dict lives for this run.  ``shared``: its ``shared`` dict, which a caller
    running many runs on these features and labels (a sweep) passes to each of them; it keeps
    what depends on the data alone — ProbCover's δ-graph, and the round-0 fit, which depends on
    the seed, the schedule and the probe but not on the strategy, so it is trained once per such
    key and reused (the rows are the same as if it were trained again).  None: a fresh one.  A
    trainer that re-embeds the pool each round gets a fresh cache each round.

    ``images``: the pool's images (:class:`alkit.data.images.PoolImages`, one per row of
    ``train_features``), handed to the strategy in every round's pool state; only strategies that
    train on pixels (VAAL) need them.  Fine-tuning hands its own.

    ``checkpoint``: a file where the state after every round (and, for a trainer that offers it,
    inside a round) is saved atomically and from which a run killed or preempted mid-way resumes at
    the round it was in: rows, picks, the last fit's carry (the next probe's warm start) and the
    run's cache (its :meth:`~alkit.pool.StrategyCache.state_dict`: coreset's bounds, TypiClust's
    clusters, a few arrays of N entries, never a copy of the features) are restored, and every
    random stream is keyed by (seed, round), so the resumed run gives the rows and picks of an
    uninterrupted one.  A checkpoint of other settings or data is ignored (or refused, by a
    trainer whose rounds are costly: :attr:`Trainer.refuses_foreign_checkpoints`).  The caller
    deletes it once the finished run is saved.

    ``allow_missing_classes``: run although some of the ``num_classes`` classes have no training
    point (refused by default: a wrong ``num_classes`` would skew every balance metric).
    """
    trainer = resolve_trainer(trainer, probe)
    info = resolve_strategy(strategy)
    name = strategy_name or info.name
    trainer.check_inputs(train_features, test_features)
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    if train_labels.shape != (len(train_features),):
        raise ParameterError(f"train_labels must have shape ({len(train_features)},), got {train_labels.shape}",
                             param="train_labels")
    if test_labels.shape != (len(test_features),):
        raise ParameterError(f"test_labels must have shape ({len(test_features)},), got {test_labels.shape}",
                             param="test_labels")
    seed = check_int(seed, "seed", low=0)
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

    n = len(train_features)
    held_out, initial = first_round_split(train_labels, num_classes, val_per_class, initial_size, seed)
    available = int((~held_out).sum())
    if initial_size + rounds * round_budget > available:
        raise ParameterError(f"round_budget: {initial_size} initial + {rounds} rounds × {round_budget} = "
                             f"{initial_size + rounds * round_budget} labels, more than the {available} points outside "
                             "validation; lower rounds or round_budget", param="round_budget")
    config = {"strategy": name, "oracle": info.oracle, "seed": int(seed), "initial_size": initial_size,
              "round_budget": round_budget, "rounds": rounds, "val_per_class": val_per_class,
              **trainer.settings(info, train_features), "num_classes": num_classes, "pool_size": n}
    options = trainer.strategy_options(info)
    if options:
        info = replace(info, fn=functools.partial(info.fn, **options))
    data = RunData(train_features, train_labels, test_features, test_labels, num_classes, np.flatnonzero(held_out),
                   images)
    with trainer.running(data) as data:
        if "images" in info.needs and data.images is None:
            raise ParameterError(f"strategy {info.name!r} trains on the pool's images: pass images= (alkit.data.images."
                                 "PoolImages of the pool's rows) or fine-tune (trainer=alkit.finetune.FineTuningTrainer, "
                                 "`python -m alkit finetune`)", param="images")
        return _run_rounds(data, held_out, initial, info, trainer, config, seed=seed, round_budget=round_budget,
                           rounds=rounds, progress=progress, on_round=on_round, shared=shared, checkpoint=checkpoint)


def _run_rounds(data: RunData, held_out: np.ndarray, initial: np.ndarray, info: StrategyInfo, trainer: Trainer,
                config: dict, *, seed: int, round_budget: int, rounds: int, progress: bool,
                on_round: Callable | None, shared: dict | None, checkpoint: str | Path | None) -> RunResult:
    """The rounds of :func:`run_active_learning`, on checked inputs."""
    labels, num_classes, ranks = data.train_labels, data.num_classes, trainer.ranks
    pool_distribution = np.bincount(labels[~held_out], minlength=num_classes)
    shared = {} if shared is None else shared
    cache = StrategyCache(data.train, shared=shared) if trainer.frozen_features else None
    # A checkpoint belongs to these settings *and* this data: with other features or labels under the
    # same settings (re-extracted, edited), it would resume the wrong run.
    fingerprint = trainer.fingerprint(data) if checkpoint is not None else None
    saved = _read_checkpoint(checkpoint, config, fingerprint, refuse=trainer.refuses_foreign_checkpoints)
    state, resume = LoopState(picks=[initial], batch=initial), None
    if saved is not None:   # resume in the round after the last saved one, or inside it
        state, resume = LoopState(**saved["state"]), saved["training"]
        if cache is not None:
            cache.load_state_dict(saved["cache"])
    labeled = np.zeros(len(labels), bool)
    for p in state.picks:
        labeled[p] = True

    def save(training=None) -> None:
        """Checkpoint the loop's state at the start of this round, with the trainer's state inside it."""
        if checkpoint is not None and ranks.is_main:
            _write_checkpoint(checkpoint, {
                "format": CHECKPOINT_FORMAT, "config": config, "data": fingerprint, "state": dict(vars(state)),
                "cache": None if cache is None else cache.state_dict(), "training": training})

    bar = tqdm(range(len(state.rows), rounds + 1), desc=f"{config['strategy']} seed {seed}",
               disable=not progress or not ranks.is_main, leave=False)
    first_key = trainer.first_round_key()
    if first_key is not None:
        first_key = ("loop", "round0_head", int(seed), config["initial_size"], config["val_per_class"], num_classes,
                     first_key)
    for r in bar:
        lab_idx = np.flatnonzero(labeled)
        if r == 0 and first_key in shared:
            fit = shared[first_key]
        else:
            fit = trainer.fit(data, r, lab_idx, stream(seed, "training", r), previous=state.previous, resume=resume,
                              save_progress=save)
            resume = None
            if r == 0 and first_key is not None:
                shared[first_key] = fit
        metrics = classification_metrics(fit.test_logits(data), data.test_labels, num_classes)
        labeled_imb = imbalance_metrics(labels[lab_idx], num_classes, pool_distribution)
        batch_imb = imbalance_metrics(labels[state.batch], num_classes, pool_distribution)
        row = {
            "strategy": config["strategy"], "oracle": info.oracle, "seed": int(seed), "round": r,
            "n_labeled": int(lab_idx.size), "batch_size": int(state.batch.size),
            "top1": metrics["top1"], "top5": metrics["top5"], "balanced_accuracy": metrics["balanced_accuracy"],
            **fit.record(),
            **_prefixed("labeled_", labeled_imb), **_prefixed("batch_", batch_imb),
            "selection_seconds": state.selection_seconds, "training_seconds": fit.seconds,
        }
        state.rows.append(row)
        state.counts.append(labeled_imb["counts"])
        state.per_class.append(metrics["per_class_accuracy"])
        if on_round is not None and ranks.is_main:
            on_round(row, state.batch)
        bar.set_postfix(n=lab_idx.size, top1=f"{metrics['top1']:.3f}")
        if r < rounds:
            view = fit.pool_view(data)
            pool = PoolState(
                features=view.features, labeled=labeled.copy(), held_out=held_out,
                labels=np.where(labeled, labels, -1).astype(np.int64), num_classes=num_classes,
                weight=view.weight, bias=view.bias, images=data.images,
                cache=cache if cache is not None else StrategyCache(view.features),   # re-embedded: a fresh one
            )
            started = time.perf_counter()
            batch = None
            if ranks.is_main:   # under torchrun rank 0 selects and every rank gets its picks
                batch = select(pool, info, round_budget, stream(seed, "selection", r + 1),
                               oracle_labels=labels if info.oracle else None)
            state.batch = ranks.broadcast(batch)
            state.selection_seconds = time.perf_counter() - started
            labeled[state.batch] = True
            state.picks.append(state.batch)
        detail = fit.detail()
        if detail is not None:
            state.details.append({"round": r, **detail})
        state.previous = fit.carry
        if r < rounds:
            save()
        ranks.barrier()
    if state.details:
        config["rounds_detail"] = state.details
    return RunResult(state.rows, state.picks, data.validation, np.stack(state.counts), np.stack(state.per_class),
                     config)


def _write_checkpoint(path: str | Path, state: dict) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)

    atomic_write(path, write)


def _read_checkpoint(path: str | Path | None, config: dict, data: str | None = None, *,
                     refuse: bool = False) -> dict | None:
    """The state a checkpoint of this run holds, or None (none, unreadable, other settings or other
    data: ``data`` is the fingerprint of the run's data; or another :data:`CHECKPOINT_FORMAT`, which
    restarts the run).  With ``refuse``, a file there that is not this run's raises a ValueError
    naming it instead.  Unpickled: a checkpoint is this package's own file beside the run it belongs to."""
    if path is None or not Path(path).is_file():
        return None
    try:
        with open(path, "rb") as fh:
            state = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ValueError) as exc:
        if refuse:
            raise ParameterError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to start "
                                 "the run again", param="checkpoint") from None
        return None
    ours = (isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT and state.get("config") == config
            and state.get("data") == data)
    if not ours and refuse:
        raise ParameterError(f"checkpoint {path} belongs to another run (other settings, data or layout); delete it or "
                             "choose another output path", param="checkpoint")
    return state if ours else None


TIMING_COLUMNS = ("selection_seconds", "training_seconds")
