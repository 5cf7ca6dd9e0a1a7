"""Command line: ``python -m alkit {select,strategies,run,features} ...``.

Bad input exits with status 2 and one line on stderr naming the argument by its flag and saying
the fix; everything that can be checked (files, values, the output path) is checked before any
compute starts.
"""
from __future__ import annotations

import argparse
import re
import sys
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
    try:
        loaded = np.load(p, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{arg}: cannot read {path} as a .npy array ({one_line(exc)}); write it with "
                         "numpy.save") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        names = list(loaded.files)
        loaded.close()
        raise UsageError(f"{arg}: {path} is an .npz archive (arrays {', '.join(names) or 'none'}); pass one array "
                         "saved with numpy.save as .npy")
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
    try:
        data = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"--head: cannot read {path} as .npz ({one_line(exc)}); save the head with "
                         "numpy.savez(path, W=W, b=b)") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"--head: {path} holds a single array (.npy), not a head; save W (C×D) and b (C) "
                         "together with numpy.savez(path, W=W, b=b)")
    with data:
        if "W" not in data.files or "b" not in data.files:
            raise UsageError(f"--head: {path} must hold arrays 'W' (C×D) and 'b' (C), found {data.files}; save it "
                             "with numpy.savez(path, W=W, b=b)")
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


def parse_strategies(text: str | None, flag: str = "--strategies", *, allow_oracle: bool = True) -> list[str]:
    """Registered strategy names (aliases resolved), each once."""
    from alkit.strategies import resolve_strategy, strategy_names

    names = parse_list(text, flag, "strategy names", example="random,margin")
    resolved = []
    for name in names:
        try:
            info = resolve_strategy(name)
        except ValueError:
            raise UsageError(f"{flag}: strategy {name!r} is unknown; choose from {', '.join(strategy_names())} "
                             f"(`{PROG} strategies` describes them)") from None
        if info.oracle and not allow_oracle:
            raise UsageError(f"{flag}: {info.name!r} is an oracle baseline (it reads true labels of unlabelled "
                             "points) and cannot run on a real pool")
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

    infos = available_strategies()
    width = max(len(i.name) for i in infos)
    for info in infos:
        flag = "oracle" if info.oracle else "      "
        print(f"{info.name:<{width}}  {flag}  {info.summary}")
    return 0


#: Strategies that read no model (named in the message when a head cannot be trained).
MODEL_FREE_EXAMPLES = "random, coreset, typiclust, probcover, balancing"


def cmd_select(args: argparse.Namespace) -> int:
    from alkit.io import check_output_file, save_npy
    from alkit.pool import check_features, make_pool
    from alkit.strategies import resolve_strategy, select, strategy_names

    try:
        info = resolve_strategy(args.strategy)
    except ValueError:
        raise UsageError(f"--strategy: strategy {args.strategy!r} is unknown; choose from "
                         f"{', '.join(strategy_names())} (`{PROG} strategies` describes them)") from None
    if info.oracle:
        raise UsageError(f"--strategy: {info.name!r} is an oracle baseline (it reads true labels of unlabelled "
                         "points) and cannot run on a real pool")
    check_output_file(args.out, "--out")   # before any compute: a bad --out must not cost the selection
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
    import time

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
        import os
        import tempfile

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
    from alkit.experiment import run_from_arrays

    return run_from_arrays(args)


def cmd_features(argv: list[str]) -> int:
    from alkit.features_cli import main as features_main

    return features_main(argv)


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

    from alkit.finetune import FINETUNE_HELP, add_finetune_arguments   # the fine-tuning regime's flags

    add_finetune_arguments(sub.add_parser("finetune", help=FINETUNE_HELP, description=FINETUNE_HELP,
                                          formatter_class=HelpFormatter))

    # Listed for the help only: main() hands `features …` to alkit.features_cli before parsing.
    sub.add_parser("features", help="extract (or find in the cache) frozen features of an image data set "
                                    f"(`{PROG} features --help`)", add_help=False)
    return parser


def cmd_finetune(args: argparse.Namespace) -> int:
    from alkit.finetune import run_finetune_args

    return run_finetune_args(args)


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
    handlers = {"strategies": cmd_strategies, "select": cmd_select, "run": cmd_run, "finetune": cmd_finetune}
    try:
        return handlers[args.command](args)
    except OSError as exc:   # e.g. the disk filled up while writing --out
        where = f" {exc.filename}" if exc.filename else ""
        sys.stderr.write(f"{PROG} {args.command}: error: cannot read or write{where}: "
                         f"{exc.strerror or one_line(exc)}\n")
        return 2
    except ValueError as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {flag_names(one_line(exc))}\n")
        return 2
