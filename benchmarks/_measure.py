"""Shared helpers of the scale benchmarks: timed sections with peak memory, fresh processes,
the ImageNet-shaped pools and their linear heads, machine facts.

Peak memory of a section is measured in the process that runs it:

* ``peak_rss``: VmHWM of /proc/self/status, reset at the start of the section by writing "5"
  to /proc/self/clear_refs (Linux ≥ 4.0).  It counts the pages of memory-mapped files the
  section touched (a 5.2 GB float16 feature file read end to end shows up here).
* ``peak_anon``: the largest RssAnon seen by a sampling thread (every 20 ms) — the memory the
  code allocated, without file pages.  ``extra_anon`` subtracts RssAnon at the section start.

``run_isolated(fn, **kwargs)`` runs ``fn`` in a fresh interpreter (so earlier sections leave no
allocator state or warm caches behind) and returns its JSON-able result.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MiB = 1024 ** 2
GiB = 1024 ** 3
#: Where the JSON and Markdown results go.
RESULTS = ROOT / "results" / "benchmarks"


# ----------------------------------------------------------------------------- memory
def _status() -> dict[str, int]:
    """Fields of /proc/self/status in bytes (VmRSS, VmHWM, RssAnon, RssFile, ...)."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Largest RssAnon / VmRSS seen while running (20 ms period)."""

    def __init__(self, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.period = period
        self.stop_event = threading.Event()
        status = _status()
        self.peak_anon = status.get("RssAnon", 0)
        self.peak_rss = status.get("VmRSS", 0)

    def run(self) -> None:
        while not self.stop_event.wait(self.period):
            status = _status()
            self.peak_anon = max(self.peak_anon, status.get("RssAnon", 0))
            self.peak_rss = max(self.peak_rss, status.get("VmRSS", 0))

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        status = _status()
        self.peak_anon = max(self.peak_anon, status.get("RssAnon", 0))
        self.peak_rss = max(self.peak_rss, status.get("VmRSS", 0))


@contextlib.contextmanager
def section(record: dict):
    """Time the ``with`` block and fill ``record`` with seconds and memory peaks (bytes)."""
    import gc

    gc.collect()
    start_status = _status()
    reset = _reset_peak()
    sampler = _Sampler()
    sampler.start()
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        yield record
    finally:
        seconds = time.perf_counter() - started
        sampler.stop()
        end_status = _status()
        hwm = end_status.get("VmHWM", 0) if reset else max(sampler.peak_rss, end_status.get("VmHWM", 0))
        record.update(
            seconds=seconds,
            peak_rss=max(hwm, sampler.peak_rss),
            peak_rss_reset=reset,
            peak_anon=sampler.peak_anon,
            extra_anon=sampler.peak_anon - start_status.get("RssAnon", 0),
            start_anon=start_status.get("RssAnon", 0),
            end_rss_file=end_status.get("RssFile", 0),
            loadavg_1min_before=load_before,
            loadavg_1min_after=os.getloadavg()[0],
        )


# ------------------------------------------------------------------- fresh processes
def run_isolated(fn: Callable[..., dict] | str, timeout: float | None = None, **kwargs: Any) -> dict:
    """Run ``fn(**kwargs)`` (a module-level function, or "module:function") in a new interpreter.

    Returns its dict; on failure or timeout a dict with ``error``.  The child inherits the
    environment (so OMP/MKL thread settings apply) and runs from the repository root.
    """
    target = fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}"
    if target.startswith("__main__:"):
        main_file = Path(sys.modules["__main__"].__file__).resolve()
        target = f"{main_file.stem}:{target.split(':', 1)[1]}"
    code = (
        "import sys, json; sys.path[:0] = [{root!r}, {bench!r}];"
        "from _measure import _child; _child({target!r}, {args!r})"
    ).format(root=str(ROOT), bench=str(ROOT / "benchmarks"), target=target, args=json.dumps(kwargs))
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "wall_seconds": time.perf_counter() - started}
    marker = "@@RESULT@@"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(marker):
            result = json.loads(line[len(marker):])
            result.setdefault("process_wall_seconds", time.perf_counter() - started)
            return result
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}", "wall_seconds": time.perf_counter() - started}


