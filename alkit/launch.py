"""Running many runs: the order of a scale's sweep, on one process or on worker processes.

:func:`run_phases` takes ``(dataset, strategies[, seeds])`` phases (:data:`alkit.studies.CPU_PHASES`
is the cpu sweep's priority order) and runs every (data set, strategy, seed) run once, skipping the
finished ones (:mod:`alkit.runs` keeps one result per run and claims a run before computing it), in
this process (:func:`_run_serial`, which can put off a data set whose features are still being
extracted) or on ``jobs`` worker processes (:func:`run_parallel`).  Each sweep's wall time is
appended to ``<out>/sweep_times.json``.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from alkit import io
from alkit.features import FeaturesNotCached
from alkit.io import loaded_commit, write_json
from alkit.runs import run_configured_sweep, run_path
from alkit.studies import load_study_data, sweep_config

def run_phases(phases, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
               extract: bool = True, wait_seconds: float = 0.0, jobs: int = 1) -> None:
    """Run ``(dataset, strategies)`` phases in order.  With ``extract=False`` a phase whose features
    are not cached yet is put off (and retried first once they are) instead of extracting them,
    for up to ``wait_seconds`` of waiting — so a sweep can start while features are extracted.
    ``jobs`` > 1 runs that many worker processes (see :func:`run_parallel`).  The sweep's wall time
    is appended to ``<out>/sweep_times.json``."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (worker processes), got {jobs!r}")
    loaded_commit()   # every run of this sweep records the commit it started from
    # One run at a time (seed-major inside a phase), so that priorities are checked again after every
    # run: a data set whose features arrive mid-sweep starts after the current run, not a whole phase.
    pending = []
    for dataset, strategies, *seeds in phases:   # (dataset, strategies[, seeds]): no seeds = the scale's
        config = sweep_config(dataset, scale, strategies=strategies)
        for seed in (seeds[0] if seeds and seeds[0] else config.seeds):
            pending += [(dataset, (strategy,), seed) for strategy in config.strategy_list()
                        if (dataset, (strategy,), seed) not in pending]
    started, started_epoch = time.perf_counter(), time.time()
    if jobs > 1:
        run_parallel(pending, scale, out, source=source, data_root=data_root, jobs=jobs, extract=extract)
    else:
        _run_serial(pending, scale, out, source=source, data_root=data_root, extract=extract,
                    wait_seconds=wait_seconds)
    written = sum(1 for d, (s,), seed in pending
                  if _mtime(run_path(Path(out) / d, s, seed).with_suffix(".json")) >= started_epoch)
    _log_sweep(out, scale, jobs, len(pending), written, time.perf_counter() - started)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else -1.0


def _log_sweep(out: str, scale: str, jobs: int, planned: int, ran: int | None, seconds: float) -> None:
    """Append this sweep's wall time to ``<out>/sweep_times.json`` (rewritten atomically): how many
    runs it planned, how many it ran (the others were finished already), with how many workers."""
    path = Path(out) / "sweep_times.json"
    try:
        log = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        log = []
    log.append({"scale": scale, "command": " ".join(sys.argv), "git_commit": loaded_commit(), "jobs": jobs,
                "torch_threads": torch.get_num_threads() if jobs == 1 else _worker_threads(jobs),
                "cpu_count": os.cpu_count(), "runs_planned": planned, "runs_run": ran,
                "wall_seconds": round(seconds, 1), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, log)


def _worker_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


#: Strategies whose runs share costly work across seeds: ProbCover's δ and δ-graph depend on the
#: features alone and are kept in the shared dict (``StrategyCache.shared``) that each worker keeps
#: per data set, so in a parallel sweep all seeds of such a strategy go to one worker, which builds
#: the graph once per data set instead of once per worker that gets a seed.
SHARED_ACROSS_SEEDS = ("probcover",)

# A worker's state, per data set: the loaded data, and the ``shared`` dict of its runs'
# StrategyCache (round-0 heads, ProbCover's δ-graph), reused by every task on that data set.
_WORKER_DATA: dict = {}
_WORKER_SHARED: dict = {}


def _worker_init(commit: str, threads: int) -> None:
    torch.set_num_threads(threads)
    io._LOADED_COMMIT = commit   # the parent's commit: the code the sweep started with
    parent = os.getppid()

    def leave_with_parent() -> None:   # a killed sweep leaves no worker running (runs are saved atomically)
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=leave_with_parent, daemon=True).start()


def _worker_run(dataset: str, strategy: str, seeds: list[int], scale: str, out: str, source: str,
                data_root: str | None) -> str:
    started = time.perf_counter()
    if dataset not in _WORKER_DATA:   # once per data set and worker
        _WORKER_DATA[dataset] = load_study_data(dataset, scale, source=source, data_root=data_root,
                                                extract=False, progress=False)
    frame = run_configured_sweep(dataset, scale, out, data=_WORKER_DATA[dataset], strategies=[strategy],
                                 seeds=seeds, progress=False, shared=_WORKER_SHARED.setdefault(dataset, {}))
    finals = frame.groupby("seed")["top1"].last()
    return (f"[{dataset}] {strategy} seed {','.join(map(str, seeds))}: {time.perf_counter() - started:.0f} s "
            f"(top-1 at the end {', '.join(f'{v:.4f}' for v in finals)}) -> {out}/{dataset}")


