"""Every command line of alkit: ``python -m alkit {select,strategies,run,features} ...``,
``python -m alkit.experiment`` (configured sweeps) and ``python -m alkit.reproduce`` (figures,
sweeps, the class-count experiment).

Bad input exits with status 2 and one line on stderr naming the argument by its flag and saying
the fix; everything that can be checked (files, values, the output path) is checked before any
compute starts.  The commands import the library inside their functions, so that ``--help`` and a
mistyped flag answer at once instead of after loading torch.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

PROG = "python -m alkit"


class UsageError(ValueError):
    pass


def one_line(text: object) -> str:
    """``text`` as one line: a DataLoader worker's wrapped error reduced to its last line, line
    breaks folded."""
    text = str(text).strip()
    if "Original Traceback" in text:   # "Caught X in DataLoader worker …\nOriginal Traceback …\nX: message"
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if re.match(r"^([A-Za-z_]\w*\.)*[A-Z]\w*: ", last) else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or "unknown error"


def disk_full_message(exc: BaseException, flag: str | None = None) -> str | None:
    """A full disk (``alkit.io.DiskFullError``) in a command's terms: the command's cache flag
    ``flag`` in the fix and in front (only ``$ALKIT_CACHE`` where it has none); None for other errors."""
    io = sys.modules.get("alkit.io")   # not loaded: not its error (and no torch import to find that out)
    if io is None or not isinstance(exc, io.DiskFullError):
        return None
    text = one_line(exc)
    if "cache_dir=FOLDER" not in text:
        return text
    text = text.replace(" or cache_dir=FOLDER", f" or {flag} FOLDER" if flag else "")
    return f"{flag}: {text}" if flag else text


# --------------------------------------------------------------------------------------------
# Reading the input files
# --------------------------------------------------------------------------------------------

def _existing_file(path: str, arg: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"{arg}: file not found: {path}")
    if p.is_dir():
        raise UsageError(f"{arg}: {path} is a directory; pass the {what} file")
    if p.stat().st_size == 0:
        raise UsageError(f"{arg}: {path} is empty (0 bytes): an interrupted copy or save? Write it again "
                         f"({what})")
    return p


def _load_array(path: str, arg: str) -> np.ndarray:
    """One array from a .npy file (memory-mapped), or a UsageError naming ``arg``."""
    p = _existing_file(path, arg, ".npy")
    with open(p, "rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"
    if is_zip:   # an .npz (numpy would leave its handle open on a corrupt one): name its arrays
        try:
            with zipfile.ZipFile(p) as archive:
                names = [n.removesuffix(".npy") for n in archive.namelist()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise UsageError(f"{arg}: cannot read {path} as a .npy array ({one_line(exc)}); write it with "
                             "numpy.save") from None
        raise UsageError(f"{arg}: {path} is an .npz archive (arrays {', '.join(names) or 'none'}); pass one array "
                         "saved with numpy.save as .npy")
    try:
        loaded = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{arg}: cannot read {path} as a .npy array ({one_line(exc)}); write it with "
                         "numpy.save") from None
    if not isinstance(loaded, np.ndarray):
        raise UsageError(f"{arg}: {path} does not hold a numpy array")
    return loaded


def _load_pool_features(path: str) -> tuple[np.ndarray, list[str] | None]:
    """``--features``: an .npy array, or a feature-cache entry (a folder printed by ``python -m alkit
    features``), whose rows come with their image paths."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "features.npy").is_file():
            raise UsageError(f"--features: {path} is a directory but not a feature-cache entry (no features.npy); "
                             "pass an .npy file or the folder `python -m alkit features` printed")
        from alkit.features import load_feature_set

        try:
            entry = load_feature_set(p)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(f"--features: {one_line(exc)}") from None
        return entry.features, entry.paths
    return _load_array(path, "--features"), None


def _load_head(path: str) -> tuple[np.ndarray, np.ndarray]:
    p = _existing_file(path, "--head", ".npz with arrays W and b")
    # The file is opened here, not by np.load: numpy leaves its own handle open when the zip is corrupt.
    with open(p, "rb") as fh:
        try:
            data = np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise UsageError(f"--head: cannot read {path} as .npz ({one_line(exc)}); save the head with "
                             "numpy.savez(path, W=W, b=b)") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise UsageError(f"--head: {path} holds a single array (.npy), not a head; save W (C×D) and b (C) "
                             "together with numpy.savez(path, W=W, b=b)")
        with data:
            if "W" not in data.files or "b" not in data.files:
                raise UsageError(f"--head: {path} must hold arrays 'W' (C×D) and 'b' (C), found {data.files}; save "
                                 "it with numpy.savez(path, W=W, b=b)")
            try:
                weight, bias = np.asarray(data["W"]), np.asarray(data["b"])
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise UsageError(f"--head: cannot read W and b from {path} ({one_line(exc)})") from None
    for name, array in (("W", weight), ("b", bias)):
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise UsageError(f"--head: {name} must hold numbers, got dtype {array.dtype}")
    weight, bias = weight.astype(np.float32), bias.astype(np.float32)
    if weight.ndim != 2 or bias.ndim != 1:
        raise UsageError(f"--head: W must be 2-D (C×D) and b 1-D (C), got shapes {weight.shape} and {bias.shape}")
    for name, array in (("W", weight), ("b", bias)):
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:
            raise UsageError(f"--head: {name} holds NaN or inf (first at {tuple(int(i) for i in bad[0])}); "
                             "retrain the head or leave out --head to train one")
    return weight, bias


# --------------------------------------------------------------------------------------------
# Values of flags
# --------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (> 0), got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (≥ 0), got {value}")
    return value


def seed_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer seed, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer (numpy seeds are ≥ 0), got {value}")
    return value


def parse_list(text: str | None, flag: str, what: str, cast=str, example: str = "") -> list:
    """Comma-separated items of ``flag``: none empty, none repeated."""
    parts = [p.strip() for p in (text or "").split(",")]
    if not any(parts):
        raise UsageError(f"{flag}: empty list; give comma-separated {what}" + (f", e.g. {flag} {example}"
                                                                              if example else ""))
    if "" in parts:
        raise UsageError(f"{flag}: empty item in {text!r}; give comma-separated {what} without blanks")
    items = []
    for part in parts:
        try:
            items.append(cast(part))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            detail = str(exc) if isinstance(exc, argparse.ArgumentTypeError) else f"must be {what}, got {part!r}"
            raise UsageError(f"{flag}: {detail}") from None
    seen = set()
    for item in items:
        if item in seen:
            raise UsageError(f"{flag}: {item!r} is listed twice; give each once (a repeat would only repeat "
                             "identical work)")
        seen.add(item)
    return items


def parse_seeds(text: str | None, flag: str = "--seeds") -> list[int]:
    return parse_list(text, flag, "non-negative integer seeds", seed_int, "0,1,2")


def load_user_strategy(text: str, flag: str) -> str:
    """``module:function`` (a module importable from here, e.g. a ``my_strategies.py`` in the working
    folder): the user's strategy ``(pool, budget, rng) -> indices``, registered under the function's
    name for this process; returns that name."""
    import importlib   # only for a strategy of the user's own

    from alkit.strategies import register   # the library under the command line, loaded when a command runs
    from alkit.strategies.registry import _REGISTRY   # (the same reason)

    module_name, _, function_name = text.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"{flag}: {text!r}: a strategy of your own is module:function, e.g. my_strategies:farthest")
    if "" not in sys.path and "." not in sys.path:   # `python -m alkit` finds modules of the working folder
        sys.path.insert(0, "")
    try:
        fn = getattr(importlib.import_module(module_name), function_name)
    except ImportError as exc:
        raise UsageError(f"{flag}: cannot import {module_name!r} for {text!r} ({one_line(exc)}); run from the "
                         "folder that holds it, or put it on PYTHONPATH") from None
    except AttributeError:
        raise UsageError(f"{flag}: module {module_name!r} has no {function_name!r}") from None
    if not callable(fn):
        raise UsageError(f"{flag}: {text!r} is not a function (pool, budget, rng) -> indices")
    existing = _REGISTRY.get(function_name)
    if existing is None:
        register(function_name)(fn)
    elif existing.fn is not fn:
        raise UsageError(f"{flag}: {function_name!r} is already a registered strategy; rename your function")
    return function_name