def _child(target: str, args_json: str) -> None:
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    result = fn(**json.loads(args_json))
    print("@@RESULT@@" + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(type(obj).__name__)


# ------------------------------------------------------------------------- machine
def machine() -> dict:
    """CPU model, cores, memory, load and torch threads: what the timings depend on."""
    import torch

    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable", "Cached"):
                    mem[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    info = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "mem_total_gib": round(mem.get("MemTotal", 0) / GiB, 1),
        "mem_available_gib": round(mem.get("MemAvailable", 0) / GiB, 1),
        "page_cache_gib": round(mem.get("Cached", 0) / GiB, 1),
        "loadavg": os.getloadavg(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def streaming_bandwidth(path: str | Path, chunk_rows: int = 65_536) -> dict:
    """Seconds and GB/s to read a .npy memory map once and sum it in float32 chunks.

    Run twice: the second pass is from the page cache when the file fits in RAM, which is
    the bound a chunked pass over the features can reach on this machine.
    """
    import torch

    from alkit.scores import read_rows

    feats = np.load(path, mmap_mode="r")
    out = []
    buffer = torch.empty(chunk_rows * feats.shape[1], dtype=torch.float32)
    for _ in range(2):
        started = time.perf_counter()
        total = 0.0
        for start in range(0, feats.shape[0], chunk_rows):
            idx = np.arange(start, min(start + chunk_rows, feats.shape[0]))
            total += float(read_rows(feats, idx, buffer).sum())
        seconds = time.perf_counter() - started
        out.append({"seconds": seconds, "gb_per_s": feats.nbytes / seconds / 1e9})
    return {"file_bytes": int(feats.nbytes), "passes": out, "convert_sum_gb_per_s": out[-1]["gb_per_s"],
            **ram_bandwidth()}


def ram_bandwidth(n_bytes: int = 1 << 30, repeats: int = 3) -> dict:
    """GB/s of a float32 matrix-vector product over ``n_bytes`` already in RAM (best of
    ``repeats``): the memory-bandwidth floor of one k-center / k-means++ pick."""
    import torch

    x = torch.ones(n_bytes // 4 // 2048, 2048)
    v = torch.ones(2048)
    best = float("inf")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        torch.mv(x, v)
        best = min(best, time.perf_counter() - started)
    return {"ram_mv_bytes": int(x.numel() * 4), "ram_mv_seconds": best, "ram_mv_gb_per_s": x.numel() * 4 / best / 1e9}


# ----------------------------------------------------------------------- the pools
#: N of the benchmark pools (C = 1000, D = 2048 each): 10 k, 100 k and ImageNet's 1.28 M.
POOL_SIZES = {"10k": 10_000, "100k": 100_000, "1.28M": 1_281_167}
#: The paper's schedule scaled to each N: 30 k labelled and 10 k picks at 1.28 M.
LABELED_SHARE = 30_000 / 1_281_167
BUDGET_SHARE = 10_000 / 1_281_167


def imagenet_like(n_total: int, num_classes: int = 1000, dim: int = 2048, seed: int = 0, progress: bool = False):
    """The ImageNet-shaped synthetic pool of that size (generated once, cached)."""
    from alkit.data.imagenet_pool import ImageNetPoolSpec, make_imagenet_pool

    return make_imagenet_pool(spec=ImageNetPoolSpec(n_total=n_total, num_classes=num_classes, dim=dim, seed=seed),
                              progress=progress)


def schedule(n_total: int) -> tuple[int, int]:
    """(labelled, budget) for a pool of n_total points: the paper's 30 k + 10 k at 1.28 M, scaled."""
    return max(1, round(n_total * LABELED_SHARE)), max(1, round(n_total * BUDGET_SHARE))


def labeled_and_head(pool, n_labeled: int, seed: int = 0, max_epochs: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random labelled set of ``n_labeled`` points and a linear probe trained on it.

    Cached beside the pool (``head_l{n}_s{seed}.npz``): returns (labelled indices, W, b).
    The probe uses alkit's defaults (Adam, standardised features) with a 10-per-class
    validation split taken from the rest of the pool for early stopping.
    """
    from alkit.io import atomic_write
    from alkit.probe import ProbeConfig, train_linear_probe

    path = Path(pool.path) / f"head_l{n_labeled}_s{seed}_e{max_epochs}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["labeled"], data["W"], data["b"]
    rng = np.random.default_rng([seed, 11])
    labeled = np.sort(rng.choice(pool.labels.size, size=n_labeled, replace=False))
    rest = np.setdiff1d(np.arange(pool.labels.size), labeled)
    val = []
    for c in range(pool.num_classes):
        members = rest[pool.labels[rest] == c]
        val.append(rng.choice(members, size=min(10, members.size // 2), replace=False))
    val = np.sort(np.concatenate(val))
    x = np.asarray(pool.features[labeled], np.float32)
    xv = np.asarray(pool.features[val], np.float32)
    head = train_linear_probe(x, pool.labels[labeled], xv, pool.labels[val], pool.num_classes,
                              ProbeConfig(method="early_stopping", max_epochs=max_epochs), seed=seed)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, labeled=labeled, W=head.weight, b=head.bias, val=val,
                     best_val_accuracy=head.best_val_accuracy, epochs=head.epochs_run, seconds=head.seconds)

    atomic_write(path, write)
    return labeled, head.weight, head.bias


def pool_state(pool, labeled: np.ndarray, weight: np.ndarray, bias: np.ndarray):
    """PoolState over the whole pool: ``labeled`` known, nothing held out, the given head."""
    from alkit.pool import PoolState

    n = pool.labels.size
    mask = np.zeros(n, bool)
    mask[labeled] = True
    return PoolState(features=pool.features, labeled=mask, held_out=np.zeros(n, bool),
                     labels=np.where(mask, pool.labels, -1).astype(np.int64), num_classes=pool.num_classes,
                     weight=weight, bias=bias)


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s >= 600:
        return f"{s / 60:.1f} min"
    if s < 0.1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def command(script: str, argv: list[str] | None = None) -> str:
    """The benchmark's command as a user types it from the repository root: ``python benchmarks/<script>``
    and its arguments (``argv``, else this process's)."""
    return " ".join(["python", f"benchmarks/{Path(script).name}", *(sys.argv[1:] if argv is None else argv)])


def save(stem: Path, data: dict, markdown: str) -> None:
    """``stem.json`` (``data``, with ``alkit.io.provenance`` when it has none: code version, library
    versions, machine) and ``stem.md`` (``markdown``), written atomically; the Markdown is printed."""
    from alkit.io import portable_strings, provenance, write_json, write_text

    if "provenance" not in data:
        data = {**data, "provenance": provenance(machine=machine())}
    write_json(stem.with_suffix(".json"), portable_strings(data))   # committed: no path of this machine
    write_text(stem.with_suffix(".md"), markdown)
    print(markdown)
