"""``python -m alkit experiment``: the configured sweeps of :mod:`alkit.experiments.catalog`."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from alkit.cli.common import (
    HelpFormatter, OneLineParser, UsageError, _executor_arguments, _executor_choice, disk_full_message,
    flagged, non_negative_int, parse_seeds, parse_strategies, positive_int,
)


EXPERIMENT_PROG = "python -m alkit experiment"

#: Python parameter names in library errors → the flags of ``python -m alkit experiment``.
EXPERIMENT_FLAGS = {"data_root": "--data-root", "cache_dir": "--cache-dir", "weights": "--weights",
                    "dataset": "--dataset", "scale": "--scale", "source": "--source", "rounds": "--rounds",
                    "seeds": "--seeds", "strategies": "--strategies", "results_dir": "--out"}


def _experiment_message(exc: BaseException) -> str:
    full = disk_full_message(exc, "--cache-dir")
    if full is not None:
        return full
    message = flagged(exc, EXPERIMENT_FLAGS)
    if getattr(exc, "param", None) == "trust_checkpoint":   # a switch this command does not have
        message += ("; with this command, extract the features first with `python -m alkit features … "
                    "--weights FILE --trust-checkpoint` (the sweep then finds them in the cache)")
    return message


def experiment_main(argv: list[str] | None = None) -> int:
    """``python -m alkit experiment``: run (or resume) configured sweeps."""
    from alkit.experiments.catalog import DATASETS, DEFAULT_BACKBONE, SCALES, SCALE_NAMES, SOURCES, sweep_config
    from alkit.experiments.runs import run_configured_sweep
    from alkit.io import check_output_dir

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
                from alkit.experiments.launch import run_phases

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