def parse_strategies(text: str | None, flag: str = "--strategies", *, allow_oracle: bool = True,
                     allow_images: bool = True) -> list[str]:
    """Registered strategy names (aliases resolved), each once; ``allow_images=False`` refuses those
    that train on images (VAAL) for commands that hold features only."""
    from alkit.strategies import resolve_strategy, strategy_names

    names = parse_list(text, flag, "strategy names", example="random,margin")
    resolved = []
    for name in names:
        name = load_user_strategy(name, flag) if ":" in name else name
        try:
            info = resolve_strategy(name)
        except ValueError:
            raise UsageError(f"{flag}: strategy {name!r} is unknown; choose from {', '.join(strategy_names())} "
                             f"(`{PROG} strategies` describes them)") from None
        if info.oracle and not allow_oracle:
            raise UsageError(f"{flag}: {info.name!r} is an oracle baseline (it reads true labels of unlabelled "
                             "points) and cannot run on a real pool")
        if "images" in info.needs and not allow_images:
            raise UsageError(f"{flag}: {info.name!r} trains on the pool's images and this command has features "
                             f"only; run it with `{PROG} finetune` (the fine-tuning loop holds the images)")
        resolved.append(info.name)
    if len(set(resolved)) != len(resolved):
        twice = next(n for n in resolved if resolved.count(n) > 1)
        raise UsageError(f"{flag}: {twice!r} is listed twice; give each strategy once")
    return resolved


#: Python parameter names an error from the library may carry, and the flag a CLI user knows.
PARAMETER_FLAGS = {
    "train_features": "--features", "train_labels": "--labels", "test_features": "--test-features",
    "test_labels": "--test-labels", "num_classes": "--num-classes", "initial_size": "--initial",
    "round_budget": "--budget", "val_per_class": "--val-per-class", "budget": "--budget", "seed": "--seed",
    "features": "--features", "labels": "--labels", "weight": "--head", "bias": "--head", "rounds": "--rounds",
}


def flag_names(message: str, mapping: dict[str, str] = PARAMETER_FLAGS) -> str:
    """``message`` with the Python parameter names it mentions replaced by their flags: snake_case
    names anywhere, ``name=`` forms, and a plain name that opens the message (``budget must …``)."""
    for name, flag in mapping.items():
        if "_" in name:
            message = re.sub(rf"(?<![\w-]){name}(?![\w-])=?", flag, message)
        else:
            message = re.sub(rf"(?<![\w-]){name}=", f"{flag} ", message)
            message = re.sub(rf"^{name}(?=[ :])", flag, message)
    return message


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------

def cmd_strategies(args: argparse.Namespace) -> int:
    from alkit.strategies import available_strategies

    infos = available_strategies(images=True)
    width = max(len(i.name) for i in infos)
    for info in infos:   # "images": trains on the pool's images, so `finetune` only
        flag = "oracle" if info.oracle else "images" if "images" in info.needs else "      "
        print(f"{info.name:<{width}}  {flag}  {info.summary}")
    return 0


#: Strategies that read no model (named in the message when a head cannot be trained).
MODEL_FREE_EXAMPLES = "random, coreset, typiclust, probcover, balancing"


def cmd_select(args: argparse.Namespace) -> int:
    from alkit.io import check_output_file, save_npy
    from alkit.pool import check_features, make_pool
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
        from alkit.labelling import read_labels_csv

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
            from alkit.labelling import write_picks_csv

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


def probe_config(args: argparse.Namespace):
    """The ``--probe`` preset, with ``--probe-epochs`` for the early-stopping ones."""
    from dataclasses import replace

    from alkit.probe import ProbeConfig

    config = ProbeConfig.named(args.probe)
    if args.probe_epochs is not None:
        if config.method != "early_stopping":
            raise UsageError(f"--probe-epochs: applies to the early-stopping probes, not to --probe {args.probe} "
                             "(a logistic regression fit to convergence)")
        config = replace(config, max_epochs=args.probe_epochs)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    return run_from_arrays(args)


def cmd_features(argv: list[str]) -> int:
    return features_main(argv)


# --------------------------------------------------------------------------------------------
# `features`: extract (or find in the cache) frozen features; under torchrun the ranks share it
# --------------------------------------------------------------------------------------------

FEATURES_PROG = "python -m alkit features"


class _FeaturesUsageError(Exception):
    pass


class _FeaturesParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit code 2 is chosen by ``main``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _FeaturesUsageError(message)


def build_features_parser() -> argparse.ArgumentParser:
    from alkit.datasets import DATASET_NAMES

    p = _Parser(prog=FEATURES_PROG, description="Extract frozen features of an image data set split (cached).",
                epilog="Several processes share one extraction when launched with torchrun, e.g. `torchrun "
                       "--nproc_per_node 4 -m alkit features --dataset ...` (one GPU each with CUDA; multi-node "
                       "too, with the cache folder shared): the ranks split the shards, rank 0 writes the "
                       "entry, byte-identical to one process's; a rerun with any number of processes resumes.",
                formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="data set name")
    p.add_argument("--root", help="data folder or archive (.tar.gz/.zip); cifar10 without --root uses "
                                  "torchvision's download (online only)")
    p.add_argument("--split", default="train", choices=("train", "test", "val"),
                   help="train or test (tiny-imagenet/imagenet: test and val both mean the labelled val set; "
                        "cifar10 has no val split; images: a folder of unlabelled images is one pool, train)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default, offline), simclr_resnet18_cifar, moco_v2_resnet50, "
                        "torchvision:<arch>")
    p.add_argument("--weights", help="local checkpoint file (required for all but efficientnet_lite0)")
    p.add_argument("--weights-url", help="download the checkpoint from this URL instead (online only)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a --weights file that holds Python objects besides tensors (runs its code: only "
                        "for files you trust)")
    p.add_argument("--limit", type=int, help="class-stratified slice of N images (quick checks)")
    p.add_argument("--limit-seed", type=non_negative_int, default=0, help="seed of the --limit slice")
    p.add_argument("--out", help="cache directory (default $ALKIT_CACHE or ~/.cache/alkit)")
    p.add_argument("--resolution", type=positive_int,
                   help="backbone input size in px (default: 112 for 32/64-px images "
                        "with an ImageNet backbone, the backbone's own size otherwise)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    p.add_argument("--shard-size", type=positive_int, default=2048,
                   help="images per resumable shard, the unit torchrun ranks split (rounded to whole batches)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="image-decoding worker processes")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--imbalance-ratio", type=float, help="*-lt: ρ = n_min/n_max (default 0.1)")
    p.add_argument("--lt-profile", choices=("exp", "step"), help="*-lt: exponential (default) or step profile")
    p.add_argument("--lt-seed", type=non_negative_int, help="*-lt: seed of the per-class choice (default 0)")
    p.add_argument("--split-file", help="imagenet-lt: ImageNet_LT_<split>.txt or the folder holding them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the paths as one JSON object")
    return p


def _features_long_tail(args: argparse.Namespace):
    from alkit.datasets import LongTailSpec

    lt_given = [o for o, v in (("--imbalance-ratio", args.imbalance_ratio), ("--lt-profile", args.lt_profile),
                               ("--lt-seed", args.lt_seed)) if v is not None]
    if not args.dataset.endswith("-lt") or args.dataset == "imagenet-lt":
        if lt_given:
            raise _FeaturesUsageError(f"{lt_given[0]} applies to cifar10-lt and tiny-imagenet-lt only, not {args.dataset}")
        return None
    return LongTailSpec(0.1 if args.imbalance_ratio is None else args.imbalance_ratio, args.lt_profile or "exp",
                        0 if args.lt_seed is None else args.lt_seed)


def _features_notes(args: argparse.Namespace) -> list[str]:
    notes = []
    if args.dataset.startswith(("tiny-imagenet", "imagenet")) and args.dataset != "imagenet-lt" and args.split != "train":
        notes.append(f"note: the {args.dataset} test split is the labelled val set")
    if args.dataset in ("cifar10-lt", "tiny-imagenet-lt") and args.split != "train":
        notes.append("note: the long-tailed profile cuts the training split; the test split stays balanced")
    return notes


#: Splits of the data sets that have no separate validation split (``val`` would silently be ``test``).
FEATURES_NO_VAL_SPLIT = ("cifar10", "cifar10-lt")

