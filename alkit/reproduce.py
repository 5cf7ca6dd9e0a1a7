"""Run the companion notebooks and sweeps: what ``make reproduce-figures`` / ``reproduce-results`` call.

``python -m alkit.reproduce figures``          every figure and table from results/ (offline, no experiment)
``python -m alkit.reproduce results --scale smoke``  every notebook end to end on tiny data (CI)
``python -m alkit.reproduce results --scale cpu``    the offline sweeps into results/runs/cpu, then figures
``python -m alkit.reproduce results --scale paper``  the authors' schedule (GPU, your ImageNet + checkpoints)
``python -m alkit.reproduce class-count --jobs 2``  the class-count experiment, then its table and figure
``python -m alkit.reproduce sync`` / ``check``        write / compare the .ipynb twins of notebooks/*.py

Notebooks are executed with papermill; executed copies go to ``notebooks/executed/`` (ignored by
git), never over the source notebooks.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
#: One notebook per artefact of the paper, in the order they are run.
NOTEBOOKS = ("a_toy_vs_many_class", "b_class_imbalance", "c_long_tailed_cifar10", "d_imagenet_linear_eval",
             "e_summary", "f_playground", "g_class_count")
#: Rendered from committed results by ``make reproduce-figures`` (the playground computes, so not it).
FIGURE_NOTEBOOKS = tuple(n for n in NOTEBOOKS if n != "f_playground")
COMMITTED_CLASS_COUNT = "results/runs/class-count"
#: Data sets of each scale's sweep, in priority order (what runs first when time is short).
SWEEP_DATASETS = {"smoke": ("cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"),
                  "cpu": ("cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"),
                  "paper": ("imagenet",)}
COMMITTED_RUNS = "results/runs/cpu"
#: The cpu sweep in priority order, so that a sweep cut short holds the most useful runs: the
#: strategies with one chunked pass per round (and the baselines) on the toy and the many-class
#: data, then on the long tail (3-37 s per run); then the paper's two diversity
#: methods, BADGE and coreset, on the whole pool and as the authors ran them (partitioned); then the
#: later methods — first the two the claims judge (margin-clustering, class balancing), then the
#: two only reported (TypiClust, ProbCover); the synthetic ImageNet-shaped pool.  Every phase runs
#: seed by seed and skips finished runs.  Per-run times: results/benchmarks/rerun_comparison.md.
CPU_TIER1 = ("random", "balanced_random", "confidence", "margin", "entropy", "mase", "base")
CPU_PAPER_DIVERSITY = ("coreset", "badge", "partitioned_coreset", "partitioned_badge")
CPU_LATER_JUDGED = ("margin_clustering", "balancing")
CPU_LATER_REPORTED = ("typiclust", "probcover")
#: On Tiny-ImageNet a run costs minutes (200-class probe on up to 22 k points): the strategies the
#: claims turn on (random, BASE, margin, confidence) get all their seeds before the others.
TINY_FIRST = ("random", "base", "margin", "confidence")
CPU_PHASES = (
    ("cifar10", CPU_TIER1),
    ("tiny-imagenet", TINY_FIRST), ("tiny-imagenet", tuple(s for s in CPU_TIER1 if s not in TINY_FIRST)),
    ("cifar10-lt", CPU_TIER1),
    # Cheapest runs first (one-thread worker, idle machine; results/benchmarks/rerun_comparison.md):
    # lazy BADGE and the partitioned variants take under a minute per CIFAR-10 run; BADGE 1 min per
    # Tiny-ImageNet run; the long-tailed pool 10-40 s; full-pool coreset 40 s per CIFAR-10 run; the
    # partitioned variants on Tiny-ImageNet 1.2-1.6 min; full-pool coreset on Tiny-ImageNet (90 k
    # candidates, up to 20 k centres) 1.8 min last.
    ("cifar10", ("badge", "partitioned_coreset", "partitioned_badge")), ("tiny-imagenet", ("badge",)),
    ("cifar10-lt", CPU_PAPER_DIVERSITY), ("cifar10", ("coreset",)),
    ("tiny-imagenet", ("partitioned_coreset", "partitioned_badge")), ("tiny-imagenet", ("coreset",)),
    ("cifar10", CPU_LATER_JUDGED), ("tiny-imagenet", CPU_LATER_JUDGED), ("cifar10-lt", CPU_LATER_JUDGED),
    ("cifar10", CPU_LATER_REPORTED), ("tiny-imagenet", CPU_LATER_REPORTED), ("cifar10-lt", CPU_LATER_REPORTED),
    ("imagenet-synthetic", None),
    # Five more seeds on Tiny-ImageNet for the score-based strategies and the baselines, whose
    # differences from random there are fractions of a point.
    ("tiny-imagenet", CPU_TIER1, (5, 6, 7, 8, 9)),
)


# --------------------------------------------------------------------------------------------
# .py <-> .ipynb pairs
# --------------------------------------------------------------------------------------------

def notebook_sources(names=NOTEBOOKS) -> list[Path]:
    return [NOTEBOOK_DIR / f"{name}.py" for name in names]


def _cells(notebook) -> list[tuple[str, str, tuple]]:
    return [(c.cell_type, c.source.strip(), tuple(sorted(c.metadata.get("tags", [])))) for c in notebook.cells]


def pair_mismatches(names=NOTEBOOKS) -> list[str]:
    """Where a ``.py`` and its ``.ipynb`` disagree (cell types, sources, tags), or an ``.ipynb``
    carries outputs or lacks the kernelspec papermill needs.  Empty when all pairs agree."""
    import jupytext
    import nbformat

    problems = []
    for py in notebook_sources(names):
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            problems.append(f"{ipynb.name}: missing (run `python -m alkit.reproduce sync`)")
            continue
        from_py = jupytext.read(py)
        stored = nbformat.read(ipynb, as_version=4)
        if _cells(from_py) != _cells(stored):
            problems.append(f"{ipynb.name}: cells differ from {py.name} (run `python -m alkit.reproduce sync`)")
        if any(c.get("outputs") or c.get("execution_count") for c in stored.cells if c.cell_type == "code"):
            problems.append(f"{ipynb.name}: holds outputs; commit notebooks without outputs")
        if stored.metadata.get("kernelspec", {}).get("name") != "python3":
            problems.append(f"{ipynb.name}: kernelspec python3 missing (papermill needs it)")
        if not any("parameters" in c.metadata.get("tags", []) for c in stored.cells):
            problems.append(f"{ipynb.name}: no cell tagged 'parameters'")
    return problems


def sync_pairs(names=NOTEBOOKS) -> list[Path]:
    """Write each ``.ipynb`` whose cells differ from its ``.py`` (the reviewed source), without outputs."""
    import jupytext

    import nbformat

    written = []
    for py in notebook_sources(names):
        notebook, ipynb = jupytext.read(py), py.with_suffix(".ipynb")
        if ipynb.exists() and _cells(notebook) == _cells(nbformat.read(ipynb, as_version=4)):
            continue   # already in step: rewriting would only renew the cell ids
        jupytext.write(notebook, ipynb)
        written.append(ipynb)
    return written


# --------------------------------------------------------------------------------------------
# Executing notebooks
# --------------------------------------------------------------------------------------------

_KERNEL_MANAGER = None


def quiet_kernel_manager_class():
    """The jupyter_client kernel manager papermill gets here: it starts the same ipykernel, without
    the two messages a clean run used to print on the terminal, both noise for a user:

    * ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` — jupyter_client's shutdown sends
      SIGINT before the shutdown request "to break a busy kernel"; after the last cell the kernel is
      idle, and the signal only landed (at random) in whatever the kernel was still doing.  Here the
      shutdown interrupt is skipped: the shutdown request, then SIGTERM / SIGKILL after
      ``shutdown_wait_time``, still stop a kernel that does not exit.
    * ``[IPKernelApp] WARNING | Kernel is running over TCP without encryption`` — ipykernel ≥ 7 warns
      when its sockets are plain TCP.  Here they are encrypted (CurveZMQ keys provisioned by the
      manager, jupyter_client ≥ 8.10, when the kernelspec declares support) or, failing that, local
      IPC sockets (POSIX) instead of TCP.
    """
    global _KERNEL_MANAGER
    if _KERNEL_MANAGER is not None:
        return _KERNEL_MANAGER
    import zmq
    from jupyter_client import AsyncKernelManager

    class QuietKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            supports = getattr(self, "_kernel_supports_curve_encryption", None)
            if self.has_trait("transport_encryption") and zmq.has("curve") and supports is not None and supports():
                self.transport_encryption = "auto"
            elif os.name == "posix" and self.transport == "tcp":
                self.transport = "ipc"   # unix sockets beside the connection file (owner-only runtime folder)

        async def _async_interrupt_kernel(self) -> None:
            if self.shutting_down:   # see the docstring: nothing to break, only noise
                return
            await super()._async_interrupt_kernel()

    _KERNEL_MANAGER = QuietKernelManager
    return QuietKernelManager


def execute(name: str, parameters: dict, out_dir: Path, timeout: int = 1800) -> Path:
    """Run ``notebooks/<name>.ipynb`` with papermill in the repository root; the executed copy goes
    to ``out_dir`` (never over the source)."""
    import warnings

    import papermill

    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        raise ValueError(f"notebook {source} is missing: run `python -m alkit.reproduce sync`")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    started = time.perf_counter()
    # debugpy (imported by ipykernel) warns on Python ≥ 3.11 that frozen modules may hide breakpoints:
    # no debugger runs here.  Papermill's own command line sets the same variable for the same reason.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    with warnings.catch_warnings():
        # Deprecations inside the Jupyter machinery (e.g. nbclient's datetime.utcnow() on Python ≥ 3.12)
        # are for its maintainers, not for someone rendering figures; the notebooks' own warnings are
        # kept in their executed copies.
        for module in ("papermill", "nbclient", "nbformat", "jupyter_client", "jupyter_core", "zmq", "traitlets"):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning, module=module)
        papermill.execute_notebook(str(source), str(target), parameters=parameters, cwd=str(REPO),
                                   kernel_name="python3", progress_bar=False, execution_timeout=timeout,
                                   kernel_manager_class=quiet_kernel_manager_class())
    shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
    print(f"  {name}: {time.perf_counter() - started:.1f} s -> {shown}", flush=True)
    return target


def _parameters(name: str, scale: str, results: str, figures: str, tables: str, run_missing: bool,
                source: str, class_count_runs: str | None = None) -> dict:
    params = {"SCALE": scale, "RESULTS_DIR": results, "FIGURES_DIR": figures, "RUN_MISSING": run_missing,
              "SOURCE": source}
    if name == "e_summary":
        params["TABLES_DIR"] = tables
        if scale != "cpu":   # the earlier probe's runs exist at cpu scale only
            params["BEFORE_RESULTS_DIR"] = None
    if name == "g_class_count":   # its own runs beside the sweep's (K = 200 is the sweep's Tiny-ImageNet)
        runs = class_count_runs or str(Path(results).parent / "class-count")
        params = {"SCALE": scale, "RUNS_DIR": runs, "SWEEP_DIR": results, "FIGURES_DIR": figures,
                  "TABLES_DIR": tables, "RUN_MISSING": run_missing, "SOURCE": source}
    if name == "f_playground":  # the playground computes its own small runs and keeps them out of results/
        params = {"SCALE": "smoke", "SOURCE": source, "FIGURES_DIR": str(Path(figures).parent / "playground")}
    return params


def reproduce_figures(results: str = COMMITTED_RUNS, figures: str = "results/figures",
                      tables: str = "results/tables", out_dir: Path = EXECUTED_DIR / "figures",
                      class_count_runs: str = COMMITTED_CLASS_COUNT) -> list[Path]:
    """Every figure and table from the finished runs under ``results`` — nothing is recomputed.
    A notebook whose data set has no finished runs yet is skipped with a message.  Returns the
    executed copies."""
    from alkit.experiment import finished_runs

    needs = {"a_toy_vs_many_class": ("cifar10", "tiny-imagenet"), "b_class_imbalance": ("cifar10", "tiny-imagenet"),
             "c_long_tailed_cifar10": ("cifar10-lt",), "d_imagenet_linear_eval": ("imagenet-synthetic",),
             "e_summary": (), "g_class_count": ()}
    executed = []
    for name in FIGURE_NOTEBOOKS:
        missing = [d for d in needs[name] if not finished_runs(REPO / results, d)]
        if name == "g_class_count" and not finished_runs(REPO / class_count_runs):
            print(f"  {name}: skipped, no class-count runs under {class_count_runs}", flush=True)
            continue
        if missing:
            print(f"  {name}: skipped, no finished runs of {', '.join(missing)} under {results}", flush=True)
            continue
        executed.append(execute(name, _parameters(name, "cpu", results, figures, tables, False, "auto",
                                                  class_count_runs), out_dir))
    return executed


def run_smoke(base: str | Path = "notebooks/executed/smoke", source: str = "auto", data_root: str | None = None,
              names=NOTEBOOKS) -> list[Path]:
    """Every notebook end to end at smoke scale; runs, figures, tables and executed copies all go
    under ``base`` (never into results/)."""
    base = Path(base)
    executed = []
    for name in names:
        params = _parameters(name, "smoke", str(base / "runs"), str(base / "figures"), str(base / "tables"), True,
                             source)
        if data_root:
            params["DATA_ROOT"] = data_root
        executed.append(execute(name, params, base if base.is_absolute() else REPO / base))
    return executed


def run_phases(phases, scale: str, out: str, *, source: str = "auto", data_root: str | None = None,
               extract: bool = True, wait_seconds: float = 0.0, jobs: int = 1) -> None:
    """Run ``(dataset, strategies)`` phases in order.  With ``extract=False`` a phase whose features
    are not cached yet is put off (and retried first once they are) instead of extracting them,
    for up to ``wait_seconds`` of waiting — so a sweep can start while features are extracted.
    ``jobs`` > 1 runs that many worker processes (see :func:`run_parallel`).  The sweep's wall time
    is appended to ``<out>/sweep_times.json``."""
    from alkit import experiment
    from alkit.io import loaded_commit

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (worker processes), got {jobs!r}")
    loaded_commit()   # every run of this sweep records the commit it started from
    # One run at a time (seed-major inside a phase), so that priorities are checked again after every
    # run: a data set whose features arrive mid-sweep starts after the current run, not a whole phase.
    pending = []
    for dataset, strategies, *seeds in phases:   # (dataset, strategies[, seeds]): no seeds = the scale's
        config = experiment.sweep_config(dataset, scale, strategies=strategies)
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
                  if _mtime(experiment.run_path(Path(out) / d, s, seed).with_suffix(".json")) >= started_epoch)
    _log_sweep(out, scale, jobs, len(pending), written, time.perf_counter() - started)


def _mtime(path: Path) -> float:
    return path.stat().st_mtime if path.exists() else -1.0


def _log_sweep(out: str, scale: str, jobs: int, planned: int, ran: int | None, seconds: float) -> None:
    """Append this sweep's wall time to ``<out>/sweep_times.json`` (rewritten atomically): how many
    runs it planned, how many it ran (the others were finished already), with how many workers."""
    import json

    import torch

    from alkit.io import loaded_commit, write_json

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
# alkit.experiment (and torch) are imported inside the worker functions: the notebook commands of
# this module (sync, check, figures) need neither, and a spawned worker imports this module first.
_WORKER_DATA: dict = {}
_WORKER_SHARED: dict = {}


def _worker_init(commit: str, threads: int) -> None:
    import torch

    from alkit import io

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
    from alkit import experiment

    started = time.perf_counter()
    if dataset not in _WORKER_DATA:   # once per data set and worker
        _WORKER_DATA[dataset] = experiment.load_study_data(dataset, scale, source=source, data_root=data_root,
                                                           extract=False, progress=False)
    frame = experiment.run_configured_sweep(dataset, scale, out, data=_WORKER_DATA[dataset], strategies=[strategy],
                                            seeds=seeds, progress=False,
                                            shared=_WORKER_SHARED.setdefault(dataset, {}))
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
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    from alkit import experiment
    from alkit.io import loaded_commit

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
                except experiment.FeaturesNotCached as exc:
                    dataset = task_of[future][0]
                    if not extract:
                        for other in remaining:
                            other.cancel()
                        raise SystemExit(f"{exc}\n(--no-extract: cache the features first)") from exc
                    if dataset not in extracted:   # once; the other workers go on meanwhile
                        print(f"[{dataset}] extracting features before its runs", flush=True)
                        experiment.load_study_data(dataset, scale, source=source, data_root=data_root, extract=True)
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
    from alkit import experiment

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
                    loaded[dataset] = experiment.load_study_data(dataset, scale, source=source, data_root=data_root,
                                                                 extract=extract)
                except experiment.FeaturesNotCached as exc:
                    print(f"[{dataset}] put off: {exc}", flush=True)
                    continue
            frame = experiment.run_configured_sweep(dataset, scale, out, data=loaded[dataset], strategies=list(strategies),
                                                    seeds=[seed], progress=False,
                                                    shared=shared.setdefault(dataset, {}))
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
    from alkit import experiment

    known_datasets = {d for d, *_ in phases}
    for name in datasets or ():
        if name not in known_datasets:
            raise ValueError(f"--datasets: {name!r} is not swept at scale {scale!r}; "
                             f"choose from {', '.join(sorted(known_datasets))}")
    kept, known_strategies = [], set()
    for dataset, names, *seeds in phases:
        names = tuple(names or experiment.sweep_config(dataset, scale).strategy_list())
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


def reproduce_results(scale: str, source: str = "auto", data_root: str | None = None, extract: bool = True,
                      wait_seconds: float = 0.0, datasets=None, strategies=None, jobs: int = 1,
                      out: str | None = None) -> None:
    """``smoke``: every notebook end to end on tiny data into notebooks/executed/smoke/.
    ``cpu`` / ``paper``: the sweeps (resumable, in priority order; ``datasets`` / ``strategies``
    run only those runs), then the figures."""
    if scale == "smoke":
        run_smoke(source=source, data_root=data_root)
        return
    out = out or (COMMITTED_RUNS if scale == "cpu" else f"results/runs/{scale}")
    phases = CPU_PHASES if scale == "cpu" else [(d, None) for d in SWEEP_DATASETS[scale]]
    if datasets or strategies:
        phases = only_phases(phases, scale, datasets, strategies)
    run_phases(phases, scale, out, source=source, data_root=data_root, extract=extract, wait_seconds=wait_seconds,
               jobs=jobs)
    if scale == "cpu" and Path(out).resolve() == (REPO / COMMITTED_RUNS).resolve():
        reproduce_figures(out)
    elif scale == "cpu":   # the committed figures and tables stay those of the committed runs
        print(f"runs in {out}; figures from them: python -m alkit.reproduce figures --results {out}", flush=True)


def reproduce_class_count(out: str = COMMITTED_CLASS_COUNT, sweep_out: str = COMMITTED_RUNS, jobs: int = 1,
                          extract: bool = True, class_counts=None, strategies=None, seeds=None,
                          source: str = "auto", data_root: str | None = None) -> None:
    """The class-count experiment (``alkit.class_count``): its runs (resumable; K = 200 is the cpu
    sweep's Tiny-ImageNet), then ``g_class_count`` renders its table and figure from them."""
    from alkit import class_count

    class_count.run_class_count(out, sweep_out, class_counts=class_counts or class_count.CLASS_COUNTS,
                                strategies=strategies or class_count.STRATEGIES, seeds=seeds or class_count.SEEDS,
                                jobs=jobs, source=source, data_root=data_root, extract=extract)
    if Path(out).resolve() == (REPO / COMMITTED_CLASS_COUNT).resolve():
        execute("g_class_count", _parameters("g_class_count", "cpu", sweep_out, "results/figures", "results/tables",
                                             False, source, out), EXECUTED_DIR / "figures")
    else:   # the committed figure and table stay those of the committed runs
        print(f"runs in {out}; table and figure from them: run notebooks/g_class_count with RUNS_DIR={out}",
              flush=True)


def _shown(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it, with a trailing slash."""
    path = Path(path)
    full = path if path.is_absolute() else REPO / path
    try:
        return f"{full.resolve().relative_to(REPO)}/"
    except ValueError:
        return f"{path}/"


def _csv(cast, flag: str, what: str):
    """An argparse type: comma-separated ``what``, each once."""
    def parse(text: str) -> list:
        from alkit.cli import UsageError, parse_list

        try:
            return parse_list(text, flag, what, cast)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[1]) from None
    parse.__name__ = what   # argparse names the type in its message
    return parse


def _positive(text: str) -> int:
    from alkit.cli import positive_int

    return positive_int(text)


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of minutes, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    from alkit.cli import HelpFormatter, OneLineParser, one_line, seed_int

    prog = "python -m alkit.reproduce"
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
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
    res.add_argument("--datasets", type=_csv(str, "--datasets", "data set names"), default=None,
                     help="comma-separated: run only these data sets of the scale (default: all)")
    res.add_argument("--strategies", type=_csv(str, "--strategies", "strategy names"), default=None,
                     help="comma-separated: run only these strategies (default: all)")
    res.add_argument("--jobs", type=_positive, default=1,
                     help="worker processes, with cpu count // jobs torch threads each (make: JOBS=2)")
    res.add_argument("--out", default=None, help=f"runs folder (default {COMMITTED_RUNS} for cpu)")
    cc = sub.add_parser("class-count", help="the class-count experiment (Tiny-ImageNet restricted to K classes)",
                        formatter_class=HelpFormatter)
    cc.add_argument("--jobs", type=_positive, default=1, help="worker processes (make: JOBS=2)")
    cc.add_argument("--out", default=COMMITTED_CLASS_COUNT, help="runs with K < 200 classes")
    cc.add_argument("--sweep-out", default=COMMITTED_RUNS, help="the cpu sweep's runs (K = 200 is its Tiny-ImageNet)")
    cc.add_argument("--class-counts", type=_csv(_positive, "--class-counts", "positive class counts"), default=None)
    cc.add_argument("--strategies", type=_csv(str, "--strategies", "strategy names"), default=None)
    cc.add_argument("--seeds", type=_csv(seed_int, "--seeds", "non-negative integer seeds"), default=None)
    cc.add_argument("--no-extract", action="store_true", help="fail instead of extracting missing features")
    cc.add_argument("--data-root", default=None)
    sub.add_parser("sync", help="write notebooks/*.ipynb from notebooks/*.py")
    sub.add_parser("check", help="check that each .py/.ipynb pair agrees")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    started = time.perf_counter()
    where = ""
    try:
        if args.command == "sync":
            for path in sync_pairs():
                print("wrote", path.relative_to(REPO))
        elif args.command == "check":
            problems = pair_mismatches()
            for p in problems:
                print(p, file=sys.stderr)
            return 1 if problems else 0
        elif args.command == "figures":
            results = Path(args.results)
            if not (results if results.is_absolute() else REPO / results).is_dir():
                fig.error(f"argument --results: folder {args.results} does not exist; pass the folder of "
                             f"finished runs (default {COMMITTED_RUNS})")
            executed = reproduce_figures(args.results)
            where = (f"figures in {_shown('results/figures')}, tables in {_shown('results/tables')} "
                     f"(executed notebooks in {_shown(EXECUTED_DIR / 'figures')})" if executed
                     else f"no notebook ran: no finished runs under {args.results}")
        elif args.command == "class-count":
            reproduce_class_count(args.out, args.sweep_out, args.jobs, not args.no_extract, args.class_counts,
                                  args.strategies, args.seeds, data_root=args.data_root)
            where = f"runs in {_shown(args.out)}"
            if Path(args.out).resolve() == (REPO / COMMITTED_CLASS_COUNT).resolve():
                where += f"; table in {_shown('results/tables')}, figure in {_shown('results/figures')}"
        else:
            if args.scale == "smoke" and (args.datasets or args.strategies):
                res.error("--datasets / --strategies apply to the cpu and paper sweeps, not to smoke")
            if args.scale == "smoke" and (args.jobs != 1 or args.out):
                res.error("--jobs / --out apply to the cpu and paper sweeps, not to smoke")
            reproduce_results(args.scale, args.source, args.data_root, extract=not args.no_extract,
                              wait_seconds=60 * args.wait_minutes, datasets=args.datasets, strategies=args.strategies,
                              jobs=args.jobs, out=args.out)
            if args.scale == "smoke":
                where = (f"runs, figures and tables in {_shown('notebooks/executed/smoke')} "
                         "(results/ is left as it is)")
            else:
                out = args.out or (COMMITTED_RUNS if args.scale == "cpu" else f"results/runs/{args.scale}")
                where = f"runs in {_shown(out)}"
                if args.scale == "cpu" and Path(out).resolve() == (REPO / COMMITTED_RUNS).resolve():
                    where += f"; figures in {_shown('results/figures')}, tables in {_shown('results/tables')}"
    except ValueError as exc:
        print(f"{prog} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - started:.0f} s" + (f": {where}" if where else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
