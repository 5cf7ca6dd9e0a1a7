"""The command line: ``python -m alkit COMMAND …`` (or the ``alkit`` script), one module per command.

Bad input exits with status 2 and one line on stderr naming the argument by its flag and saying
the fix; everything that can be checked (files, values, the output path) is checked before any
compute starts.  The commands import the library inside their functions, so that ``--help`` and a
mistyped flag answer at once instead of after loading torch.  Nothing in the library imports this
package.
"""
from __future__ import annotations

import argparse
import sys

from alkit.cli.common import (
    HelpFormatter, OneLineParser, PROG, _probe_arguments, disk_full_message, flagged, non_negative_int,
    one_line, positive_int, seed_int,
)
from alkit.cli.strategies import cmd_strategies
from alkit.cli.select import cmd_select
from alkit.cli.run import cmd_run
from alkit.cli.features import features_main
from alkit.cli.reproduce import reproduce_main
from alkit.cli.experiment import experiment_main
from alkit.cli.demo import demo_main
from alkit.cli.samples import samples_main
from alkit.cli.imagenet_pool import imagenet_pool_main
from alkit.cli.finetune import FINETUNE_HELP, add_finetune_arguments, run_finetune_args


#: Commands with a parser of their own: name → (main(argv), one line for the top-level help).
OWN_PARSERS = {
    "features": (features_main, "extract (or find in the cache) frozen features of an image data set"),
    "reproduce": (reproduce_main, "the figures, the sweeps and the class-count, mechanism and fine-tuning experiments"),
    "experiment": (experiment_main, "run (or resume) the configured sweeps of a scale"),
    "demo": (demo_main, "every strategy on two synthetic pools, in about a minute"),
    "samples": (samples_main, "rebuild the shipped feature sample from the feature cache"),
    "imagenet-pool": (imagenet_pool_main, "write (or find) a synthetic pool of ImageNet's shape"),
}


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

    # Listed for the help only: main() hands these to their own parsers before parsing.
    for name, (_, text) in OWN_PARSERS.items():
        sub.add_parser(name, help=f"{text} (`{PROG} {name} --help`)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in OWN_PARSERS:
        return OWN_PARSERS[argv[0]][0](argv[1:])
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
        sys.stderr.write(f"{PROG} {args.command}: error: {flagged(exc)}\n")
        return 2