#: Python parameter names in library errors → the flags of this command.
FEATURES_FLAGS = {"root": "--root", "split_file": "--split-file", "split": "--split", "dataset": "--dataset",
                   "imbalance_ratio": "--imbalance-ratio", "n_max": "--imbalance-ratio", "limit": "--limit",
                   "resolution": "--resolution", "batch_size": "--batch-size", "device": "--device",
                   "num_workers": "--num-workers", "backbone": "--backbone", "weights": "--weights",
                   "url": "--weights-url", "cache_dir": "--out", "arch": "--backbone"}


def features_flagged(message: str) -> str:
    """A library error in this command's terms: ``name=value`` becomes ``--flag value``; a message
    that names a parameter otherwise gets that parameter's flag in front."""
    message = one_line(message)
    message = message.replace("load it with trust_checkpoint=True", "pass --trust-checkpoint")
    for name, flag in FEATURES_FLAGS.items():
        message = message.replace(f"{name}= ({flag})", flag)   # "needs root= (--root)" → "needs --root"
        if flag not in message:
            message = re.sub(rf"(?<![\w-]){name}=(?=\S)", f"{flag} ", message)
    if not message.startswith("--"):   # lead with the flag the message is about
        needed = re.findall(r"needs (--[a-z][\w-]*)", message)
        found = [(m.start(), flag) for name, flag in FEATURES_FLAGS.items()
                 for m in [re.search(rf"(?<![\w-]){name}(?![\w-])", message)] if m]
        flags = re.findall(r"(?<![\w-])--[a-z][\w-]*", message)
        lead = needed[0] if needed else min(found)[1] if found else flags[0] if flags else None
        if lead:
            message = f"{lead}: {message}"
    return message