def run_parallel(pending, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
                 jobs: int = 2, extract: bool = True, worker=None, worker_kwargs: dict | None = None) -> None:
    """Run ``pending`` ((dataset, (strategy,), seed) in priority order; finished ones are skipped) on
    ``jobs`` worker processes with
    cpu_count // jobs torch threads each.  On 2 cores, two one-thread workers keep both cores busy
    through the many small steps (probe epochs, per-cluster loops) where one two-thread process
    leaves one idle.  Each worker loads a data set once; all seeds of a :data:`SHARED_ACROSS_SEEDS`
    strategy go to one worker.  Workers never extract features: when a data set's are not cached,
    this process extracts them (``extract=True``, else it stops with the message) and then hands
    that data set's runs out again.  ``worker`` replaces the function that runs one task (tests, the
    class-count experiment), called with ``worker_kwargs`` as keyword arguments."""
    tasks, grouped = [], {}
    for dataset, (strategy,), seed in pending:
        if strategy in SHARED_ACROSS_SEEDS:
            if (dataset, strategy) not in grouped:
                grouped[(dataset, strategy)] = []
                tasks.append((dataset, strategy, grouped[(dataset, strategy)]))
            grouped[(dataset, strategy)].append(seed)
        else:
            tasks.append((dataset, strategy, [seed]))
    context = multiprocessing.get_context("spawn")   # no fork of a process that has started torch threads
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                             initargs=(loaded_commit(), _worker_threads(jobs))) as executor:
        worker = worker or _worker_run
        extra = worker_kwargs or {}
        task_of = {executor.submit(worker, *task, scale, out, source, data_root, **extra): task for task in tasks}
        remaining, extracted = set(task_of), set()
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    print(future.result(), flush=True)
                except FeaturesNotCached as exc:
                    dataset = task_of[future][0]
                    if not extract:
                        for other in remaining:
                            other.cancel()
                        raise SystemExit(f"{exc}\n(--no-extract: cache the features first)") from exc
                    if dataset not in extracted:   # once; the other workers go on meanwhile
                        print(f"[{dataset}] extracting features before its runs", flush=True)
                        load_study_data(dataset, scale, source=source, data_root=data_root, extract=True)
                        extracted.add(dataset)
                    again = executor.submit(worker, *task_of[future], scale, out, source, data_root, **extra)
                    task_of[again] = task_of[future]
                    remaining.add(again)
                except Exception:
                    for other in remaining:
                        other.cancel()
                    raise


def _run_serial(pending, scale: str, out: str, *, source: str, data_root: str | None, extract: bool,
                wait_seconds: float) -> None:
    waited = 0.0
    loaded, checked = {}, {}   # data per data set; when a data set's missing features were last looked for
    shared: dict = {}          # per data set: the shared dict of its runs' StrategyCache (alkit.pool)
    while pending:
        progressed = False
        for phase in list(pending):
            dataset, strategies, seed = phase
            started = time.perf_counter()
            if dataset not in loaded:  # load once per data set, and look for missing features once a minute
                if started - checked.get(dataset, -1e9) < 60:
                    continue
                checked[dataset] = started
                try:
                    loaded[dataset] = load_study_data(dataset, scale, source=source, data_root=data_root,
                                                      extract=extract)
                except FeaturesNotCached as exc:
                    print(f"[{dataset}] put off: {exc}", flush=True)
                    continue
            frame = run_configured_sweep(dataset, scale, out, data=loaded[dataset], strategies=list(strategies),
                                         seeds=[seed], progress=False, shared=shared.setdefault(dataset, {}))
            pending.remove(phase)
            progressed = True
            print(f"[{dataset}] {strategies[0]} seed {seed}: {time.perf_counter() - started:.0f} s "
                  f"(top-1 at the end {frame['top1'].iloc[-1]:.4f}) -> {out}/{dataset}", flush=True)
            break  # back to the first pending phase: priorities hold as features arrive
        if pending and not progressed:
            if waited >= wait_seconds:
                raise SystemExit(f"gave up waiting for features: {', '.join(sorted({p[0] for p in pending}))}")
            time.sleep(15)
            waited += 15


def only_phases(phases, scale: str, datasets=None, strategies=None) -> list[tuple]:
    """``phases`` restricted to ``datasets`` and ``strategies`` (None: all), in the same order
    (a phase's own seeds, when it names them, are kept)."""
    known_datasets = {d for d, *_ in phases}
    for name in datasets or ():
        if name not in known_datasets:
            raise ValueError(f"--datasets: {name!r} is not swept at scale {scale!r}; "
                             f"choose from {', '.join(sorted(known_datasets))}")
    kept, known_strategies = [], set()
    for dataset, names, *seeds in phases:
        names = tuple(names or sweep_config(dataset, scale).strategy_list())
        known_strategies.update(names)
        if datasets and dataset not in datasets:
            continue
        names = tuple(n for n in names if not strategies or n in strategies)
        if names:
            kept.append((dataset, names, *seeds))
    for name in strategies or ():
        if name not in known_strategies:
            raise ValueError(f"--strategies: {name!r} is not swept at scale {scale!r}; "
                             f"choose from {', '.join(sorted(known_strategies))}")
    return kept
