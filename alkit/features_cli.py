"""``python -m alkit features``: extract (or find in the cache) frozen features of a data set split.

Example::

    python -m alkit features --dataset cifar10 --root ../shared/data/cifar10-jpeg.tar.gz --split train
    python -m alkit features --dataset tiny-imagenet --root ../shared/data/tiny-imagenet-200.tar.gz --split test
    python -m alkit features --dataset cifar10-lt --root ../shared/data/cifar10-jpeg.tar.gz --split train \\
        --imbalance-ratio 0.01 --lt-profile exp --lt-seed 0

Prints where ``features.npy`` (float16, N × D), ``labels.npy`` (int64) and ``meta.json`` are.
Bad input: exit code 2 and one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

PROG = "python -m alkit features"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (exit code 2 is chosen by ``main``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from alkit.datasets import DATASET_NAMES

    p = _Parser(prog=PROG, description="Extract frozen features of an image data set split (cached).")
    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="data set name")
    p.add_argument("--root", help="data folder or archive (.tar.gz/.zip); cifar10 without --root uses "
                                  "torchvision's download (online only)")
    p.add_argument("--split", required=True, choices=("train", "test", "val"),
                   help="train or test (tiny-imagenet/imagenet: test = the labelled val set)")
    p.add_argument("--backbone", default="efficientnet_lite0",
                   help="efficientnet_lite0 (default, offline), simclr_resnet18_cifar, moco_v2_resnet50, "
                        "torchvision:<arch>")
    p.add_argument("--weights", help="local checkpoint file (required for all but efficientnet_lite0)")
    p.add_argument("--weights-url", help="download the checkpoint from this URL instead (online only)")
    p.add_argument("--limit", type=int, help="class-stratified slice of N images (quick checks)")
    p.add_argument("--limit-seed", type=int, default=0, help="seed of the --limit slice (default 0)")
    p.add_argument("--out", help="cache directory (default $ALKIT_CACHE or ~/.cache/alkit)")
    p.add_argument("--resolution", type=int, help="backbone input size in px (default: 112 for 32/64-px images "
                                                  "with an ImageNet backbone, the backbone's own size otherwise)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding worker processes (default 0)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--imbalance-ratio", type=float, help="*-lt: ρ = n_min/n_max (default 0.1)")
    p.add_argument("--lt-profile", choices=("exp", "step"), help="*-lt: exponential (default) or step profile")
    p.add_argument("--lt-seed", type=int, help="*-lt: seed of the per-class choice (default 0)")
    p.add_argument("--split-file", help="imagenet-lt: ImageNet_LT_<split>.txt or the folder holding them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the paths as one JSON object")
    return p


def _long_tail(args: argparse.Namespace):
    from alkit.datasets import LongTailSpec

    lt_given = [o for o, v in (("--imbalance-ratio", args.imbalance_ratio), ("--lt-profile", args.lt_profile),
                               ("--lt-seed", args.lt_seed)) if v is not None]
    if not args.dataset.endswith("-lt") or args.dataset == "imagenet-lt":
        if lt_given:
            raise _UsageError(f"{lt_given[0]} applies to cifar10-lt and tiny-imagenet-lt only, not {args.dataset}")
        return None
    return LongTailSpec(0.1 if args.imbalance_ratio is None else args.imbalance_ratio, args.lt_profile or "exp",
                        0 if args.lt_seed is None else args.lt_seed)


def _notes(args: argparse.Namespace) -> list[str]:
    notes = []
    if args.dataset.startswith(("tiny-imagenet", "imagenet")) and args.dataset != "imagenet-lt" and args.split != "train":
        notes.append(f"note: the {args.dataset} test split is the labelled val set")
    if args.dataset in ("cifar10-lt", "tiny-imagenet-lt") and args.split != "train":
        notes.append("note: the long-tailed profile cuts the training split; the test split stays balanced")
    return notes


def run(args: argparse.Namespace) -> dict:
    import torch

    from alkit.features import get_features

    if args.threads is not None:
        if args.threads < 1:
            raise _UsageError(f"--threads must be ≥ 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        raise _UsageError(f"--limit must be a positive number of images, got {args.limit}")
    options = {"url": args.weights_url} if args.weights_url else {}
    result = get_features(args.dataset, args.root, args.split, args.backbone, limit=args.limit, lt=_long_tail(args),
                          resolution=args.resolution, batch_size=args.batch_size, device=args.device,
                          cache_dir=args.out, split_file=args.split_file, weights=args.weights,
                          backbone_options=options or None, num_workers=args.num_workers, progress=not args.quiet)
    return {"directory": str(result.directory), "features": str(result.features_path),
            "labels": str(result.labels_path), "indices": str(result.directory / "indices.npy"),
            "meta": str(result.meta_path), "n": len(result), "dim": int(result.features.shape[1]),
            "num_classes": result.num_classes, "resolution": result.meta["resolution"],
            "key": result.meta["key"]}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m alkit features``; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = build_parser().parse_args(argv)
        if args.limit is not None and args.limit < 1:
            raise _UsageError(f"--limit must be a positive number of images, got {args.limit}")
        for note in _notes(args):
            print(note, file=sys.stderr)
        paths = run(args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (_UsageError, ValueError, FileNotFoundError, ConnectionError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume from the completed shards",
              file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(paths, indent=2))
    else:
        print(f"features: {paths['features']}  ({paths['n']} × {paths['dim']} float16, "
              f"{paths['resolution']} px input)")
        print(f"labels:   {paths['labels']}  ({paths['num_classes']} classes)")
        print(f"indices:  {paths['indices']}")
        print(f"meta:     {paths['meta']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
