"""``python -m alkit features``: extract (or find in the cache) frozen features of an image data set."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from alkit.cli.common import (
    HelpFormatter, _Parser, disk_full_message, non_negative_int, one_line, positive_int, flagged,
)


FEATURES_PROG = "python -m alkit features"


class _FeaturesUsageError(Exception):
    pass


class _FeaturesParser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit code 2 is chosen by ``main``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _FeaturesUsageError(message)


def build_features_parser() -> argparse.ArgumentParser:
    from alkit.data.datasets import DATASET_NAMES

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
    from alkit.data.datasets import LongTailSpec

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

#: The parameters that library errors carry (``exc.param``) → the flags of this command.
FEATURES_FLAGS = {"root": "--root", "split_file": "--split-file", "split": "--split", "dataset": "--dataset",
                  "imbalance_ratio": "--imbalance-ratio", "n_max": "--imbalance-ratio", "profile": "--lt-profile",
                  "limit": "--limit", "resolution": "--resolution", "batch_size": "--batch-size",
                  "shard_size": "--shard-size", "device": "--device", "num_workers": "--num-workers",
                  "backbone": "--backbone", "arch": "--backbone", "weights": "--weights", "url": "--weights-url",
                  "trust_checkpoint": "--trust-checkpoint", "cache_dir": "--out"}


def _check_features_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before images are read or a model is loaded."""
    from alkit.data.datasets import default_cache_dir
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

    from alkit.data.features import get_features

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
            message = flagged(exc, FEATURES_FLAGS)
        print(f"{FEATURES_PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{FEATURES_PROG}: interrupted; run the same command again to resume from the completed shards",
              file=sys.stderr)
        return 130
    from alkit.data.distributed import is_main_process

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
