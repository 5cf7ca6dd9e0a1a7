"""Run the companion notebooks and sweeps: what ``make reproduce-figures`` / ``reproduce-results`` call.

``python -m alkit reproduce figures``          every figure and table from results/ (offline, no experiment)
``python -m alkit reproduce results --scale smoke``  every notebook end to end on tiny data (CI)
``python -m alkit reproduce results --scale cpu``    the offline sweeps into results/runs/cpu, then figures
``python -m alkit reproduce results --scale paper``  the authors' schedule (GPU, your ImageNet + checkpoints)
``python -m alkit reproduce class-count --jobs 2``  the class-count experiment, then its table and figure
``python -m alkit reproduce mechanism --jobs 2``    the mechanism experiment (claim 1), then its tables and figure
``python -m alkit reproduce finetune --scale gpu``   the fine-tuning sweep (GPU) into results/runs/finetune-gpu
``python -m alkit reproduce sync`` / ``check``        write / compare the .ipynb twins of notebooks/*.py

Notebooks are executed with papermill; executed copies go to ``notebooks/executed/`` (ignored by
git), never over the source notebooks.
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import papermill
import torch
import zmq
from jupyter_client import AsyncKernelManager

from alkit import finetune
from alkit.experiments import class_count, mechanism
from alkit.experiments.catalog import CPU_PHASES, SWEEP_DATASETS, default_data_root
from alkit.experiments.launch import append_sweep_log, only_phases, run_phases
from alkit.experiments.runs import finished_runs, run_configured_sweep
from alkit.io import launch_command, loaded_commit

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
EXECUTED_DIR = NOTEBOOK_DIR / "executed"
#: One notebook per artefact of the paper, in the order they are run.
NOTEBOOKS = ("a_toy_vs_many_class", "b_class_imbalance", "c_long_tailed_cifar10", "d_imagenet_linear_eval",
             "i_mechanism", "e_summary", "f_playground", "g_class_count", "h_finetune_vs_linear")
#: i runs before e: the summary judges claim 1 on the mechanism runs (at smoke scale, i makes them).
#: Rendered from committed results by ``make reproduce-figures`` (the playground computes, so not it).
FIGURE_NOTEBOOKS = tuple(n for n in NOTEBOOKS if n != "f_playground")
COMMITTED_CLASS_COUNT = "results/runs/class-count"
COMMITTED_MECHANISM = "results/runs/mechanism"
COMMITTED_RUNS = "results/runs/cpu"
#: The fine-tuning runs notebook h reads beside the linear ones (``make reproduce-finetune``, a GPU).
COMMITTED_FINETUNE = "results/runs/finetune-gpu"

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
    problems = []
    for py in notebook_sources(names):
        ipynb = py.with_suffix(".ipynb")
        if not ipynb.exists():
            problems.append(f"{ipynb.name}: missing (run `python -m alkit reproduce sync`)")
            continue
        from_py = jupytext.read(py)
        stored = nbformat.read(ipynb, as_version=4)
        if _cells(from_py) != _cells(stored):
            problems.append(f"{ipynb.name}: cells differ from {py.name} (run `python -m alkit reproduce sync`)")
        if any(c.get("outputs") or c.get("execution_count") for c in stored.cells if c.cell_type == "code"):
            problems.append(f"{ipynb.name}: holds outputs; commit notebooks without outputs")
        if stored.metadata.get("kernelspec", {}).get("name") != "python3":
            problems.append(f"{ipynb.name}: kernelspec python3 missing (papermill needs it)")
        if not any("parameters" in c.metadata.get("tags", []) for c in stored.cells):
            problems.append(f"{ipynb.name}: no cell tagged 'parameters'")
    return problems


def sync_pairs(names=NOTEBOOKS) -> list[Path]:
    """Write each ``.ipynb`` whose cells differ from its ``.py`` (the reviewed source), without outputs."""
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
    source = NOTEBOOK_DIR / f"{name}.ipynb"
    if not source.exists():
        raise ValueError(f"notebook {source} is missing: run `python -m alkit reproduce sync`")
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}.ipynb"
    started = time.perf_counter()
    print(f"  {name}: running …", flush=True)   # a first run may unpack archives and extract features for minutes
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
        try:
            papermill.execute_notebook(str(source), str(target), parameters=parameters, cwd=str(REPO),
                                       kernel_name="python3", progress_bar=False, execution_timeout=timeout,
                                       kernel_manager_class=quiet_kernel_manager_class())
        except papermill.PapermillExecutionError as exc:   # the cell's error, and where its whole traceback is
            shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
            raise ValueError(f"notebook {name} stopped in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                             f"(the executed copy with the traceback: {shown})") from None
    shown = target.relative_to(REPO) if target.is_relative_to(REPO) else target
    print(f"  {name}: {time.perf_counter() - started:.1f} s -> {shown}", flush=True)
    return target


def _parameters(name: str, scale: str, results: str, figures: str, tables: str, run_missing: bool,
                source: str, class_count_runs: str | None = None, finetune_runs: str | None = None,
                mechanism_runs: str | None = None) -> dict:
    params = {"SCALE": scale, "RESULTS_DIR": results, "FIGURES_DIR": figures, "RUN_MISSING": run_missing,
              "SOURCE": source}
    class_count_runs = class_count_runs or str(Path(results).parent / "class-count")
    mechanism_runs = mechanism_runs or str(Path(results).parent / "mechanism")
    if name == "e_summary":
        params.update(TABLES_DIR=tables, MECHANISM_DIR=mechanism_runs, CLASS_COUNT_DIR=class_count_runs)
        if scale != "cpu":   # the earlier probe's runs exist at cpu scale only
            params["BEFORE_RESULTS_DIR"] = None
    if name == "i_mechanism":   # its own runs beside those it shares with the class-count experiment and the sweep
        params = {"SCALE": scale, "RUNS_DIR": mechanism_runs, "CLASS_COUNT_DIR": class_count_runs,
                  "SWEEP_DIR": results, "FIGURES_DIR": figures, "TABLES_DIR": tables, "RUN_MISSING": run_missing,
                  "SOURCE": source}
    if name == "g_class_count":   # its own runs beside the sweep's (K = 200 is the sweep's Tiny-ImageNet)
        params = {"SCALE": scale, "RUNS_DIR": class_count_runs, "SWEEP_DIR": results, "FIGURES_DIR": figures,
                  "TABLES_DIR": tables, "RUN_MISSING": run_missing, "SOURCE": source}
    if name == "f_playground":  # the playground computes its own small runs and keeps them out of results/
        params = {"SCALE": "smoke", "SOURCE": source, "FIGURES_DIR": str(Path(figures).parent / "playground")}
    if name == "h_finetune_vs_linear":   # the fine-tuning runs beside the linear sweep's (smoke: its own, seconds)
        tuned = "smoke" if scale == "smoke" else "gpu"
        params.update(FINETUNE_SCALE=tuned, FINETUNE_RUNS_DIR=finetune_runs or str(Path(results).parent /
                                                                                   f"finetune-{tuned}"))
        if scale == "smoke":
            params["TORCH_THREADS"] = 1   # a two-layer CNN: one thread is several times faster on a busy machine
    return params


def is_committed(results: str | Path) -> bool:
    """Whether ``results`` is the committed runs folder (whose figures and tables are committed)."""
    path = Path(results)
    return (path if path.is_absolute() else REPO / path).resolve() == (REPO / COMMITTED_RUNS).resolve()


def reproduce_figures(results: str = COMMITTED_RUNS, figures: str | None = None, tables: str | None = None,
                      out_dir: Path | None = None, class_count_runs: str | None = None,
                      finetune_runs: str | None = None, mechanism_runs: str | None = None) -> list[Path]:
    """Every figure and table from the finished runs under ``results`` (and ``class_count_runs``,
    ``finetune_runs``, ``mechanism_runs``) — nothing is recomputed.  A notebook whose data set has no
    finished runs yet is skipped with a message.  Returns the executed copies.

    From the committed runs the figures and tables go to results/figures and results/tables; from
    any other runs folder (``reproduce results --out DIR``) they go to
    ``notebooks/executed/figures-<DIR name>/`` unless asked otherwise, so the committed files are
    never overwritten with other numbers, and the other experiments' runs are looked for beside it
    (``DIR/../class-count``, …)."""
    committed = is_committed(results)
    if committed:
        defaults = ("results/figures", "results/tables", EXECUTED_DIR / "figures", COMMITTED_CLASS_COUNT,
                    COMMITTED_FINETUNE, COMMITTED_MECHANISM)
    else:
        base = EXECUTED_DIR / f"figures-{Path(results).resolve().name}"
        sibling = Path(results).parent
        defaults = (str(base / "figures"), str(base / "tables"), base, str(sibling / "class-count"),
                    str(sibling / "finetune-gpu"), str(sibling / "mechanism"))
    figures, tables, out_dir, class_count_runs, finetune_runs, mechanism_runs = (
        given if given is not None else default for given, default in
        zip((figures, tables, out_dir, class_count_runs, finetune_runs, mechanism_runs), defaults))
    needs = {"a_toy_vs_many_class": ("cifar10", "tiny-imagenet"), "b_class_imbalance": ("cifar10", "tiny-imagenet"),
             "c_long_tailed_cifar10": ("cifar10-lt",), "d_imagenet_linear_eval": ("imagenet-synthetic",),
             "e_summary": (), "g_class_count": (), "h_finetune_vs_linear": ("cifar10",), "i_mechanism": ()}
    executed = []
    for name in FIGURE_NOTEBOOKS:
        missing = [d for d in needs[name] if not finished_runs(REPO / results, d)]
        if name == "e_summary" and not any(finished_runs(REPO / results, d) for d in SWEEP_DATASETS["cpu"]):
            missing = list(SWEEP_DATASETS["cpu"])
        if name == "g_class_count" and not finished_runs(REPO / class_count_runs):
            print(f"  {name}: skipped, no class-count runs under {class_count_runs}", flush=True)
            continue
        if name == "i_mechanism" and not finished_runs(REPO / mechanism_runs):
            print(f"  {name}: skipped, no mechanism runs under {mechanism_runs} (make reproduce-mechanism)", flush=True)
            continue
        if name == "h_finetune_vs_linear" and not finished_runs(REPO / finetune_runs, "cifar10"):
            print(f"  {name}: skipped, no finished fine-tuning runs under {finetune_runs} (a GPU makes them: "
                  "make reproduce-finetune)", flush=True)
            continue
        if missing:
            print(f"  {name}: skipped, no finished runs of {', '.join(missing)} under {results}", flush=True)
            continue
        executed.append(execute(name, _parameters(name, "cpu", results, figures, tables, False, "auto",
                                                  class_count_runs, finetune_runs, mechanism_runs), out_dir))
    return executed


def run_smoke(base: str | Path = "notebooks/executed/smoke", source: str = "auto", data_root: str | None = None,
              names=NOTEBOOKS) -> list[Path]:
    """Every notebook end to end at smoke scale; runs, figures, tables and executed copies all go
    under ``base`` (never into results/)."""
    base = Path(base)
    executed = []
    if source != "synthetic" and (data_root or default_data_root()) is not None:
        print(f"smoke: real slices from {data_root or default_data_root()}; a first run unpacks the archives and "
              "extracts the slices' features (minutes, once), later runs take seconds", flush=True)
    for name in names:
        params = _parameters(name, "smoke", str(base / "runs"), str(base / "figures"), str(base / "tables"), True,
                             source)
        if data_root:
            params["DATA_ROOT"] = data_root
        executed.append(execute(name, params, base if base.is_absolute() else REPO / base))
    return executed



def reproduce_results(scale: str, source: str = "auto", data_root: str | None = None, extract: bool = True,
                      wait_seconds: float = 0.0, datasets=None, strategies=None, jobs: int = 1,
                      out: str | None = None, executor: str | None = None, slurm=None) -> None:
    """``smoke``: every notebook end to end on tiny data into notebooks/executed/smoke/.
    ``cpu`` / ``paper``: the sweeps (resumable, in priority order; ``datasets`` / ``strategies``
    run only those runs; ``executor`` and ``slurm``: see :func:`alkit.experiments.launch.run_phases`), then the
    figures (not after a SLURM submission: run ``figures`` once the jobs are done)."""
    if scale == "smoke":
        run_smoke(source=source, data_root=data_root)
        return
    out = out or (COMMITTED_RUNS if scale == "cpu" else f"results/runs/{scale}")
    phases = CPU_PHASES if scale == "cpu" else [(d, None) for d in SWEEP_DATASETS[scale]]
    if datasets or strategies:
        phases = only_phases(phases, scale, datasets, strategies)
    run_phases(phases, scale, out, source=source, data_root=data_root, extract=extract, wait_seconds=wait_seconds,
               jobs=jobs, executor=executor, slurm=slurm)
    if executor == "slurm":
        return
    if scale == "cpu" and is_committed(out):
        reproduce_figures(out)
    elif scale == "cpu":   # the committed figures and tables stay those of the committed runs
        print(f"runs in {out}; figures from them: python -m alkit reproduce figures --results {out}", flush=True)


def reproduce_class_count(out: str = COMMITTED_CLASS_COUNT, sweep_out: str = COMMITTED_RUNS, jobs: int = 1,
                          extract: bool = True, class_counts=None, strategies=None, seeds=None,
                          source: str = "auto", data_root: str | None = None) -> None:
    """The class-count experiment (``alkit.experiments.class_count``): its runs (resumable; K = 200 is the cpu
    sweep's Tiny-ImageNet), then ``g_class_count`` renders its table and figure from them."""
    class_count.run_class_count(out, sweep_out, class_counts=class_counts or class_count.CLASS_COUNTS,
                                strategies=strategies or class_count.STRATEGIES, seeds=seeds or class_count.SEEDS,
                                jobs=jobs, source=source, data_root=data_root, extract=extract)
    if Path(out).resolve() == (REPO / COMMITTED_CLASS_COUNT).resolve():
        execute("g_class_count", _parameters("g_class_count", "cpu", sweep_out, "results/figures", "results/tables",
                                             False, source, out), EXECUTED_DIR / "figures")
    else:   # the committed figure and table stay those of the committed runs
        print(f"runs in {out}; table and figure from them: run notebooks/g_class_count with RUNS_DIR={out}",
              flush=True)


def reproduce_mechanism(out: str = COMMITTED_MECHANISM, class_count_out: str = COMMITTED_CLASS_COUNT,
                        sweep_out: str = COMMITTED_RUNS, jobs: int = 1, extract: bool = True, source: str = "auto",
                        data_root: str | None = None, executor: str | None = None, slurm=None) -> None:
    """The mechanism experiment (``alkit.experiments.mechanism``): its runs (resumable; the plain strategies'
    runs are the class-count experiment's and the cpu sweep's; ``executor``, ``slurm``: as every
    sweep's), then ``i_mechanism`` and ``e_summary`` render its tables, figure and claim 1's
    verdict from them (not after a SLURM submission: run ``figures`` once the jobs are done)."""
    mechanism.run_mechanism(out, class_count_out, sweep_out, jobs=jobs, source=source, data_root=data_root,
                            extract=extract, executor=executor, slurm=slurm)
    if executor == "slurm":
        return
    committed = [(out, COMMITTED_MECHANISM), (class_count_out, COMMITTED_CLASS_COUNT), (sweep_out, COMMITTED_RUNS)]
    if all(Path(given).resolve() == (REPO / default).resolve() for given, default in committed):
        for name in ("i_mechanism", "e_summary"):
            execute(name, _parameters(name, "cpu", sweep_out, "results/figures", "results/tables", False, source,
                                      class_count_out, mechanism_runs=out), EXECUTED_DIR / "figures")
    else:   # the committed figures and tables stay those of the committed runs
        print(f"runs in {out}; table and figure from them: run notebooks/i_mechanism with RUNS_DIR={out}",
              flush=True)


def finetune_out(scale: str) -> str:
    """Where ``reproduce finetune --scale`` writes by default."""
    return f"results/runs/finetune-{scale}"


def reproduce_finetune(scale: str, out: str | None = None, data_root: str | None = None, weights: str | None = None,
                       device: str | None = None, datasets=None, source: str = "auto") -> Path:
    """The configured fine-tuning sweeps ``FINETUNE_SCALES[scale]`` (only ``datasets`` when given),
    each by :func:`alkit.experiments.runs.run_configured_sweep`: every run into ``<out>/<dataset>/``
    (default ``results/runs/finetune-<scale>``) with the linear sweeps' run files and provenance, the
    sweep's wall time, device and commit appended to ``<out>/sweep_times.json``; resumable (finished
    runs are skipped, a killed run resumes in its round).  Images: ``data_root`` / ``$ALKIT_DATA`` /
    ../shared/data plus the data set's archive name.  Every check (scale, data sets, weights, device)
    comes before any image is read.  Returns the runs folder."""
    out_dir = Path(out or finetune_out(scale))
    out_dir = out_dir if out_dir.is_absolute() else REPO / out_dir
    entries = finetune.finetune_scale(scale, datasets)
    finetune.check_scale_weights(entries, weights, scale)
    dev = finetune.resolve_device(device)
    commit, started = loaded_commit(), time.perf_counter()   # every run records the commit the sweep started from
    frame = pd.concat([run_configured_sweep(dataset, scale, out_dir, regime="finetune", source=source,
                                            data_root=data_root, weights=weights, device=device)
                       for dataset in entries], ignore_index=True)
    ranks = finetune.ranks_from_env()
    if ranks.is_main:   # as the linear sweeps log theirs
        append_sweep_log(out_dir, {
            "regime": "finetune", "scale": scale, "command": launch_command(), "git_commit": commit,
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "world_size": ranks.size,
            "runs": int(frame.groupby(["dataset", "strategy", "seed"]).ngroups),
            "wall_seconds": round(time.perf_counter() - started, 1),
            "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return out_dir
