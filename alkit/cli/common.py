"""What every command shares: one-line errors, argument types, file readers, the parser classes."""
from __future__ import annotations

import argparse
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
        name, colon, message = last.partition(": ")
        text = message if colon and _is_exception_name(name) else last
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or "unknown error"


def _is_exception_name(name: str) -> bool:
    """``ValueError`` or ``alkit.data.datasets.UnreadableImage``: a dotted path ending in a class name."""
    parts = name.split(".")
    return all(part.isidentifier() for part in parts) and parts[-1][:1].isupper()


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
        from alkit.data.features import load_feature_set

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

def _integer(text: str, low: int, kind: str, bound: str) -> int:
    """``text`` as an int ≥ ``low`` for argparse, the error naming ``kind`` and, out of range, ``bound``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a {kind}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"must be a {kind.removesuffix(' seed')} ({bound}), got {value}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, "positive integer", "> 0")


def non_negative_int(text: str) -> int:
    return _integer(text, 0, "non-negative integer", "≥ 0")


def seed_int(text: str) -> int:
    return _integer(text, 0, "non-negative integer seed", "numpy seeds are ≥ 0")


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
    "strategy": "--strategy", "strategies": "--strategies", "seeds": "--seeds", "probe": "--probe",
    "allow_missing_classes": "--allow-missing-classes",
}


def flagged(exc: BaseException, mapping: dict[str, str] = PARAMETER_FLAGS) -> str:
    """A library error as one line that opens with the command's flag for it.  The parameter comes
    from the error as data (``param`` of :class:`alkit.checks.ParameterError` and
    ``MissingPathError``), never from its text: a message that starts with the parameter's name gets
    the flag in the name's place (``root=X does not exist`` → ``--root=X does not exist``), any other
    the flag in front; an error without a parameter of this command stays as it is."""
    text = one_line(str(exc) or type(exc).__name__)
    param = getattr(exc, "param", None)
    flag = mapping.get(param) if param else None
    if flag is None:
        return text
    rest = text[len(param):]
    if text.startswith(param) and not (rest[:1].isalnum() or rest[:1] == "_"):
        return flag + rest
    return f"{flag}: {text}"


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


# --------------------------------------------------------------------------------------------
# Argument types and executors that reproduce and experiment share
# --------------------------------------------------------------------------------------------

def _shown(path: str | Path) -> str:   # for reproduce_main's last line
    """``path`` relative to the repository when it lies inside it, with a trailing slash."""
    from alkit.experiments.reproduce import REPO

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
    """--executor and the SLURM resources of a sweep (alkit.experiments.launch)."""
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
    from alkit.experiments.launch import SlurmOptions

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


def _probe_arguments(parser: argparse.ArgumentParser) -> None:
    from alkit.probe import PROBE_PRESETS

    parser.add_argument("--probe", choices=list(PROBE_PRESETS), default="logreg",
                        help="the head trained each time: logreg (converged L2 logistic regression, strength chosen "
                             "on validation), adam_early_stopping (the earlier default), paper (the "
                             "authors' SGD recipe)")
    parser.add_argument("--probe-epochs", type=positive_int, default=None,
                        help="epochs at most, for the early-stopping probes")
