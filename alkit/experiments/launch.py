"""Running many runs: a scale's sweep in this process, on local worker processes, or on SLURM.

:func:`run_phases` takes ``(dataset, strategies[, seeds])`` phases (:data:`alkit.experiments.catalog.CPU_PHASES`
is the cpu sweep's priority order) and runs every (data set, strategy, seed) run once, skipping the
finished ones (:mod:`alkit.experiments.runs` keeps one result per run, claims a run before computing it and
checkpoints it after every round), with one of three executors:

* ``inline`` — this process (:func:`_run_serial`, which can put off a data set whose features are
  still being extracted);
* ``local`` — ``jobs`` local processes started through submitit (:func:`run_parallel`), which share
  the runs through the claims;
* ``slurm`` — a SLURM job array, one job per run, requeued on preemption or time-out and resumed at
  the round it was in (:func:`run_slurm`, :class:`RunJob`).

The same command resumes a sweep whatever executor ran it; results land in the same files.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import submitit
import torch

from alkit import io
from alkit.checks import ParameterError
from alkit.data.features import FeaturesNotCached
from alkit.experiments.catalog import sweep_config
from alkit.experiments.loading import StudyData, load_study_data
from alkit.experiments.runs import run_configured_sweep, run_path
from alkit.io import loaded_commit, process_alive, write_json

#: Where the runs of a sweep are computed: this process, local worker processes, or a SLURM cluster.
EXECUTORS = ("inline", "local", "slurm")


def run_phases(phases, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
               extract: bool = True, wait_seconds: float = 0.0, jobs: int = 1, executor: str | None = None,
               slurm: SlurmOptions | None = None) -> None:
    """Run ``(dataset, strategies[, seeds])`` phases in order, one (data set, strategy, seed) run at a
    time in priority order, skipping finished runs.

    ``executor``: ``"inline"`` runs them in this process (with ``extract=False`` a data set whose
    features are not cached yet is put off, and retried first once they are, for up to
    ``wait_seconds``, so a sweep can start while features are extracted); ``"local"`` on ``jobs``
    local worker processes through submitit (:func:`run_parallel`); ``"slurm"`` submits each run as a
    job of a SLURM array and returns (:func:`run_slurm`, resources from ``slurm``).  None: inline for
    one job, local for more.  The wall time of an inline or local sweep is appended to
    ``<out>/sweep_times.json``."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ParameterError(f"jobs must be a positive integer (worker processes), got {jobs!r}", param="jobs")
    executor = executor or ("inline" if jobs == 1 else "local")
    if executor not in EXECUTORS:
        raise ParameterError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}", param="executor")
    if executor == "inline" and jobs > 1:
        raise ParameterError(f"jobs: the inline executor runs in this one process; for {jobs} workers use the local "
                             "executor", param="jobs")
    loaded_commit()   # every run of this sweep records the commit it started from
    pending = []
    for dataset, strategies, *seeds in phases:   # (dataset, strategies[, seeds]): no seeds = the scale's
        config = sweep_config(dataset, scale, strategies=strategies)
        for seed in (seeds[0] if seeds and seeds[0] else config.seeds):
            pending += [(dataset, (strategy,), seed) for strategy in config.strategy_list()
                        if (dataset, (strategy,), seed) not in pending]
    if executor == "slurm":
        run_slurm(pending, scale, out, source=source, data_root=data_root, options=slurm or SlurmOptions())
        return
    started, started_epoch = time.perf_counter(), time.time()
    if executor == "local":
        run_parallel(pending, scale, out, source=source, data_root=data_root, jobs=jobs, extract=extract)
    else:
        _run_serial(pending, scale, out, source=source, data_root=data_root, extract=extract,
                    wait_seconds=wait_seconds)
    written = sum(1 for d, (s,), seed in pending
                  if _mtime(run_path(Path(out) / d, s, seed).with_suffix(".json")) >= started_epoch)
    _log_sweep(out, scale, jobs, len(pending), written, time.perf_counter() - started)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else -1.0


def append_sweep_log(out: str | Path, entry: dict) -> None:
    """Append ``entry`` to ``<out>/sweep_times.json`` (rewritten atomically; an unreadable log starts over)."""
    path = Path(out) / "sweep_times.json"
    try:
        log = json.loads(path.read_text()) if path.exists() else []
    except ValueError:
        log = []
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, [*log, entry])


