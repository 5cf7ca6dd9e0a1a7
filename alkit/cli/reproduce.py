"""``python -m alkit reproduce``: figures, sweeps and the experiments behind the README."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from alkit.cli.common import (
    HelpFormatter, OneLineParser, _csv_type, _executor_arguments, _executor_choice, _non_negative_float,
    _shown, flagged, parse_strategies, positive_int, seed_int,
)


#: The parameters that library errors carry (``exc.param``) → the flags of these commands.
REPRODUCE_FLAGS = {"weights": "--weights", "datasets": "--datasets", "strategies": "--strategies", "device": "--device",
                   "data_root": "--data-root", "root": "--data-root", "scale": "--scale", "jobs": "--jobs",
                   "executor": "--executor", "seeds": "--seeds", "source": "--source", "class_counts": "--class-counts",
                   "results_dir": "--results"}


def reproduce_main(argv: list[str] | None = None) -> int:
    """``python -m alkit reproduce``: the notebooks, the sweeps, the class-count and mechanism experiments."""
    from alkit.experiments.reproduce import (COMMITTED_CLASS_COUNT, COMMITTED_MECHANISM, COMMITTED_RUNS, EXECUTED_DIR, REPO,
                                 is_committed, pair_mismatches, reproduce_class_count, reproduce_figures,
                                 reproduce_mechanism,
                                 reproduce_results, sync_pairs)

    prog = "python -m alkit reproduce"
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
            from alkit.experiments.reproduce import reproduce_finetune
            from alkit.finetune import check_scale_weights, finetune_scale, resolve_device

            flags = REPRODUCE_FLAGS
            try:   # every argument checked before any image is read
                check_scale_weights(finetune_scale(args.scale, args.datasets), args.weights, args.scale)
                resolve_device(args.device)
            except ValueError as exc:
                ft.error(flagged(exc, flags))
            try:
                out = reproduce_finetune(args.scale, args.out, args.data_root, args.weights, args.device,
                                         args.datasets, args.source)
            except (ValueError, FileNotFoundError) as exc:   # no data where --data-root points, or offline
                raise ValueError(flagged(exc, flags)) from None
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
            from alkit.experiments import class_count

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
        print(f"{prog} {args.command}: error: {flagged(exc, REPRODUCE_FLAGS)}{hint}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.0f} s" + (f": {where}" if where else ""))
    return 0