def _check_features_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before images are read or a model is loaded."""
    from alkit.datasets import default_cache_dir
    from alkit.io import check_output_dir

    if args.limit is not None and args.limit < 1:
        raise _FeaturesUsageError(f"--limit must be a positive number of images, got {args.limit}")
    if args.threads is not None and args.threads < 1:
        raise _FeaturesUsageError(f"--threads must be ≥ 1, got {args.threads}")
    if args.dataset == "images" and args.split != "train":
        raise _FeaturesUsageError(f"--split: a folder of unlabelled images (--dataset images) is one pool, split train; "
                          f"got {args.split}")
    if args.split == "val" and args.dataset in FEATURES_NO_VAL_SPLIT:
        raise _FeaturesUsageError(f"--split: {args.dataset} has the splits train and test only (no val split); "
                          "pass --split test for its labelled evaluation set")
    _features_long_tail(args)   # the long-tail flags, checked before the paths
    if args.trust_checkpoint and args.backbone == "efficientnet_lite0":
        raise _FeaturesUsageError("--trust-checkpoint: applies to the --weights of simclr_resnet18_cifar, moco_v2_resnet50 "
                          "and torchvision:<arch>; efficientnet_lite0 reads tensors-only checkpoints")
    if args.trust_checkpoint and not (args.weights or args.weights_url):
        raise _FeaturesUsageError("--trust-checkpoint: applies to a checkpoint given with --weights or --weights-url")
    if args.root is not None:
        root = Path(args.root).expanduser()
        if not root.exists():
            raise _FeaturesUsageError(f"--root: {args.root} does not exist; pass the data folder or its archive "
                              "(.tar.gz, .tgz, .tar, .zip)")
        if root.is_file() and root.stat().st_size == 0:
            raise _FeaturesUsageError(f"--root: {args.root} is empty (0 bytes): an interrupted copy or download? "
                              "Copy the archive again")
    if args.weights is not None and not Path(args.weights).expanduser().is_file():
        raise _FeaturesUsageError(f"--weights: file not found: {args.weights}")
    if args.split_file is not None and not Path(args.split_file).expanduser().exists():
        raise _FeaturesUsageError(f"--split-file: {args.split_file} does not exist")
    # The cache is written only after all the compute: check it first.
    check_output_dir(Path(args.out).expanduser() if args.out else default_cache_dir(),
                     "--out" if args.out else "--out (default cache $ALKIT_CACHE or ~/.cache/alkit)")


def run_features(args: argparse.Namespace) -> dict:
    import torch

    from alkit.features import get_features

    _check_features_arguments(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    options = {"url": args.weights_url} if args.weights_url else {}
    if args.trust_checkpoint:
        options["trust_checkpoint"] = True
    result = get_features(args.dataset, args.root, args.split, args.backbone, limit=args.limit, lt=_features_long_tail(args),
                          resolution=args.resolution, batch_size=args.batch_size, device=args.device,
                          cache_dir=args.out, split_file=args.split_file, weights=args.weights,
                          backbone_options=options or None, num_workers=args.num_workers, progress=not args.quiet,
                          shard_size=args.shard_size)
    return {"directory": str(result.directory), "features": str(result.features_path),
            "paths": str(result.directory / "paths.txt") if result.paths is not None else None,
            "labels": str(result.labels_path), "indices": str(result.directory / "indices.npy"),
            "meta": str(result.meta_path), "n": len(result), "dim": int(result.features.shape[1]),
            "num_classes": result.num_classes, "resolution": result.meta["resolution"],
            "key": result.meta["key"]}


def features_main(argv: list[str] | None = None) -> int:
    """``python -m alkit features``: extract (or find in the cache) frozen features of a data set split;
    prints where ``features.npy`` (float16, N × D), ``labels.npy`` and ``meta.json`` are."""
    try:
        args = build_features_parser().parse_args(argv)
        # Progress messages (archive extraction, …) at INFO; --quiet keeps warnings and errors only.
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        _check_features_arguments(args)
        paths = run_features(args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except _FeaturesUsageError as exc:
        print(f"{FEATURES_PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ConnectionError) as exc:
        full = disk_full_message(exc, "--out")
        if full is not None:   # the cache's disk: the folder, its free space and the fix
            message = full
        elif isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.strerror:
            where = f" {exc.filename}" if exc.filename else ""
            message = f"cannot read or write{where}: {exc.strerror}"
        else:
            message = features_flagged(str(exc) or type(exc).__name__)
            if "cannot read image " in message and not message.startswith("--"):
                message = f"--root: {message}"   # an image file of the data set (possibly via a DataLoader worker)
        print(f"{FEATURES_PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{FEATURES_PROG}: interrupted; run the same command again to resume from the completed shards",
              file=sys.stderr)
        return 130
    from alkit.distributed import is_main_process

    if not is_main_process():   # under torchrun: rank 0 alone prints the result
        return 0
    for note in _features_notes(args):   # after the work, so that an error stays the only line on stderr
        print(note, file=sys.stderr)
    if args.json:
        print(json.dumps(paths, indent=2))
    else:
        print(f"entry:    {paths['directory']}  (pass it as --features to `python -m alkit select`)")
        print(f"features: {paths['features']}  ({paths['n']} × {paths['dim']} float16, "
              f"{paths['resolution']} px input)")
        classes = f"{paths['num_classes']} classes" if paths["num_classes"] else "unlabelled: every label -1"
        print(f"labels:   {paths['labels']}  ({classes})")
        if paths["paths"]:
            print(f"paths:    {paths['paths']}  (each row's image, relative to the folder it was read from)")
        print(f"indices:  {paths['indices']}")
        print(f"meta:     {paths['meta']}")
    return 0


# --------------------------------------------------------------------------------------------
# `run` (a sweep over arrays) and `python -m alkit.experiment` (the configured sweeps)
# --------------------------------------------------------------------------------------------

EXPERIMENT_PROG = "python -m alkit.experiment"

#: Python parameter names in library errors → the flags of ``python -m alkit.experiment``.
EXPERIMENT_FLAGS = {"data_root": "--data-root", "cache_dir": "--cache-dir", "weights": "--weights",
                    "dataset": "--dataset", "scale": "--scale", "source": "--source", "rounds": "--rounds",
                    "seeds": "--seeds", "strategies": "--strategies", "results_dir": "--out"}


def _experiment_message(exc: BaseException) -> str:
    full = disk_full_message(exc, "--cache-dir")
    if full is not None:
        return full
    message = flag_names(one_line(exc), EXPERIMENT_FLAGS)
    # The checkpoint loader's hint names a Python keyword this command does not have.
    return message.replace(
        "if you trust it, load it with trust_checkpoint=True",
        "if you trust it, extract the features first with `python -m alkit features … --weights FILE "
        "--trust-checkpoint` (the sweep then finds them in the cache)")


def experiment_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.experiment``: run (or resume) configured sweeps."""
    from alkit.io import check_output_dir
    from alkit.runs import run_configured_sweep
    from alkit.studies import DATASETS, DEFAULT_BACKBONE, SCALE_NAMES, SCALES, SOURCES, sweep_config

    parser = OneLineParser(
        prog=EXPERIMENT_PROG, formatter_class=HelpFormatter,
        description="Run (or resume) configured active-learning sweeps; one result file per run.")
    parser.add_argument("--scale", choices=SCALE_NAMES, required=True)
    parser.add_argument("--dataset", action="append", required=True,
                        help=f"one of {', '.join(DATASETS)} (repeat the flag for several, or 'all')")
    parser.add_argument("--out", required=True, help="results folder; runs go to OUT/<dataset>/")
    parser.add_argument("--strategies", help="comma-separated names (default: the scale's list)")
    parser.add_argument("--seeds", help="comma-separated non-negative integers (default: the scale's seeds)")
    parser.add_argument("--rounds", type=non_negative_int, help="query rounds (default: the scale's)")
    parser.add_argument("--source", choices=SOURCES, default="auto")
    parser.add_argument("--data-root", help="folder holding the archives (default $ALKIT_DATA or ../shared/data)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--weights", help="checkpoint file of the backbone (the paper's SimCLR / MoCo v2 weights)")
    parser.add_argument("--cache-dir", help="feature cache (default ~/.cache/alkit)")
    parser.add_argument("--no-extract", action="store_true",
                        help="fail instead of extracting features that are not cached yet")
    parser.add_argument("--show", action="store_true", help="print the configuration and exit")
    parser.add_argument("--jobs", type=positive_int, default=1, help="local worker processes (--executor local)")
    _executor_arguments(parser)
    args = parser.parse_args(argv)
    executor, slurm = _executor_choice(args, parser)
    try:
        if executor in ("local", "slurm"):
            moved = [flag for flag, value in (("--rounds", args.rounds), ("--weights", args.weights),
                                              ("--cache-dir", args.cache_dir)) if value is not None]
            if moved or args.backbone != DEFAULT_BACKBONE:
                raise UsageError(f"{(moved or ['--backbone'])[0]}: the {executor} executor runs the scale's "
                                 "configured schedule on cached default features; drop it or use --executor inline")
        if "all" in args.dataset and len(args.dataset) > 1:
            raise UsageError("--dataset: 'all' already means every data set of the scale; give it alone")
        datasets = list(SCALES[args.scale]) if args.dataset == ["all"] else args.dataset
        twice = [d for d in dict.fromkeys(datasets) if datasets.count(d) > 1]
        if twice:
            raise UsageError(f"--dataset: {twice[0]!r} is given twice; give each data set once")
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
        strategies = None if args.strategies is None else parse_strategies(args.strategies)
        overrides = dict(seeds=seeds, strategies=strategies, rounds=args.rounds)
        configs = {}
        for dataset in datasets:   # every data set checked before the first one runs
            try:
                configs[dataset] = sweep_config(dataset, args.scale, **overrides)
            except ValueError as exc:
                raise UsageError(f"--dataset: {exc}") from None
        if args.data_root is not None and not Path(args.data_root).expanduser().exists():
            raise UsageError(f"--data-root: {args.data_root} does not exist; pass the folder holding the archives")
        if args.weights is not None and not Path(args.weights).expanduser().is_file():
            raise UsageError(f"--weights: file not found: {args.weights}")
        if not args.show:
            check_output_dir(args.out, "--out")
            if args.cache_dir is not None:
                check_output_dir(args.cache_dir, "--cache-dir")
        for dataset in datasets:
            config = configs[dataset]
            print(f"[{dataset} @ {args.scale}] {json.dumps(config.as_dict(), default=str)}", flush=True)
            if args.show:
                continue
            started = time.perf_counter()
            if executor in ("local", "slurm"):
                from alkit.launch import run_phases

                run_phases([(dataset, strategies, seeds)], args.scale, args.out, source=args.source,
                           data_root=args.data_root, extract=not args.no_extract, jobs=args.jobs, executor=executor,
                           slurm=slurm)
                continue
            frame = run_configured_sweep(dataset, args.scale, args.out, source=args.source,
                                         data_root=args.data_root, backbone=args.backbone,
                                         cache_dir=args.cache_dir, extract=not args.no_extract,
                                         weights=args.weights, **overrides)
            print(f"[{dataset}] {frame[['strategy', 'seed']].drop_duplicates().shape[0]} runs, "
                  f"{time.perf_counter() - started:.0f} s -> {Path(args.out) / dataset}", flush=True)
    except (ValueError, OSError) as exc:
        print(f"{EXPERIMENT_PROG}: error: {_experiment_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{EXPERIMENT_PROG}: interrupted; finished runs are saved: run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


def _pool_schedule_checks(train_labels: np.ndarray, num_classes: int, args: argparse.Namespace,
                          seeds: list[int]) -> None:
    """Refuse, before any compute, a schedule the pool cannot serve: too few points for the
    initial set and the rounds, or a seed whose random initial set holds one class only."""
    from alkit.loop import first_round_split

    counts = np.bincount(train_labels, minlength=num_classes)
    n_val = int(np.minimum(args.val_per_class, counts // 2).sum())
    n_out = int(train_labels.size) - n_val
    val_note = f" ({n_val} held out by --val-per-class {args.val_per_class})" if n_val else ""
    if args.initial > n_out:
        raise UsageError(f"--initial: {args.initial} initial points, but the pool has only {n_out} outside "
                         f"validation{val_note}; lower --initial")
    need = args.initial + args.rounds * args.budget
    if need > n_out:
        raise UsageError(f"--budget: --initial {args.initial} + --rounds {args.rounds} × --budget {args.budget} = "
                         f"{need} points, but the pool has only {n_out} outside validation{val_note}: the last "
                         "rounds could not use their budget; lower --budget or --rounds")
    for seed in seeds:
        _, initial = first_round_split(train_labels, num_classes, args.val_per_class, args.initial, seed)
        present = np.unique(train_labels[initial])
        if present.size < 2:
            raise UsageError(f"--initial: the random initial set of seed {seed} ({args.initial} points) holds class "
                             f"{int(present[0])} only, and a head cannot be trained on one class; raise --initial")


def run_from_arrays(args: argparse.Namespace) -> int:
    """``python -m alkit run``: check everything, load arrays, run the sweep, write the CSV of all rows.

    Every check (lists, output path, arrays, classes, schedule) comes before the compute, so bad
    input never costs a sweep."""
    from alkit.io import array_fingerprint, atomic_write, check_output_file
    from alkit.pool import check_features
    from alkit.runs import run_sweep

    strategies = parse_strategies(args.strategies, allow_images=False)
    seeds = parse_seeds(args.seeds)
    probe = probe_config(args)
    check_output_file(args.out, "--out")
    if (args.test_features is None) != (args.test_labels is None):
        raise UsageError("--test-features and --test-labels must be given together")
    if args.test_features is None and not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction: must lie in (0, 1), got {args.test_fraction}")
    x = _load_array(args.features, "--features")
    if x.ndim != 2:
        raise UsageError(f"--features: must be a 2-D (N, D) array, got shape {x.shape}")
    check_features(x, "--features")
    y = np.asarray(_load_array(args.labels, "--labels"))
    if y.shape != (x.shape[0],):
        raise UsageError(f"--labels: must hold one label per row of --features ({x.shape[0]}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"--labels: must hold integer classes, got dtype {y.dtype}")
    if (y == -1).any():
        raise UsageError(f"--labels: {int((y == -1).sum())} points are -1 (unlabelled), but `run` needs the true "
                         "class of every pool point: it simulates labelling by revealing them when queried; for a "
                         "partly labelled pool choose the next batch with `python -m alkit select`")
    if y.min() < 0:
        raise UsageError(f"--labels: classes must be ≥ 0, found {y.min()}")
    num_classes = args.num_classes or int(y.max()) + 1
    if y.max() >= num_classes:
        raise UsageError(f"--num-classes: {num_classes} is too small: --labels holds class {y.max()}; drop "
                         "--num-classes or raise it")
    if args.test_features is None:
        order = np.random.default_rng(12345).permutation(x.shape[0])
        n_test = int(round(args.test_fraction * x.shape[0]))
        if not 0 < n_test < x.shape[0]:
            raise UsageError(f"--test-fraction: {args.test_fraction} of {x.shape[0]} points leaves "
                             f"{n_test} for testing and {x.shape[0] - n_test} for the pool; both need some")
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        tx, ty, x, y = x[test], y[test], x[train], y[train]
        where = "the pool (after holding out --test-fraction)"
    else:
        tx = _load_array(args.test_features, "--test-features")
        if tx.ndim != 2 or tx.shape[1] != x.shape[1]:
            raise UsageError(f"--test-features: must be (M, {x.shape[1]}) like --features, got shape {tx.shape}")
        check_features(tx, "--test-features")
        ty = np.asarray(_load_array(args.test_labels, "--test-labels"))
        if ty.shape != (tx.shape[0],) or not np.issubdtype(ty.dtype, np.integer):
            raise UsageError(f"--test-labels: must hold one integer class per row of --test-features "
                             f"({tx.shape[0]}), got {ty.dtype} {ty.shape}")
        if ty.min() < 0 or ty.max() >= num_classes:
            raise UsageError(f"--test-labels: classes must lie in [0, {num_classes}), found [{ty.min()}, {ty.max()}]"
                             + (" (-1 is not a class: every test point needs its label)" if ty.min() == -1 else ""))
        where = "--labels"
    present = np.unique(y)
    if present.size < 2:
        raise UsageError(f"--labels: every point of {where} has class {int(present[0])}; active learning needs two "
                         "classes or more")
    missing = np.setdiff1d(np.arange(num_classes), present)
    if missing.size and not args.allow_missing_classes:
        shown = ", ".join(map(str, missing[:5])) + (", …" if missing.size > 5 else "")
        raise UsageError(f"--num-classes: {missing.size} of the {num_classes} classes have no point in {where}: "
                         f"class {shown}; they would enter the metrics as classes never predicted right. Give "
                         "--num-classes the classes the data has, or pass --allow-missing-classes if the pool "
                         "truly lacks them")
    _pool_schedule_checks(y, num_classes, args, seeds)

    # Every finished (strategy, seed) run is kept beside --out, so the same command run again (after an
    # interruption, or with more seeds) resumes: runs with the same settings and data are loaded.
    runs_dir = Path(args.out).with_name(Path(args.out).name + ".runs")
    data_meta = {"train_fingerprint": array_fingerprint(x, y), "test_fingerprint": array_fingerprint(tx, ty),
                 "num_classes": num_classes}
    frame = run_sweep(x, y, tx, ty, num_classes, strategies, seeds, initial_size=args.initial,
                      round_budget=args.budget, rounds=args.rounds, val_per_class=args.val_per_class,
                      probe=probe, dataset=Path(args.features).stem, progress=not getattr(args, "quiet", False),
                      out_dir=runs_dir, data_meta=data_meta, allow_missing_classes=args.allow_missing_classes)
    try:
        atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    except OSError as exc:   # checked before the sweep, yet the disk may fill: keep the rows somewhere
        fd, rescue = tempfile.mkstemp(prefix="alkit-run-", suffix=".csv")
        os.close(fd)
        frame.to_csv(rescue, index=False)
        raise UsageError(f"--out: cannot write {args.out} ({exc.strerror or exc}); the {len(frame)} rows were "
                         f"saved to {rescue} instead") from None
    print(f"wrote {len(frame)} rows -> {args.out} (each run kept in {runs_dir}/: the same command resumes)")
    print(run_summary(frame))
    return 0


def run_summary(frame) -> str:
    """A few lines saying which strategy did better: per strategy the final top-1 and, when random
    ran too, the area under the top-1 curve minus random's, paired by seed, with its 95 % interval."""
    from alkit.report import summary_table

    table = summary_table(frame.assign(dataset="run"))
    lines = ["strategy            seeds  final top-1  Δ AUC vs random [95 %]"]
    for r in table.itertuples(index=False):
        diff = ("(baseline)" if r.strategy == "random" else "" if not np.isfinite(r.auc_diff) else
                f"{r.auc_diff:+.4f} [{r.auc_diff_low:+.4f}, {r.auc_diff_high:+.4f}] {r.outcome}")
        lines.append(f"{r.strategy:<19} {r.seeds:>5}  {r.final_top1:>11.4f}  {diff}")
    if "random" not in set(table["strategy"]):
        lines.append("(add random to --strategies for the difference from random)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# `python -m alkit.reproduce` (notebooks, sweeps, the class-count experiment)
# --------------------------------------------------------------------------------------------

def _shown(path: str | Path) -> str:   # for reproduce_main's last line
    """``path`` relative to the repository when it lies inside it, with a trailing slash."""
    from alkit.reproduce import REPO

    path = Path(path)
    full = path if path.is_absolute() else REPO / path
    try:
        return f"{full.resolve().relative_to(REPO)}/"
    except ValueError:
        return f"{path}/"


def _csv_type(cast, flag: str, what: str):
    """An argparse type: comma-separated ``what``, each once."""
    def parse(text: str) -> list:
        try:
            return parse_list(text, flag, what, cast)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
    parse.__name__ = what   # argparse names the type in its message
    return parse


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of minutes, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor and the SLURM resources of a sweep (alkit.launch)."""
    parser.add_argument("--executor", choices=("inline", "local", "slurm"), default=None,
                        help="where the runs are computed: this process (inline), --jobs local processes through "
                             "submitit (local), or one SLURM job per run (slurm: submits and returns; the same "
                             "command submits what is still missing) (default: inline for --jobs 1, else local)")
    slurm = parser.add_argument_group("SLURM (with --executor slurm)")
    slurm.add_argument("--slurm-partition", help="partition to submit to (default: the cluster's)")
    slurm.add_argument("--slurm-account", help="account to charge")
    slurm.add_argument("--slurm-qos", help="quality of service")
    slurm.add_argument("--slurm-constraint", help="node features, e.g. a GPU type")
    slurm.add_argument("--slurm-gpus", type=non_negative_int, default=0, help="GPUs per job")
    slurm.add_argument("--slurm-cpus", type=positive_int, default=4, help="CPUs per job")
    slurm.add_argument("--slurm-mem-gb", type=positive_int, default=32, help="memory per job in GB")
    slurm.add_argument("--slurm-time-min", type=positive_int, default=240,
                       help="time limit per job in minutes (a job that reaches it is requeued and resumes)")
    slurm.add_argument("--slurm-array-parallelism", type=positive_int, default=64,
                       help="jobs of the array running at once")


def _executor_choice(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """(executor, SlurmOptions or None) from the flags of :func:`_executor_arguments`."""
    from alkit.launch import SlurmOptions

    slurm_flags = [f"--slurm-{name.replace('_', '-')}" for name in ("partition", "account", "qos", "constraint")
                   if getattr(args, f"slurm_{name}")]
    if args.executor != "slurm" and slurm_flags:
        parser.error(f"{slurm_flags[0]} applies with --executor slurm")
    if args.executor == "inline" and args.jobs > 1:
        parser.error(f"--jobs: the inline executor is this one process; --jobs {args.jobs} needs --executor local")
    if args.executor == "slurm" and args.jobs != 1:
        parser.error("--jobs: SLURM runs one job per run (--slurm-array-parallelism sets how many at once)")
    if args.executor != "slurm":
        return args.executor or ("local" if args.jobs > 1 else None), None
    return "slurm", SlurmOptions(partition=args.slurm_partition, account=args.slurm_account, qos=args.slurm_qos,
                                 constraint=args.slurm_constraint, gpus_per_node=args.slurm_gpus,
                                 cpus_per_task=args.slurm_cpus, mem_gb=args.slurm_mem_gb,
                                 timeout_min=args.slurm_time_min, array_parallelism=args.slurm_array_parallelism)


def reproduce_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.reproduce``: the notebooks, the sweeps, the class-count and mechanism experiments."""
    from alkit.reproduce import (COMMITTED_CLASS_COUNT, COMMITTED_MECHANISM, COMMITTED_RUNS, EXECUTED_DIR, REPO,
                                 is_committed, pair_mismatches, reproduce_class_count, reproduce_figures,
                                 reproduce_mechanism,
                                 reproduce_results, sync_pairs)

    prog = "python -m alkit.reproduce"
    parser = OneLineParser(prog=prog, description="Run the companion notebooks and sweeps: what ``make "
                           "reproduce-figures`` / ``reproduce-results`` call.", formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")
    fig = sub.add_parser("figures", help="render figures/tables from committed results (offline)",
                         formatter_class=HelpFormatter)
    fig.add_argument("--results", default=COMMITTED_RUNS, help="the finished runs to render")
    res = sub.add_parser("results", help="run a scale end to end", formatter_class=HelpFormatter)
    res.add_argument("--scale", choices=("smoke", "cpu", "paper"), default="smoke")
    res.add_argument("--source", choices=("auto", "features", "synthetic"), default="auto")
    res.add_argument("--data-root", default=None)
    res.add_argument("--no-extract", action="store_true",
                     help="never extract features: put off a data set until its features are cached")
    res.add_argument("--wait-minutes", type=_non_negative_float, default=0.0,
                     help="with --no-extract: how long to wait for features before giving up")
    res.add_argument("--datasets", type=_csv_type(str, "--datasets", "data set names"), default=None,
                     help="comma-separated: run only these data sets of the scale (default: all)")
    res.add_argument("--strategies", type=_csv_type(str, "--strategies", "strategy names"), default=None,
                     help="comma-separated: run only these strategies (default: all)")
    res.add_argument("--jobs", type=positive_int, default=1,
                     help="worker processes, with cpu count // jobs torch threads each (make: JOBS=2)")
    res.add_argument("--out", default=None, help=f"runs folder (default {COMMITTED_RUNS} for cpu)")
    _executor_arguments(res)
    cc = sub.add_parser("class-count", help="the class-count experiment (Tiny-ImageNet restricted to K classes)",
                        formatter_class=HelpFormatter)
    cc.add_argument("--jobs", type=positive_int, default=1, help="worker processes (make: JOBS=2)")
    cc.add_argument("--out", default=COMMITTED_CLASS_COUNT, help="runs with K < 200 classes")
    cc.add_argument("--sweep-out", default=COMMITTED_RUNS, help="the cpu sweep's runs (K = 200 is its Tiny-ImageNet)")
    cc.add_argument("--class-counts", type=_csv_type(positive_int, "--class-counts", "positive class counts"), default=None)
    cc.add_argument("--strategies", type=_csv_type(str, "--strategies", "strategy names"), default=None)
    cc.add_argument("--seeds", type=_csv_type(seed_int, "--seeds", "non-negative integer seeds"), default=None)
    cc.add_argument("--no-extract", action="store_true", help="fail instead of extracting missing features")
    cc.add_argument("--data-root", default=None)
    me = sub.add_parser("mechanism", help="the mechanism experiment: class balance and composition as knobs "
                        "(claim 1)", formatter_class=HelpFormatter)
    me.add_argument("--jobs", type=positive_int, default=1, help="worker processes (make: JOBS=2)")
    me.add_argument("--out", default=COMMITTED_MECHANISM, help="the experiment's own runs")
    me.add_argument("--class-count-out", default=COMMITTED_CLASS_COUNT,
                    help="the class-count runs it shares (plain strategies at the paper's schedule, K < 200)")
    me.add_argument("--sweep-out", default=COMMITTED_RUNS,
                    help="the cpu sweep's runs it shares (plain strategies on Tiny-ImageNet, K = 200, and CIFAR-10)")
    me.add_argument("--no-extract", action="store_true", help="fail instead of extracting missing features")
    me.add_argument("--data-root", default=None)
    _executor_arguments(me)
    ft = sub.add_parser("finetune", help="the fine-tuning sweep of a scale (alkit.finetune.FINETUNE_SCALES)",
                        formatter_class=HelpFormatter)
    ft.add_argument("--scale", choices=("gpu", "paper", "cpu", "smoke"), default="gpu",
                    help="gpu: CIFAR-10, 5 strategies x 3 seeds, ResNet-18 from scratch (one GPU); paper: the "
                         "authors' schedules (--weights); cpu / smoke: a 600-image slice (minutes / seconds)")
    ft.add_argument("--out", default=None, help="runs folder (default results/runs/finetune-<scale>)")
    ft.add_argument("--datasets", type=_csv_type(str, "--datasets", "data set names"), default=None,
                    help="comma-separated: only these data sets of the scale (paper: cifar10,cifar10-lt or imagenet)")
    ft.add_argument("--weights", default=None, help="the backbone's self-supervised checkpoint (paper scale)")
    ft.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ft.add_argument("--data-root", default=None,
                    help="folder holding the data set's archive or folder (default $ALKIT_DATA or ../shared/data)")
    ft.add_argument("--source", choices=("auto", "synthetic"), default="auto",
                    help="synthetic: generated class-coloured images instead of the data set (tests)")
    sub.add_parser("sync", help="write notebooks/*.ipynb from notebooks/*.py")
    sub.add_parser("check", help="check that each .py/.ipynb pair agrees")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    started = time.perf_counter()
    where = ""
    try:
        # Output folders are checked before any extraction or run starts (a file, read-only, not creatable).
        from alkit.io import check_output_dir

        outputs = {"results": [("--out", args.out if args.command == "results" and args.out else None)],
                   "class-count": [("--out", getattr(args, "out", None)), ("--sweep-out", getattr(args, "sweep_out", None))],
                   "mechanism": [("--out", getattr(args, "out", None)), ("--sweep-out", getattr(args, "sweep_out", None)),
                                 ("--class-count-out", getattr(args, "class_count_out", None))]}
        for flag, folder in outputs.get(args.command, []):
            if folder is not None:
                check_output_dir(folder if Path(folder).is_absolute() else REPO / folder, flag)
        if args.command == "sync":
            for path in sync_pairs():
                print("wrote", path.relative_to(REPO))
        elif args.command == "check":
            problems = pair_mismatches()
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        elif args.command == "finetune":
            from alkit.finetune import check_scale_weights, finetune_scale, resolve_device
            from alkit.reproduce import reproduce_finetune

            flags = {"weights": "--weights", "datasets": "--datasets", "device": "--device",
                     "data_root": "--data-root", "root": "--data-root", "scale": "--scale"}
            try:   # every argument checked before any image is read
                check_scale_weights(finetune_scale(args.scale, args.datasets), args.weights, args.scale)
                resolve_device(args.device)
            except ValueError as exc:
                ft.error(flag_names(one_line(exc), flags))
            try:
                out = reproduce_finetune(args.scale, args.out, args.data_root, args.weights, args.device,
                                         args.datasets, args.source)
            except (ValueError, FileNotFoundError) as exc:   # no data where --data-root points, or offline
                raise ValueError(flag_names(one_line(exc), flags)) from None
            where = f"runs in {_shown(out)}"
        elif args.command == "figures":
            results = Path(args.results)
            if not (results if results.is_absolute() else REPO / results).is_dir():
                fig.error(f"argument --results: folder {args.results} does not exist; pass the folder of "
                             f"finished runs (default {COMMITTED_RUNS})")
            executed = reproduce_figures(args.results)
            if not executed:
                where = f"no notebook ran: no finished runs under {args.results}"
            elif is_committed(args.results):
                where = (f"figures in {_shown('results/figures')}, tables in {_shown('results/tables')} "
                         f"(executed notebooks in {_shown(EXECUTED_DIR / 'figures')})")
            else:   # another runs folder: results/ keeps the committed figures
                where = (f"figures, tables and executed notebooks in {_shown(executed[0].parent)} "
                         "(results/ is left as it is)")
        elif args.command == "class-count":
            from alkit import class_count

            for k in args.class_counts or ():   # before any data is loaded
                if not 2 <= k <= class_count.FULL_CLASSES:
                    cc.error(f"argument --class-counts: {k} classes: each must lie in [2, {class_count.FULL_CLASSES}] "
                             f"(the classes of {class_count.SOURCE_DATASET})")
            if args.strategies:
                args.strategies = parse_strategies(",".join(args.strategies), "--strategies", allow_images=False)
            reproduce_class_count(args.out, args.sweep_out, args.jobs, not args.no_extract, args.class_counts,
                                  args.strategies, args.seeds, data_root=args.data_root)
            where = f"runs in {_shown(args.out)}"
            if Path(args.out).resolve() == (REPO / COMMITTED_CLASS_COUNT).resolve():
                where += f"; table in {_shown('results/tables')}, figure in {_shown('results/figures')}"
        elif args.command == "mechanism":
            executor, slurm = _executor_choice(args, me)
            reproduce_mechanism(args.out, args.class_count_out, args.sweep_out, args.jobs, not args.no_extract,
                                data_root=args.data_root, executor=executor, slurm=slurm)
            where = f"runs in {_shown(args.out)}"
            if Path(args.out).resolve() == (REPO / COMMITTED_MECHANISM).resolve():
                where += f"; tables in {_shown('results/tables')}, figure in {_shown('results/figures')}"
        else:
            if args.scale == "smoke" and (args.datasets or args.strategies):
                res.error("--datasets / --strategies apply to the cpu and paper sweeps, not to smoke")
            if args.scale == "smoke" and (args.jobs != 1 or args.out):
                res.error("--jobs / --out apply to the cpu and paper sweeps, not to smoke")
            if args.scale == "smoke" and args.executor:
                res.error("--executor applies to the cpu and paper sweeps, not to smoke")
            executor, slurm = _executor_choice(args, res)
            reproduce_results(args.scale, args.source, args.data_root, extract=not args.no_extract,
                              wait_seconds=60 * args.wait_minutes, datasets=args.datasets, strategies=args.strategies,
                              jobs=args.jobs, out=args.out, executor=executor, slurm=slurm)
            if args.scale == "smoke":
                where = (f"runs, figures and tables in {_shown('notebooks/executed/smoke')} "
                         "(results/ is left as it is)")
            else:
                out = args.out or (COMMITTED_RUNS if args.scale == "cpu" else f"results/runs/{args.scale}")
                where = f"runs in {_shown(out)}"
                if args.scale == "cpu" and Path(out).resolve() == (REPO / COMMITTED_RUNS).resolve():
                    where += f"; figures in {_shown('results/figures')}, tables in {_shown('results/tables')}"
    except (ValueError, FileNotFoundError) as exc:   # FileNotFoundError: no data where the scale needs it
        hint = "; pass --data-root (your copy's folder)" if isinstance(exc, FileNotFoundError) else ""
        print(f"{prog} {args.command}: error: {one_line(exc)}{hint}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.0f} s" + (f": {where}" if where else ""))
    return 0


# --------------------------------------------------------------------------------------------
# `python -m alkit.demo`, `python -m alkit.samples`, `python -m alkit.imagenet_pool`
# --------------------------------------------------------------------------------------------

def demo_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.demo``: every strategy on two synthetic pools, rows and figures."""
    parser = OneLineParser(prog="python -m alkit.demo", formatter_class=HelpFormatter,
                           description="A short demo on synthetic pools: every strategy, accuracy and imbalance "
                                       "against labels.")
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated non-negative integer seeds")
    parser.add_argument("--rounds", type=non_negative_int, default=4, help="query rounds")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        from alkit.demo import write_demo

        paths = write_demo(args.out, tuple(seeds), args.rounds)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit.demo: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print("wrote", ", ".join(str(p) for p in paths))
    return 0


def samples_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.samples``: rebuild the shipped feature sample from the feature cache."""
    parser = OneLineParser(prog="python -m alkit.samples", formatter_class=HelpFormatter,
                           description="Rebuild the shipped feature sample from the cached Tiny-ImageNet features.")
    parser.add_argument("--out", default=None, help="where to write it (default: the shipped file)")
    parser.add_argument("--data-root", default=None, help="folder holding tiny-imagenet-200.tar.gz")
    args = parser.parse_args(argv)
    from alkit.samples import SAMPLE_FILE, rebuild_sample

    try:
        path = rebuild_sample(args.out or SAMPLE_FILE, args.data_root)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit.samples: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def imagenet_pool_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.imagenet_pool``: write (or find) a synthetic pool of ImageNet's shape."""
    from alkit.imagenet_pool import (IMAGENET_CLASSES, IMAGENET_FEATURE_DIM, IMAGENET_TRAIN_SIZE, ImageNetPoolSpec,
                                     make_imagenet_pool)

    parser = OneLineParser(prog="python -m alkit.imagenet_pool", formatter_class=HelpFormatter,
                           description="A synthetic pool of ImageNet's shape (features, labels, test set) on disk.")
    parser.add_argument("--out", default=None, help="output folder (default: ~/.cache/alkit/imagenet_like/<spec>)")
    parser.add_argument("--n-total", type=positive_int, default=IMAGENET_TRAIN_SIZE, help="training pool size")
    parser.add_argument("--num-classes", type=positive_int, default=IMAGENET_CLASSES)
    parser.add_argument("--dim", type=positive_int, default=IMAGENET_FEATURE_DIM, help="feature dimension")
    parser.add_argument("--n-test-per-class", type=positive_int, default=50)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        spec = ImageNetPoolSpec(n_total=args.n_total, num_classes=args.num_classes, dim=args.dim,
                                n_test_per_class=args.n_test_per_class, seed=args.seed)
        pool = make_imagenet_pool(args.out, spec, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit.imagenet_pool: error: {flag_names(one_line(exc), IMAGENET_POOL_FLAGS)}",
              file=sys.stderr)
        return 2
    print(pool.path)
    return 0


#: ImageNetPoolSpec's fields → the flags of ``python -m alkit.imagenet_pool``.
IMAGENET_POOL_FLAGS = {"n_total": "--n-total", "num_classes": "--num-classes", "n_test_per_class": "--n-test-per-class",
                       "dim": "--dim", "seed": "--seed"}


# --------------------------------------------------------------------------------------------
# `finetune`: the fine-tuning regime (alkit.finetune)
# --------------------------------------------------------------------------------------------

FINETUNE_HELP = "fine-tune the network end to end each round (the paper's other regime) and write CSV"


def add_finetune_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of ``python -m alkit finetune`` (the values go to :func:`finetune_command`)."""
    from alkit.finetune import NETWORK_NAMES, PRESETS

    parser.add_argument("--dataset", required=True,
                        help="cifar10, cifar10-lt, tiny-imagenet, imagenet, imagefolder (a folder with "
                             "train/<class>/ and test/<class>/), …")
    parser.add_argument("--root", help="the data set's folder or archive (cifar10: downloaded when absent)")
    parser.add_argument("--strategies", default="random,margin,base", help="comma-separated names (vaal included)")
    parser.add_argument("--seeds", default="0", help="comma-separated non-negative integer seeds")
    parser.add_argument("--initial", required=True, type=positive_int, help="random initial labelled images")
    parser.add_argument("--budget", required=True, type=positive_int, help="images per round")
    parser.add_argument("--rounds", required=True, type=non_negative_int, help="query rounds after the initial pool")
    parser.add_argument("--val-per-class", type=non_negative_int, default=None,
                        help="free validation images per class for early stopping (default: 10 %% of the smallest "
                             "class)")
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help="training recipe (default: the data set's paper recipe, else paper_cifar10)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs per round at most (preset's)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="training batch (preset's)")
    parser.add_argument("--backbone", default="resnet18_scratch",
                        help=f"network: {', '.join(NETWORK_NAMES)}")
    parser.add_argument("--weights", help="checkpoint of a pretrained backbone (SimCLR, MoCo v2, torchvision)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--resolution", type=positive_int, default=None,
                        help="input size in px (default: small images' own size, else the backbone's)")
    parser.add_argument("--train-limit", type=positive_int, default=None,
                        help="a class-stratified slice of the training split (CPU runs)")
    parser.add_argument("--test-limit", type=positive_int, default=None, help="a slice of the test split")
    parser.add_argument("--out", required=True, help="CSV of per-round rows; its folder must exist. Each run is "
                                                     "kept in OUT.runs/ with a checkpoint while it runs, so the "
                                                     "same command resumes where it stopped")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def finetune_command(dataset: str, root: str | None, strategies: str, seeds: str, initial: int, budget: int,
                     rounds: int, out: str, *, val_per_class: int | None = None, preset: str | None = None,
                     epochs: int | None = None, batch_size: int | None = None, backbone: str = "resnet18_scratch",
                     weights: str | None = None, device: str | None = None, resolution: int | None = None,
                     train_limit: int | None = None, test_limit: int | None = None, quiet: bool = False,
                     cache_dir: str | None = None, on_epoch=None) -> int:
    """``python -m alkit finetune``: check the input, load the images, run (or resume) every
    (strategy, seed) and write all rows to ``out`` (the columns of ``alkit run``).  Bad input raises
    ValueError naming the flag, before any training."""
    from alkit.finetune import (DATASET_PRESETS, finetune_config, load_pool_images, network_source, ranks_from_env,
                                resolve_device, run_finetune_sweep)
    from alkit.io import atomic_write, check_output_file

    names = parse_strategies(strategies)
    seed_list = parse_seeds(seeds)
    check_output_file(out, "--out")
    if root is not None and not Path(root).expanduser().exists():
        raise UsageError(f"--root: {root} does not exist; pass the data set's folder or archive")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise UsageError(f"--weights: file not found: {weights}")
    try:
        config = finetune_config(preset or DATASET_PRESETS.get(dataset, "paper_cifar10"), epochs=epochs,
                                 batch_size=batch_size)
        dev = resolve_device(device)
    except ValueError as exc:
        raise UsageError(f"--{'device' if 'device' in str(exc) else 'preset'}: {exc}") from None
    try:
        source = network_source(backbone, weights)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"--backbone: {exc}") from None
    train_images, y, test_images, ty, num_classes, meta = load_pool_images(
        dataset, root, network=source, resolution=resolution, train_limit=train_limit, test_limit=test_limit,
        cache_dir=cache_dir)
    counts = np.bincount(y, minlength=num_classes)
    if val_per_class is None:
        val_per_class = max(1, int(counts[counts > 0].min()) // 10)
    n_val = int(np.minimum(val_per_class, counts // 2).sum())
    if initial + rounds * budget > y.size - n_val:
        raise UsageError(f"--budget: --initial {initial} + --rounds {rounds} × --budget {budget} = "
                         f"{initial + rounds * budget} images, but the pool has only {y.size - n_val} outside "
                         f"validation ({n_val} held out by --val-per-class {val_per_class}); lower --budget or --rounds")
    if (counts > 0).sum() < 2:
        raise UsageError("--dataset: the training split holds one class; active learning needs two or more")
    runs_dir = Path(out).with_name(Path(out).name + ".runs")
    frame = run_finetune_sweep(
        train_images, y, test_images, ty, num_classes, names, seed_list, initial_size=initial, round_budget=budget,
        rounds=rounds, val_per_class=val_per_class, network=source, config=config, out_dir=runs_dir,
        dataset=meta["dataset"], data_meta=meta, data_source=f"{backbone} fine-tuned", device=dev,
        progress=not quiet, on_epoch=on_epoch)
    if ranks_from_env().is_main:
        atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"wrote {len(frame)} rows -> {out} (each run kept in {runs_dir}/: the same command resumes)")
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    """``python -m alkit.finetune …`` (the same as ``python -m alkit finetune …``)."""
    parser = add_finetune_arguments(OneLineParser(prog="python -m alkit finetune", description=FINETUNE_HELP,
                                                  formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    try:
        return run_finetune_args(args)
    except ValueError as exc:
        print(f"python -m alkit finetune: error: {flag_names(one_line(exc))}", file=sys.stderr)
        return 2


def run_finetune_args(args: argparse.Namespace) -> int:
    """:func:`finetune_command` with the values of :func:`add_finetune_arguments`'s flags."""
    return finetune_command(args.dataset, args.root, args.strategies, args.seeds, args.initial, args.budget,
                            args.rounds, args.out, val_per_class=args.val_per_class, preset=args.preset,
                            epochs=args.epochs, batch_size=args.batch_size, backbone=args.backbone,
                            weights=args.weights, device=args.device, resolution=args.resolution,
                            train_limit=args.train_limit, test_limit=args.test_limit, quiet=args.quiet)


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {one_line(message)}\n")
        raise SystemExit(2)


_Parser = OneLineParser   # the earlier name


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if (action.required or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.help):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Active learning at the ImageNet scale, on frozen features.",
                           formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser, metavar="COMMAND")

    sub.add_parser("strategies", help="list the registered strategies", formatter_class=HelpFormatter)

    sel = sub.add_parser("select", help="choose the next batch to label", formatter_class=HelpFormatter)
    sel.add_argument("--strategy", required=True, help="a registered name (see `strategies`)")
    sel.add_argument("--features", required=True,
                     help="(N, D) float .npy of frozen features, or a feature-cache entry (the folder `features` "
                          "printed), whose image paths then go into a .csv --out")
    sel.add_argument("--labels", help="(N,) int .npy: class of labelled points, -1 elsewhere; or a .csv of "
                                      "`path,label` lines (a cache entry's paths, class names); none: nothing "
                                      "labelled yet")
    sel.add_argument("--budget", required=True, type=positive_int, help="points to pick")
    sel.add_argument("--seed", required=True, type=seed_int, help="random seed (≥ 0)")
    sel.add_argument("--out", required=True, help="where to write the picks: .npy (int64 indices) or .csv "
                                                  "(rank,index,path: the images to label next); its folder must "
                                                  "exist")
    sel.add_argument("--head", help=".npz with W (C×D) and b (C); otherwise a linear head is trained on the labelled points")
    sel.add_argument("--num-classes", type=positive_int, help="C (default: from --head, else max label + 1)")
    _probe_arguments(sel)
    sel.add_argument("--quiet", action="store_true", help="no progress lines (the result line and errors only)")

    run = sub.add_parser("run", help="run a whole active-learning experiment on a features file and write CSV",
                         formatter_class=HelpFormatter,
                         description="Simulate active learning on a fully labelled pool: each strategy starts from "
                                     "a random initial set and the true label of a point is revealed when it is "
                                     "queried. For a partly labelled pool, choose the next batch with `select`.")
    run.add_argument("--features", required=True, help="(N, D) .npy training pool features")
    run.add_argument("--labels", required=True,
                     help="(N,) .npy true labels of every pool point (revealed when queried; no -1)")
    run.add_argument("--test-features", help="(M, D) .npy test features (default: hold out --test-fraction)")
    run.add_argument("--test-labels", help="(M,) .npy test labels")
    run.add_argument("--test-fraction", type=float, default=0.2, help="test share when no test set is given")
    run.add_argument("--strategies", default="random,margin,base", help="comma-separated names")
    run.add_argument("--seeds", default="0", help="comma-separated non-negative integer seeds")
    run.add_argument("--initial", required=True, type=positive_int, help="random initial labelled points")
    run.add_argument("--budget", required=True, type=positive_int, help="points per round")
    run.add_argument("--rounds", required=True, type=non_negative_int, help="query rounds after the initial pool")
    run.add_argument("--val-per-class", type=non_negative_int, default=0,
                     help="class-balanced validation points per class")
    run.add_argument("--num-classes", type=positive_int, help="C (default: max label + 1)")
    run.add_argument("--allow-missing-classes", action="store_true",
                     help="accept classes in [0, C) that no pool point has (they count in the metrics as "
                          "classes never predicted right)")
    run.add_argument("--out", required=True, help="CSV of per-round rows; its folder must exist. Each finished "
                                                  "run is kept in OUT.runs/, so the same command run again "
                                                  "resumes where it stopped")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _probe_arguments(run)

    add_finetune_arguments(sub.add_parser("finetune", help=FINETUNE_HELP, description=FINETUNE_HELP,
                                          formatter_class=HelpFormatter))

    # Listed for the help only: main() hands `features …` to features_main before parsing.
    sub.add_parser("features", help="extract (or find in the cache) frozen features of an image data set "
                                    f"(`{PROG} features --help`)", add_help=False)
    return parser


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    from alkit.probe import PROBE_PRESETS

    parser.add_argument("--probe", choices=list(PROBE_PRESETS), default="logreg",
                        help="the head trained each time: logreg (converged L2 logistic regression, strength chosen "
                             "on validation), adam_early_stopping (the earlier default), paper (the "
                             "authors' SGD recipe)")
    parser.add_argument("--probe-epochs", type=positive_int, default=None,
                        help="epochs at most, for the early-stopping probes")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "features":
        return cmd_features(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"strategies": cmd_strategies, "select": cmd_select, "run": cmd_run, "finetune": run_finetune_args}
    try:
        return handlers[args.command](args)
    except OSError as exc:   # e.g. the disk filled up while writing --out
        full = disk_full_message(exc)
        if full is not None:
            sys.stderr.write(f"{PROG} {args.command}: error: {full}\n")
            return 2
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"{PROG} {args.command}: error: cannot read or write{where}: "
                         f"{exc.strerror or one_line(exc)}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {flag_names(one_line(exc))}\n")
        return 2
