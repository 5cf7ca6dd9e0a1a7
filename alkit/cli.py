"""Command line: ``python -m alkit {select,strategies,run,features} ...``.

Bad input exits with status 2 and one line on stderr naming the argument.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


class UsageError(ValueError):
    pass


def _load_array(path: str, arg: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{arg}: file not found: {path}")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UsageError(f"{arg}: cannot read {path} as a .npy array ({exc})") from None


def _load_head(path: str) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--head: file not found: {path}")
    try:
        with np.load(p, allow_pickle=False) as data:
            if "W" not in data or "b" not in data:
                raise UsageError(f"--head: {path} must hold arrays 'W' (C×D) and 'b' (C), found {list(data.keys())}")
            return np.asarray(data["W"], np.float32), np.asarray(data["b"], np.float32)
    except (ValueError, OSError) as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(f"--head: cannot read {path} as .npz ({exc})") from None


def cmd_strategies(args: argparse.Namespace) -> int:
    from alkit.strategies import available_strategies

    infos = available_strategies()
    width = max(len(i.name) for i in infos)
    for info in infos:
        flag = "oracle" if info.oracle else "      "
        print(f"{info.name:<{width}}  {flag}  {info.summary}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from alkit.io import save_npy
    from alkit.pool import check_features, make_pool
    from alkit.probe import train_linear_probe
    from alkit.strategies import resolve_strategy, select

    info = resolve_strategy(args.strategy)
    if info.oracle:
        raise UsageError(f"--strategy: {info.name!r} is an oracle baseline (it reads true labels of unlabelled "
                         "points) and cannot run on a real pool")
    features = _load_array(args.features, "--features")
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
        if not (labels >= 0).any():
            raise UsageError("--num-classes: needed when no point is labelled and no --head is given")
        num_classes = int(labels.max()) + 1
    if labels.min() < -1 or labels.max() >= num_classes:
        raise UsageError(f"--labels: values must be -1 (unlabelled) or in [0, {num_classes}); "
                         f"found [{labels.min()}, {labels.max()}] (set --num-classes?)")
    if weight is None and (labels >= 0).any():
        lab = np.flatnonzero(labels >= 0)
        head = train_linear_probe(np.asarray(features[lab], np.float32), labels[lab], None, None, num_classes,
                                  probe_config(args), seed=args.seed)
        weight, bias = head.weight, head.bias
    pool = make_pool(features, labels.astype(np.int64), num_classes, weight=weight, bias=bias)
    picks = select(pool, info, args.budget, args.seed)
    save_npy(args.out, picks.astype(np.int64))
    print(f"selected {picks.size} points with {info.name} -> {args.out}")
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
    from alkit.experiment import run_from_arrays

    return run_from_arrays(args)


def cmd_features(argv: list[str]) -> int:
    from alkit.features_cli import main as features_main

    return features_main(argv)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (> 0), got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one clear line, status 2
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m alkit", description="Active learning at the ImageNet scale, on frozen features.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("strategies", help="list the registered strategies")

    sel = sub.add_parser("select", help="choose the next batch to label")
    sel.add_argument("--strategy", required=True, help="a registered name (see `strategies`)")
    sel.add_argument("--features", required=True, help="(N, D) float .npy of frozen features")
    sel.add_argument("--labels", required=True, help="(N,) int .npy: class of labelled points, -1 elsewhere")
    sel.add_argument("--budget", required=True, type=positive_int, help="points to pick")
    sel.add_argument("--seed", required=True, type=int, help="random seed")
    sel.add_argument("--out", required=True, help="where to write the picked indices (int64 .npy)")
    sel.add_argument("--head", help=".npz with W (C×D) and b (C); otherwise a linear head is trained on the labelled points")
    sel.add_argument("--num-classes", type=positive_int, help="C (default: from --head, else max label + 1)")
    _probe_arguments(sel)

    run = sub.add_parser("run", help="run a whole active-learning experiment on a features file and write CSV")
    run.add_argument("--features", required=True, help="(N, D) .npy training pool features")
    run.add_argument("--labels", required=True, help="(N,) .npy true labels of the pool (revealed when queried)")
    run.add_argument("--test-features", help="(M, D) .npy test features (default: hold out --test-fraction)")
    run.add_argument("--test-labels", help="(M,) .npy test labels")
    run.add_argument("--test-fraction", type=float, default=0.2, help="test share when no test set is given")
    run.add_argument("--strategies", default="random,margin,base", help="comma-separated names")
    run.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    run.add_argument("--initial", required=True, type=positive_int, help="random initial labelled points")
    run.add_argument("--budget", required=True, type=positive_int, help="points per round")
    run.add_argument("--rounds", required=True, type=int, help="query rounds after the initial pool")
    run.add_argument("--val-per-class", type=int, default=0, help="class-balanced validation points per class")
    run.add_argument("--num-classes", type=positive_int, help="C (default: max label + 1)")
    run.add_argument("--out", required=True, help="CSV of per-round rows")
    _probe_arguments(run)
    return parser


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    from alkit.probe import PROBE_PRESETS

    parser.add_argument("--probe", choices=list(PROBE_PRESETS), default="logreg",
                        help="the head trained each time: logreg (converged L2 logistic regression, strength chosen "
                             "on validation; default), adam_early_stopping (the earlier default), paper (the "
                             "authors' SGD recipe)")
    parser.add_argument("--probe-epochs", type=positive_int, default=None,
                        help="epochs at most, for the early-stopping probes")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "features":
        return cmd_features(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"strategies": cmd_strategies, "select": cmd_select, "run": cmd_run}
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        sys.stderr.write(f"python -m alkit {args.command}: error: {exc}\n")
        return 2
