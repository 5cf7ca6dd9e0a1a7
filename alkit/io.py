"""Atomic writes, provenance and fingerprints: a result file is either complete or absent, and says
what made it."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from alkit.checks import ParameterError


def default_cache_dir() -> Path:
    """``$ALKIT_CACHE`` if set, else ``~/.cache/alkit``: extracted archives, feature caches, the
    synthetic ImageNet-shaped pools (never inside the repository)."""
    env = os.environ.get("ALKIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "alkit"


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux ≥ 4.7 shows it
    in /proc/self/status); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The permissions a new file gets from ``open()``: 0o666 less the umask (0o644 under the usual 022)."""
    return 0o666 & ~current_umask()


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the user's default permissions (0o666 less the umask), as if opened directly:
    ``mkstemp`` creates the temporary file owner-only (0o600), which would otherwise stick."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full_while_writing(path, exc) from exc
        raise
    return path


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_can_create_in(folder: Path, argument: str, what: str) -> None:
    """Raise ValueError unless a file can be created in the existing directory ``folder``."""
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ParameterError(f"{argument}: cannot write {what}: folder {folder} is read-only for you; "
                             "choose a folder you can write to", param=argument)
    try:   # a real try catches what os.access cannot see: a read-only file system, no inodes left
        fd, probe = tempfile.mkstemp(prefix=".alkit-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ParameterError(f"{argument}: cannot write {what} in folder {folder} ({exc.strerror or exc}); "
                             "choose a folder you can write to", param=argument) from None