def _log_sweep(out: str, scale: str, jobs: int, planned: int, ran: int | None, seconds: float) -> None:
    """Append this sweep's wall time to ``<out>/sweep_times.json``: how many runs it planned, how
    many it ran (the others were finished already), with how many workers."""
    append_sweep_log(out, {
        "scale": scale, "command": io.launch_command(), "git_commit": loaded_commit(), "jobs": jobs,
        "torch_threads": torch.get_num_threads() if jobs == 1 else _worker_threads(jobs), "cpu_count": os.cpu_count(),
        "runs_planned": planned, "runs_run": ran, "wall_seconds": round(seconds, 1),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _worker_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // jobs)


#: Strategies whose runs share costly work across seeds: ProbCover's δ and δ-graph depend on the
#: features alone and are kept in the shared dict (``StrategyCache.shared``) that each worker keeps
#: per data set, so in a parallel sweep all seeds of such a strategy go to one worker, which builds
#: the graph once per data set instead of once per worker that gets a seed.
SHARED_ACROSS_SEEDS = ("probcover",)


class WorkerState:
    """What a worker process keeps between its tasks: each data set, loaded once, and per group of
    runs on the same features the ``shared`` dict of their :class:`alkit.pool.StrategyCache`
    (round-0 fits, ProbCover's δ-graph).  Every worker function of every experiment takes it from
    :func:`worker_state`."""

    def __init__(self) -> None:
        self._data: dict = {}
        self._shared: dict = {}

    def data(self, dataset: str, load: Callable[[], StudyData]) -> StudyData:
        """``dataset``'s data: ``load()`` the first time it is asked for in this process."""
        if dataset not in self._data:
            self._data[dataset] = load()
        return self._data[dataset]

    def shared(self, key) -> dict:
        """The shared dict of the runs on the features ``key`` names (a data set, or a class subset
        of one): one per feature matrix, as :class:`alkit.pool.StrategyCache` requires."""
        return self._shared.setdefault(key, {})

    def shared_keys(self) -> list:
        """The keys of the shared dicts made so far in this process."""
        return list(self._shared)


_WORKER_STATE = WorkerState()


def worker_state() -> WorkerState:
    """This process's :class:`WorkerState` (one per worker process: its tasks run one after another)."""
    return _WORKER_STATE


def worker_loader(dataset: str, scale: str, source: str, data_root: str | None) -> Callable[[], StudyData]:
    """How a worker loads a data set (for :meth:`WorkerState.data`): without a progress bar, and never
    extracting features (its :class:`FeaturesNotCached` goes back to the launcher, which extracts)."""
    return functools.partial(load_study_data, dataset, scale, source=source, data_root=data_root, extract=False,
                             progress=False)


def _worker_init(commit: str, threads: int, parent: int, command: str) -> None:
    torch.set_num_threads(threads)
    io.pin_provenance(commit, command)   # the parent's commit and command: the code and the sweep that made the runs

    def leave_with_parent() -> None:   # a killed sweep leaves no worker running (runs are saved atomically)
        while process_alive(parent):
            time.sleep(2)
        os._exit(1)

    threading.Thread(target=leave_with_parent, daemon=True).start()


def _worker_run(dataset: str, strategy: str, seeds: list[int], scale: str, out: str, source: str,
                data_root: str | None, claimed: str = "wait") -> str:
    started = time.perf_counter()
    state = worker_state()
    data = state.data(dataset, worker_loader(dataset, scale, source, data_root))
    frame = run_configured_sweep(dataset, scale, out, data=data, strategies=[strategy], seeds=seeds, progress=False,
                                 shared=state.shared(dataset), claimed=claimed)
    if frame.empty:
        return f"[{dataset}] {strategy} seed {','.join(map(str, seeds))}: claimed by another worker"
    finals = frame.groupby("seed")["top1"].last()
    return (f"[{dataset}] {strategy} seed {','.join(map(str, seeds))}: {time.perf_counter() - started:.0f} s "
            f"(top-1 at the end {', '.join(f'{v:.4f}' for v in finals)}) -> {out}/{dataset}")


def run_parallel(pending, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
                 jobs: int = 2, extract: bool = True, worker=None, worker_kwargs: dict | None = None,
                 poll_s: float = 1.0, locate=None) -> None:
    """Run ``pending`` ((dataset, (strategy,), seed) in priority order; finished ones are skipped) on
    ``jobs`` local processes started through submitit (``LocalExecutor``), with cpu_count // jobs
    torch threads each.  On 2 cores, two one-thread workers keep both cores busy through the many
    small steps (probe epochs, per-cluster loops) where one two-thread process leaves one idle.

    Every worker walks the whole list in priority order and computes the runs no other worker has
    claimed (:func:`alkit.experiments.runs.claim_run`), so the work is shared without a scheduler, a worker
    keeps a data set loaded and its round-0 heads across runs, and all seeds of a
    :data:`SHARED_ACROSS_SEEDS` strategy are one task.  Workers never extract features: a task whose
    features are not cached is reported back, this process extracts them (``extract=True``, else it
    stops with the message) and runs those tasks in another pass.  This process prints each run as
    its result appears.  ``worker`` replaces the function that runs one task (tests, the
    class-count experiment); it is called as ``worker(dataset, task, seeds, scale, out, source,
    data_root, claimed="skip", **worker_kwargs)``; ``locate(dataset, task, seed)`` then gives the
    ``(label, .json path)`` of a task's run, so that its result is printed as it appears."""
    tasks, grouped = [], {}
    for dataset, (strategy,), seed in pending:
        if strategy in SHARED_ACROSS_SEEDS:
            if (dataset, strategy) not in grouped:
                grouped[(dataset, strategy)] = []
                tasks.append((dataset, strategy, grouped[(dataset, strategy)]))
            grouped[(dataset, strategy)].append(seed)
        else:
            tasks.append((dataset, strategy, [seed]))
    folder = Path(out) / ".submitit"
    extracted: set = set()
    while tasks:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=7 * 24 * 60)
        started = [executor.submit(_local_worker, tasks, scale, out, source, data_root, _worker_threads(jobs),
                                   loaded_commit(), os.getpid(), worker, worker_kwargs or {}, io.launch_command())
                   for _ in range(min(jobs, len(tasks)))]
        uncached = _follow(started, pending, out, poll_s, locate)
        if not uncached:
            break
        missing = sorted({t[0] for t in uncached})
        if not extract:
            raise SystemExit(f"features of {', '.join(missing)} are not in the cache yet\n"
                             "(--no-extract: cache the features first)")
        for dataset in missing:
            if dataset not in extracted:
                print(f"[{dataset}] extracting features before its runs", flush=True)
                load_study_data(dataset, scale, source=source, data_root=data_root, extract=True)
                extracted.add(dataset)
        # each worker reports every task it could not load: run each once more
        tasks = [(d, s, list(seeds)) for d, s, seeds in dict.fromkeys((d, s, tuple(seeds)) for d, s, seeds in uncached)]
    shutil.rmtree(folder, ignore_errors=True)   # the workers' logs: kept only when a worker failed


def _follow(started, pending, out: str, poll_s: float, locate=None) -> list[tuple]:
    """Wait for the local workers; print each pending run once its result file appears (where
    ``locate`` says, for another experiment's tasks); return the tasks whose features were not
    cached.  A failed worker stops the others and raises."""
    def where(dataset, task, seed) -> tuple[str, str, Path]:
        if locate is not None:
            label, meta = locate(dataset, task, seed)
            return label, str(task[-1]), meta
        return dataset, task, run_path(Path(out) / dataset, task, seed).with_suffix(".json")

    located = {(d, t, seed): where(d, t, seed) for d, (t,), seed in pending if locate is not None or isinstance(t, str)}
    shown = {key for key, (_, _, meta) in located.items() if meta.exists()}   # finished before this sweep

    def show_new() -> None:
        for key, (label, name, meta) in located.items():
            if key not in shown and meta.exists():
                shown.add(key)
                line = _result_line(meta)
                if line:
                    print(f"[{label}] {name} seed {key[2]}: {line}", flush=True)

    uncached = []
    try:
        while started:
            time.sleep(poll_s)
            show_new()
            for job in [j for j in started if j.done()]:
                started.remove(job)
                try:
                    uncached += job.result()
                except Exception:   # submitit's FailedJobError: the worker's traceback is in its log
                    raise SystemExit(f"a sweep worker failed: {_last_line(job.paths.stderr)} "
                                     f"(its log: {job.paths.stderr})") from None
    finally:
        for job in started:   # an error or Ctrl-C here: no worker keeps running
            job.cancel(check=False)
    show_new()
    return uncached


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def _result_line(meta: Path) -> str:
    """"<seconds> s (top-1 at the end …)" from a finished run's files, or "" when unreadable."""
    try:
        seconds = json.loads(meta.read_text())["provenance"]["wall_seconds"]
        top1 = pd.read_csv(meta.with_suffix(".csv"))["top1"].iloc[-1]
    except (OSError, ValueError, KeyError, IndexError):
        return ""
    return f"{seconds:.0f} s (top-1 at the end {top1:.4f})"


def _local_worker(tasks, scale: str, out: str, source: str, data_root: str | None, threads: int, commit: str,
                  parent: int, worker=None, worker_kwargs: dict | None = None, command: str = "") -> list[tuple]:
    """One local worker (a submitit job): every task in order, skipping the runs others have
    claimed; returns the tasks whose features are not cached."""
    _worker_init(commit, threads, parent, command)
    worker = worker or _worker_run
    uncached = []
    for dataset, task, seeds in tasks:
        try:
            worker(dataset, task, seeds, scale, out, source, data_root, claimed="skip", **(worker_kwargs or {}))
        except FeaturesNotCached:
            uncached.append((dataset, task, seeds))
    return uncached


# --------------------------------------------------------------------------------------------
# SLURM: one job per run, a job array
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmOptions:
    """Resources of each run's job on a SLURM cluster (``python -m alkit reproduce results
    --executor slurm``).  A linear-probe run needs a few cores and the pool's features in memory:
    Tiny-ImageNet's 100 k × 1280 float16 take 0.3 GB, ImageNet's 1.28 M × 2048 5 GB."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int = 4
    mem_gb: int = 32
    timeout_min: int = 240
    array_parallelism: int = 64
    #: Seconds before the time limit at which SLURM signals the job: it checkpoints and requeues.
    signal_delay_s: int = 120

    def executor_parameters(self) -> dict:
        params = {"cpus_per_task": self.cpus_per_task, "mem": f"{self.mem_gb}GB", "time": self.timeout_min,
                  "array_parallelism": self.array_parallelism, "signal_delay_s": self.signal_delay_s}
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                params[name] = getattr(self, name)
        return params


class RunJob(submitit.helpers.Checkpointable):
    """One (data set, strategy, seed) run as a SLURM job.  On preemption or at its time limit SLURM
    signals the job, submitit requeues it (``Checkpointable``), and the run resumes from the
    checkpoint of its last finished round (:func:`alkit.loop.run_active_learning`), so a requeue
    costs at most the round in progress; its claim is recognised as its own (the job id stays)."""

    def __init__(self, dataset: str, strategy, seed: int, scale: str, out: str, source: str,
                 data_root: str | None, worker=None, worker_kwargs: dict | None = None) -> None:
        self.task = (dataset, strategy, int(seed), scale, str(out), source, data_root)
        self.worker, self.worker_kwargs = worker, dict(worker_kwargs or {})   # another experiment's task runner
        self.command = io.launch_command()   # the submitting command, recorded by the run (not submitit's)

    def __call__(self) -> str:
        dataset, strategy, seed, scale, out, source, data_root = self.task
        io.pin_provenance(loaded_commit(), self.command)
        if self.worker is not None:
            return self.worker(dataset, strategy, [seed], scale, out, source, data_root, **self.worker_kwargs)
        return _worker_run(dataset, strategy, [seed], scale, out, source, data_root)


def run_slurm(pending, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
              options: SlurmOptions = SlurmOptions(), folder: str | Path | None = None, worker=None,
              worker_kwargs: dict | None = None, locate=None) -> list[str]:
    """Submit every pending run that is not finished as one task of a SLURM job array; returns the
    job ids.  Jobs never extract features: cache them first (``python -m alkit features``, under
    torchrun for many GPUs).  The results land in ``out`` as a local sweep's do; the same command
    submits only what is still missing.  ``worker``, ``worker_kwargs`` and ``locate``: another
    experiment's tasks, as for :func:`run_parallel` (the worker must be importable on the nodes)."""
    folder = Path(folder) if folder is not None else Path(out) / ".submitit"

    def finished(d, s, seed) -> bool:
        meta = locate(d, s, seed)[1] if locate is not None else run_path(Path(out) / d, s, seed).with_suffix(".json")
        return meta.exists()

    todo = [(d, s, seed) for d, (s,), seed in pending if not finished(d, s, seed)]
    if not todo:
        print(f"every run is finished under {out}: nothing to submit", flush=True)
        return []
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as exc:   # submitit looks for srun first
        raise ParameterError(f"executor: no SLURM on this machine ({exc}); submit from the cluster's login node, or "
                             "use the local executor", param="executor") from None
    executor.update_parameters(name="alkit-sweep", **{f"slurm_{k}": v for k, v in options.executor_parameters().items()})
    with executor.batch():
        jobs = [executor.submit(RunJob(d, s, seed, scale, out, source, data_root, worker, worker_kwargs))
                for d, s, seed in todo]
    ids = [job.job_id for job in jobs]
    write_json(Path(out) / "slurm_jobs.json", {"submitted_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                "jobs": [{"job_id": i, "dataset": d, "strategy": s if isinstance(s, str)
                                                          else list(s), "seed": seed}
                                                         for i, (d, s, seed) in zip(ids, todo)],
                                                "logs": str(folder)})
    print(f"submitted {len(ids)} runs as SLURM array {ids[0].split('_')[0]} (logs in {folder}); results land in "
          f"{out}/ — run the same command again to submit what is still missing", flush=True)
    return ids


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
            raise ParameterError(f"datasets: {name!r} is not swept at scale {scale!r}; "
                                 f"choose from {', '.join(sorted(known_datasets))}", param="datasets")
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
            raise ParameterError(f"strategies: {name!r} is not swept at scale {scale!r}; "
                                 f"choose from {', '.join(sorted(known_strategies))}", param="strategies")
    return kept
