"""``python -m alkit select``: the next batch to label, from features (and labels, a head)."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from alkit.cli.common import (
    PROG, UsageError, _load_array, _load_head, _load_pool_features, load_user_strategy, probe_config,
)


#: Strategies that read no model (named in the message when a head cannot be trained).
MODEL_FREE_EXAMPLES = "random, coreset, typiclust, probcover, balancing"


def cmd_select(args: argparse.Namespace) -> int:
    from alkit.io import check_output_file, save_npy
    from alkit.api import make_pool
    from alkit.pool import check_features
    from alkit.strategies import resolve_strategy, select, strategy_names

    if ":" in args.strategy:
        args.strategy = load_user_strategy(args.strategy, "--strategy")
    try:
        info = resolve_strategy(args.strategy)
    except ValueError:
        raise UsageError(f"--strategy: strategy {args.strategy!r} is unknown; choose from "
                         f"{', '.join(strategy_names())} (`{PROG} strategies` describes them)") from None
    if info.oracle:
        raise UsageError(f"--strategy: {info.name!r} is an oracle baseline (it reads true labels of unlabelled "
                         "points) and cannot run on a real pool")
    check_output_file(args.out, "--out")   # before any compute: a bad --out must not cost the selection
    if not str(args.out).lower().endswith((".npy", ".csv")):
        raise UsageError(f"--out: {args.out} must end in .npy (int64 indices) or .csv (rank,index,path: the list "
                         "to label)")
    features, paths = _load_pool_features(args.features)
    class_names = None
    if args.labels is None:    # a cold start: nothing labelled yet
        labels = np.full(features.shape[0], -1, np.int64)
    elif args.labels.lower().endswith(".csv"):
        from alkit.data.labelling import read_labels_csv

        try:
            labels, class_names = read_labels_csv(args.labels, paths, "--labels")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if args.num_classes is None and class_names:
            args.num_classes = len(class_names)
    else:
        labels = np.asarray(_load_array(args.labels, "--labels"))
    if features.ndim != 2:
        raise UsageError(f"--features: must be a 2-D (N, D) array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise UsageError(f"--labels: must hold one entry per feature row ({features.shape[0]}), got shape {labels.shape}")
    check_features(features, "--features")
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"--labels: must hold integer classes (-1 for unlabelled), got dtype {labels.dtype}")
    num_classes = args.num_classes
    weight = bias = None
    if args.head:
        weight, bias = _load_head(args.head)
        if num_classes is None:
            num_classes = weight.shape[0]
        if weight.shape != (num_classes, features.shape[1]) or bias.shape != (num_classes,):
            raise UsageError(f"--head: W must be ({num_classes}, {features.shape[1]}) and b ({num_classes},), "
                             f"got {weight.shape} and {bias.shape}")
    if num_classes is None:
        # Nothing labelled and no head: only the model-free strategies can run, and they do not use C.
        num_classes = int(labels.max()) + 1 if (labels >= 0).any() else 1
    if labels.min() < -1 or labels.max() >= num_classes:
        raise UsageError(f"--labels: values must be -1 (unlabelled) or in [0, {num_classes}); "
                         f"found [{labels.min()}, {labels.max()}] (set --num-classes?)")
    if not (labels == -1).any():
        raise UsageError("--labels: every point is labelled already, so there is nothing to select; mark the "
                         "points still to label with -1")
    config = probe_config(args)
    classes = np.unique(labels[labels >= 0])

    def say(message: str) -> None:   # what is happening (long on large pools), on stdout: stderr is for errors
        if not args.quiet:
            print(message, flush=True)

    if weight is None and classes.size >= 2:
        from alkit.probe import train_linear_probe

        lab = np.flatnonzero(labels >= 0)
        started = time.perf_counter()
        say(f"training the head ({config.method}) on {lab.size:,} labelled points of {classes.size} classes ...")
        head = train_linear_probe(np.asarray(features[lab], np.float32), labels[lab], None, None, num_classes,
                                  config, seed=args.seed)
        weight, bias = head.weight, head.bias
        say(f"  {head!r} in {time.perf_counter() - started:.1f} s")
    pool = make_pool(features, labels.astype(np.int64), num_classes, weight=weight, bias=bias)
    try:
        started = time.perf_counter()
        say(f"selecting {args.budget:,} of {int(pool.eligible.sum()):,} unlabelled points with {info.name} ...")
        picks = select(pool, info, args.budget, args.seed)
        say(f"  done in {time.perf_counter() - started:.1f} s")
    except ValueError as exc:
        if pool.has_model or "linear head" not in str(exc):
            raise
        why = ("no point is labelled" if classes.size == 0
               else f"all labelled points are of class {int(classes[0])}")
        raise UsageError(f"--labels: strategy {info.name!r} needs a model, and {why}: a head cannot be trained on "
                         "fewer than two classes; label points of two classes or more, pass --head, or choose a "
                         f"strategy without a model (e.g. {MODEL_FREE_EXAMPLES})") from None
    try:
        if str(args.out).lower().endswith(".csv"):   # rank, index and image path: the list to label
            from alkit.data.labelling import write_picks_csv

            write_picks_csv(args.out, picks, paths)
        else:
            save_npy(args.out, picks.astype(np.int64))
    except OSError as exc:   # checked before the selection, yet the disk may fill: keep the picks somewhere
        fd, rescue = tempfile.mkstemp(prefix="alkit-picks-", suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, picks.astype(np.int64))
        raise UsageError(f"--out: cannot write {args.out} ({exc.strerror or exc}); the {picks.size} picks were "
                         f"saved to {rescue} instead") from None
    note = "" if picks.size == args.budget else f" (--budget {args.budget}, but only {picks.size} unlabelled)"
    print(f"selected {picks.size} points with {info.name}{note} -> {args.out}")
    if class_names:
        print("classes: " + ", ".join(f"{k}={name}" for k, name in enumerate(class_names)))
    return 0