def check_output_file(path: str | Path, argument: str = "out", *, create_folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written as a file; raise ValueError naming
    ``argument`` (a flag such as ``--out``, or a parameter name) and the fix otherwise.

    Rejected: a directory; a path under a file; a folder that does not exist (unless
    ``create_folder``, which then only requires that it can be created); a folder without write
    permission or on a read-only file system."""
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise ParameterError(f"{argument}: needs a file name, got {str(path)!r}", param=argument)
    if path.is_dir():
        raise ParameterError(f"{argument}: {path} is a directory; give the path of a file (inside it, say)", param=argument)
    folder = path.parent
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ParameterError(f"{argument}: {path} lies under {existing}, which is a file, not a folder; "
                             "choose another path", param=argument)
    if existing != folder and not create_folder:
        raise ParameterError(f"{argument}: folder {folder} does not exist; create it first (mkdir -p {folder}) "
                             "or choose another path", param=argument)
    _check_can_create_in(existing, argument, str(path))
    return path


def check_output_dir(path: str | Path, argument: str = "out") -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a folder alkit can write in;
    raise ValueError naming ``argument`` and the fix otherwise."""
    path = Path(path).expanduser()
    existing = _nearest_existing(path)
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ParameterError(f"{argument}: {path} {where}, not a folder; choose a folder path", param=argument)
    _check_can_create_in(existing, argument, f"into {path}")
    return path


# ---------------------------------------------------------------------------------------------
# Free space: checked before a large write, and named when the disk fills during one
# ---------------------------------------------------------------------------------------------

#: What to do about a full feature cache (``cache_dir=FOLDER``: the command lines put their flag there).
CACHE_FIX = ("free space on that disk, or move the cache to a larger one with ALKIT_CACHE=FOLDER or "
             "cache_dir=FOLDER")
#: errno values that mean the disk, or the user's quota on it, is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# numpy's ``tofile`` (under ``np.save``) reports a short write without an errno.
_SHORT_WRITE = re.compile(r"(\d+) requested and (\d+) written")


class DiskFullError(OSError):
    """Not enough room on a disk: found before writing (:func:`check_free_space`) or while writing
    (``ENOSPC`` / ``EDQUOT``).  ``str()`` is the whole message, naming the folder or file, the disk,
    the bytes needed or free and ``fix``; ``strerror`` stays the system's short reason."""

    def __init__(self, text: str, fix: str, code: int = errno.ENOSPC, filename: str | None = None) -> None:
        super().__init__(code, os.strerror(code), filename)
        self.text, self.fix = text, fix

    def __str__(self) -> str:
        return f"{self.text}; {self.fix}"

    def __reduce__(self):   # OSError pickles its (errno, strerror) arguments; keep the message instead
        return type(self), (self.text, self.fix, self.errno, self.filename)

    def with_fix(self, fix: str) -> "DiskFullError":
        return DiskFullError(self.text, fix, self.errno, self.filename)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk or the quota is full (numpy's errno-less short write included)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in DISK_FULL_ERRNOS:
        return True
    return exc.errno is None and _SHORT_WRITE.fullmatch(str(exc)) is not None


def byte_size(n: int) -> str:
    """``n`` bytes for a reader: ``1.5 GiB (1,610,612,736 bytes)``."""
    n = int(n)
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({n:,} bytes)"


def describe_disk(path: str | Path) -> str:
    """The disk ``path`` lies on: ``the disk mounted at /data (/dev/sdb1)``, its device where the
    system lists it (Linux's /proc/self/mounts)."""
    mount = Path(os.path.realpath(_nearest_existing(Path(path).expanduser().absolute())))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    device = None
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:   # the last mount on a mount point is the one in effect
                fields = line.split()
                if len(fields) > 1 and _unescape_mount(fields[1]) == str(mount):
                    device = _unescape_mount(fields[0])
    except OSError:
        pass
    return f"the disk mounted at {mount}" + (f" ({device})" if device else "")


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def free_bytes(path: str | Path) -> int:
    """Bytes free to this user on the disk of ``path`` (or of its nearest existing folder)."""
    return int(shutil.disk_usage(_nearest_existing(Path(path).expanduser().absolute())).free)


def check_free_space(path: str | Path, needed_bytes: int, what: str, fix: str = CACHE_FIX) -> int:
    """Raise :class:`DiskFullError` before any work when the disk of ``path`` (a folder, which may
    not exist yet) has fewer than ``needed_bytes`` free for ``what``; else return the bytes free."""
    free = free_bytes(path)
    if needed_bytes > free:
        raise DiskFullError(f"not enough free space for {what} in {path}: it needs {byte_size(needed_bytes)}, "
                            f"{describe_disk(path)} has {byte_size(free)} free", fix)
    return free


def disk_full_while_writing(path: str | Path, exc: OSError, fix: str = "free space on that disk, or write to "
                            "another one", *, folder: bool = False) -> DiskFullError:
    """The :class:`DiskFullError` for ``exc`` (a full disk or quota) met while writing the file
    ``path`` (or some file in the folder ``path``, when ``folder``)."""
    short = _SHORT_WRITE.fullmatch(str(exc)) if exc.errno is None else None
    reason = (f"only {int(short.group(2)):,} of {int(short.group(1)):,} bytes were written (disk or quota full)"
              if short else exc.strerror or str(exc))
    where = Path(path) if folder else Path(path).parent
    try:
        room = f"{describe_disk(where)} has {byte_size(free_bytes(where))} free"
    except OSError:
        room = "the free space of its disk cannot be read"
    return DiskFullError(f"cannot write {'in ' if folder else ''}{path}: {reason}; {room}", fix,
                         exc.errno if exc.errno in DISK_FULL_ERRNOS else errno.ENOSPC, str(path))


@contextmanager
def naming_full_disk(folder: str | Path, fix: str) -> Iterator[None]:
    """Inside the block, a full disk raises :class:`DiskFullError` ending in ``fix``: the file named by
    the error (from :func:`atomic_write`), else ``folder``."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, DiskFullError):
            raise exc.with_fix(fix) from exc.__cause__
        if not is_disk_full(exc):
            raise
        if exc.filename:
            raise disk_full_while_writing(exc.filename, exc, fix) from exc
        raise disk_full_while_writing(folder, exc, fix, folder=True) from exc


def save_npy(path: str | Path, array: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
    return atomic_write(path, write)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (another user's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def array_fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' shapes, dtypes and bytes: a run key's record of its data (float16
    features of 100 k × 1280 take about a second)."""
    digest = hashlib.sha256()
    for array in arrays:
        a = np.asarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        for start in range(0, a.shape[0], 65_536):
            digest.update(np.ascontiguousarray(a[start:start + 65_536]).tobytes())
    return digest.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str:
    """The current commit, with '+dirty' if tracked files outside ``results/`` have changes (the
    outputs a sweep rewrites are not code), or 'unknown'."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], cwd=cwd, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit or "unknown") + ("+dirty" if commit and dirty else "")


_LOADED_COMMIT: str | None = None


_LAUNCH_COMMAND: str | None = None


def pin_provenance(commit: str, command: str) -> None:
    """Record ``commit`` and ``command`` as this process's provenance: a sweep's worker process (started
    by submitit, whose own command line means nothing to a reader) records the sweep's."""
    global _LOADED_COMMIT, _LAUNCH_COMMAND
    _LOADED_COMMIT, _LAUNCH_COMMAND = commit, command


def launch_command() -> str:
    """The command a user typed to make this process's results (:func:`pin_provenance`, else this
    process's own :func:`command_line`)."""
    return _LAUNCH_COMMAND if _LAUNCH_COMMAND is not None else command_line()


def loaded_commit() -> str:
    """The commit of the code this process runs: read at the first call and kept, so that a long
    sweep (which calls this when it starts) never records a commit made while it ran."""
    global _LOADED_COMMIT
    if _LOADED_COMMIT is None:
        _LOADED_COMMIT = git_commit()
    return _LOADED_COMMIT


def portable_path(path: str | Path) -> str:
    """``path`` without this machine in it: relative to the repository when inside it, ``~/…`` under
    the home folder, ``…/<name>`` elsewhere (a temporary folder); a relative path as it is."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    repo = Path(__file__).resolve().parents[1]
    for base, shown in ((repo, None), (Path.home(), "~")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return str(rel) if shown is None else f"{shown}/{rel}"
    return f"…/{path.name}"


def portable_strings(obj: Any) -> Any:
    """``obj`` (JSON-like) with every absolute path among its strings made portable
    (:func:`portable_path`), and every path inside a ``"command"`` string: what committed result
    files record."""
    if isinstance(obj, dict):
        return {k: (_portable_command(v) if k == "command" and isinstance(v, str) else portable_strings(v))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable_strings(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("/"):
        return portable_path(obj)
    return obj


def _portable_command(command: str) -> str:
    return command_line(command.split(" ")) if command.startswith("/") or " /" in command else command


def command_line(argv: list[str] | None = None) -> str:
    """The command this process runs, as a user would type it on any machine: a module of this
    package as ``python -m alkit.<module>``, another file inside the repository by its relative path,
    any other program by its name, and absolute paths among the arguments by :func:`portable_path`
    — never a path of this machine (results are committed)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = Path(argv[0])
    package = Path(__file__).resolve().parent
    args = [portable_path(a) if a.startswith("/") else a for a in argv[1:]]
    if program.suffix == ".py" and program.is_absolute():
        try:
            module = program.resolve().relative_to(package.parent).with_suffix("")
        except ValueError:
            module = None
        if module is not None and module.parts[0] == package.name:
            parts = module.parts[:-1] if module.name in ("__main__", "__init__") else module.parts
            return " ".join(["python -m " + ".".join(parts), *args])
        if module is not None:
            return " ".join([str(module.with_suffix(".py")), *args])
    return " ".join([program.name if program.is_absolute() else str(program), *args])


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says).  Float32 and bfloat16
    kernels differ between CPU families, so a run repeats bit for bit only on the same kind of CPU."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(**extra: Any) -> dict:
    """Where a result came from: command, commit, versions, hardware (the CPU model too), time."""
    info = {
        "command": launch_command(),
        "git_commit": loaded_commit(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    info.update(extra)
    return info
