"""``python -m alkit finetune``: active learning with the network fine-tuned each round."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from alkit.cli.common import (
    HelpFormatter, OneLineParser, UsageError, flagged, non_negative_int, parse_seeds,
    parse_strategies, positive_int,
)


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
                     cache_dir: str | None = None) -> int:
    """``python -m alkit finetune``: check the input, load the images, run (or resume) every
    (strategy, seed) and write all rows to ``out`` (the columns of ``alkit run``).  Bad input raises
    ValueError naming the flag, before any training."""
    from alkit.experiments.runs import run_sweep
    from alkit.finetune import (DATASET_PRESETS, FineTuningTrainer, finetune_config, load_pool_images, network_source,
                                resolve_device)
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
    trainer = FineTuningTrainer(source, config, device=dev)
    frame = run_sweep(
        train_images, y, test_images, ty, num_classes, names, seed_list, initial_size=initial, round_budget=budget,
        rounds=rounds, val_per_class=val_per_class, trainer=trainer, out_dir=runs_dir, dataset=meta["dataset"],
        data_meta=meta, data_source=f"{backbone} fine-tuned", progress=not quiet)
    if trainer.ranks.is_main:
        atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
        print(f"wrote {len(frame)} rows -> {out} (each run kept in {runs_dir}/: the same command resumes)")
    return 0


#: The parameters that library errors carry (``exc.param``) → the flags of this command.
FINETUNE_FLAGS = {"dataset": "--dataset", "root": "--root", "data_root": "--root", "strategies": "--strategies",
                  "strategy": "--strategies", "seeds": "--seeds", "seed": "--seeds", "initial_size": "--initial",
                  "round_budget": "--budget", "budget": "--budget", "rounds": "--rounds",
                  "val_per_class": "--val-per-class", "preset": "--preset", "epochs": "--epochs",
                  "batch_size": "--batch-size", "backbone": "--backbone", "weights": "--weights", "device": "--device",
                  "resolution": "--resolution", "train_limit": "--train-limit", "test_limit": "--test-limit",
                  "num_classes": "--num-classes"}


def finetune_main(argv: list[str] | None = None) -> int:
    """``python -m alkit finetune …`` (the same as ``python -m alkit finetune …``)."""
    parser = add_finetune_arguments(OneLineParser(prog="python -m alkit finetune", description=FINETUNE_HELP,
                                                  formatter_class=HelpFormatter))
    args = parser.parse_args(argv)
    try:
        return run_finetune_args(args)
    except ValueError as exc:
        print(f"python -m alkit finetune: error: {flagged(exc, FINETUNE_FLAGS)}", file=sys.stderr)
        return 2


def run_finetune_args(args: argparse.Namespace) -> int:
    """:func:`finetune_command` with the values of :func:`add_finetune_arguments`'s flags."""
    return finetune_command(args.dataset, args.root, args.strategies, args.seeds, args.initial, args.budget,
                            args.rounds, args.out, val_per_class=args.val_per_class, preset=args.preset,
                            epochs=args.epochs, batch_size=args.batch_size, backbone=args.backbone,
                            weights=args.weights, device=args.device, resolution=args.resolution,
                            train_limit=args.train_limit, test_limit=args.test_limit, quiet=args.quiet)
