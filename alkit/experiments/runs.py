"""Runs and sweeps: one result per (data set, strategy, seed), written so that nothing finished is lost.

Each finished run leaves ``<out>/<dataset>/<strategy>__seed<k>.csv`` (its rows), ``.npz`` (picks,
label counts, per-class accuracy) and, written last, ``.json`` (run key + provenance).  A run
whose ``.json`` exists with the same key is skipped, so an interrupted sweep resumes where it
stopped and never reuses a result made with other settings; a run is claimed (``.claim``) before
it is computed, so two sweeps into one folder compute each run once; while it runs, ``.ckpt`` holds
its state after the last finished round, so a killed or preempted run resumes at the round it was
in (:func:`alkit.loop.run_active_learning`).

:func:`run_sweep` runs every (strategy, seed) of any pool with one trainer — a linear probe on
feature arrays (the default) or fine-tuning on images (:class:`alkit.finetune.FineTuningTrainer`);
:func:`run_configured_sweep` runs a configured schedule: the linear ones of
:mod:`alkit.experiments.catalog` (``python -m alkit experiment --scale cpu --dataset cifar10 --out
results/runs/cpu``) or fine-tuning's (:data:`alkit.finetune.FINETUNE_SCALES`, ``python -m alkit
reproduce finetune``); the readers (:func:`load_runs`, :func:`results_for`) are what the notebooks use.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit import finetune
from alkit.checks import ParameterError
from alkit.experiments.catalog import DEFAULT_BACKBONE, sweep_config
from alkit.experiments.loading import StudyData, load_study_data
from alkit.io import atomic_write, loaded_commit, process_alive, provenance, write_json
from alkit.loop import RunResult, Trainer, resolve_trainer, run_active_learning
from alkit.probe import ProbeConfig
from alkit.strategies.registry import Strategy, resolve_strategy

#: The regimes of a configured sweep: a linear probe on frozen features, or the network fine-tuned.
REGIMES = ("linear", "finetune")


def run_path(out_dir: Path, strategy: str, seed: int) -> Path:
    return Path(out_dir) / f"{strategy}__seed{seed}"


def save_run(stem: Path, result: RunResult, extra: dict) -> None:
    atomic_write(stem.with_suffix(".csv"), lambda tmp: pd.DataFrame(result.rows).to_csv(tmp, index=False))

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            # int32 picks: pools here are far below 2³¹ points and the files are committed.
            np.savez_compressed(
                fh, validation_indices=result.validation_indices.astype(np.int32),
                label_counts=result.label_counts.astype(np.int32),
                per_class_accuracy=result.per_class_accuracy.astype(np.float32),
                **{f"picks_round{r}": p.astype(np.int32) for r, p in enumerate(result.picks)},
            )

    atomic_write(stem.with_suffix(".npz"), write_npz)
    write_json(stem.with_suffix(".json"), {"config": result.config, **extra})  # last: marks the run done


def is_finished(stem: Path, run_key: dict) -> bool:
    meta = stem.with_suffix(".json")
    if not (meta.exists() and stem.with_suffix(".csv").exists() and stem.with_suffix(".npz").exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("run_key") == run_key
    except (OSError, ValueError):
        return False


def finish_run(result: RunResult, *, dataset: str, data_source: str, stem: Path | None, key: dict,
               started: float, checkpoint: Path | None = None, write: bool = True) -> pd.DataFrame:
    """A computed run's rows, tagged with its data set and source; with ``stem`` (and ``write``) saved
    in the run store with its key and provenance (wall time since ``started``, a perf_counter
    value), and its ``checkpoint`` removed: the run is saved, its rounds are not needed."""
    frame = result.frame()
    frame.insert(0, "dataset", dataset)
    frame.insert(1, "data_source", data_source)
    result.rows = frame.to_dict("records")
    if stem is not None and write:
        save_run(stem, result, {"run_key": key, "provenance": provenance(
            wall_seconds=round(time.perf_counter() - started, 2))})
        if checkpoint is not None:
            Path(checkpoint).unlink(missing_ok=True)
    return frame


def run_sweep(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    strategies: Sequence[str | Strategy],
    seeds: Sequence[int],
    *,
    initial_size: int,
    round_budget: int,
    rounds: int,
    val_per_class: int = 0,
    probe: ProbeConfig | str | None = None,
    trainer: Trainer | None = None,
    out_dir: str | Path | None = None,
    dataset: str = "arrays",
    data_meta: dict | None = None,
    data_source: str = "arrays",
    progress: bool = True,
    shared: dict | None = None,
    claimed: str = "wait",
    allow_missing_classes: bool = False,
) -> pd.DataFrame:
    """Run every (strategy, seed); return all rows.

    ``trainer``: how each round's model is trained (:class:`alkit.loop.Trainer`); None, a linear
    probe with ``probe`` on the feature arrays given (:class:`alkit.loop.LinearProbeTrainer`).  With
    :class:`alkit.finetune.FineTuningTrainer` the pools are images; under torchrun every rank
    computes every run (each its shard) and rank 0 alone writes, without claims.

    Runs go seed by seed (every strategy for seed 0, then seed 1, …), so a sweep stopped early
    still holds complete paired comparisons for the seeds it finished.  With ``out_dir`` each
    run is saved as it finishes and finished runs with the same settings are loaded instead.
    ``shared``: the ``shared`` dict of every run's :class:`alkit.pool.StrategyCache`, for work that
    depends on these features alone (round-0 heads, ProbCover's δ-graph; see
    :func:`alkit.loop.run_active_learning`); a fresh dict for this call when None.  Pass the same
    dict again only with the same features and labels.  ``claimed``: what to do with a run another
    live process has claimed — ``"wait"`` for it (and take it over if that process goes), or
    ``"skip"`` it (its rows are then missing from the result: a worker sharing a sweep with others).
    """
    if claimed not in ("wait", "skip"):
        raise ParameterError(f"claimed must be 'wait' or 'skip', got {claimed!r}", param="claimed")
    trainer = resolve_trainer(trainer, probe)
    ranks = trainer.ranks
    shared = {} if shared is None else shared
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    infos = [resolve_strategy(s) for s in strategies]
    jobs = [(info, int(seed)) for seed in seeds for info in infos]
    deferred = []   # runs another live process has claimed: collected (or taken over) at the end
    bar = tqdm(jobs, desc=f"sweep {dataset}", disable=not progress or not ranks.is_main)
    # Under torchrun the ranks compute each run together: a claim would hold all but one of them off.
    claims = out_dir is not None and ranks.size == 1

    def key_of(info, seed) -> dict:
        key = {"dataset": dataset, "strategy": info.name, "seed": seed, "initial_size": initial_size,
               "round_budget": round_budget, "rounds": rounds, "val_per_class": val_per_class,
               **trainer.identity(), "data": data_meta or {}, "pool_size": len(train_features)}
        return json.loads(json.dumps(key, default=str))

    def compute(info, seed, key, stem) -> pd.DataFrame:
        started = time.perf_counter()
        checkpoint = None if stem is None else stem.with_suffix(".ckpt")
        try:
            result = run_active_learning(
                train_features, train_labels, test_features, test_labels, num_classes, info, seed=seed,
                initial_size=initial_size, round_budget=round_budget, rounds=rounds, val_per_class=val_per_class,
                trainer=trainer, progress=False, shared=shared, checkpoint=checkpoint,
                allow_missing_classes=allow_missing_classes,
            )
            return finish_run(result, dataset=dataset, data_source=data_source, stem=stem, key=key, started=started,
                              checkpoint=checkpoint, write=ranks.is_main)
        finally:
            if claims:
                release_claim(stem)

    for info, seed in bar:
        key = key_of(info, seed)
        stem = run_path(Path(out_dir), info.name, seed) if out_dir is not None else None
        if stem is not None and is_finished(stem, key):
            frames[(info.name, seed)] = pd.read_csv(stem.with_suffix(".csv"))
            continue
        if claims and not claim_run(stem):
            deferred.append((info, seed, key, stem))
            continue
        bar.set_postfix(run=f"{info.name} seed {seed}")
        frames[(info.name, seed)] = compute(info, seed, key, stem)
    told = set()
    while deferred and claimed == "wait":   # the other process's runs; take over any whose process has gone
        for job in list(deferred):
            info, seed, key, stem = job
            if stem not in told:   # say at once what is waited for, and how it ends
                told.add(stem)
                tqdm.write(f"waiting: {describe_claim(stem)}", file=sys.stderr)   # stdout may be a caller's
            if is_finished(stem, key):
                frames[(info.name, seed)] = pd.read_csv(stem.with_suffix(".csv"))
                deferred.remove(job)
            elif claim_run(stem):
                frames[(info.name, seed)] = compute(info, seed, key, stem)
                deferred.remove(job)
        if deferred:
            time.sleep(CLAIM_POLL_S)
    ordered = [frames[(info.name, seed)] for info, seed in jobs if (info.name, seed) in frames]
    return pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame()


#: Seconds between looks at runs another process has claimed.
CLAIM_POLL_S = 2.0
#: A claim is a lease: its owner refreshes the file's time every CLAIM_HEARTBEAT_S while it computes
#: the run, and a claim not refreshed for CLAIM_LEASE_S is stale whatever its PID or host now name
#: (a reused PID after a reboot, a container with a new host name, a node that died).
CLAIM_HEARTBEAT_S = 30.0
CLAIM_LEASE_S = 120.0
_HEARTBEATS: dict = {}   # claim path -> the event that stops its heartbeat thread


def cluster_job_id() -> str:
    """The SLURM job (and array task) this process runs in, or "-" outside SLURM: a requeued job
    keeps its id, so it recognises the claims it left before it was preempted."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return "-"
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if task else job


def _claim_owner_alive(claim: Path) -> bool:
    """Whether the process that wrote ``claim`` ("pid host job") still holds it: not when its lease
    ran out (not refreshed for :data:`CLAIM_LEASE_S`), nor when the claim is this SLURM job's own
    (written before a preemption) or this process's own; on this host, whether its process runs; on
    another host, the fresh lease says it does (its process cannot be asked)."""
    try:
        age = time.time() - claim.stat().st_mtime
        pid_text, host, *job = claim.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if age > CLAIM_LEASE_S:
        return False
    if job and job[0] != "-" and job[0] == cluster_job_id():
        return False
    if host != platform.node():
        return True
    if pid == os.getpid():
        return False   # this process's own claim from an interrupted attempt
    return process_alive(pid)


def describe_claim(stem: Path) -> str:
    """Who holds the claim of the run at ``stem``, for a message while waiting for it."""
    claim = Path(stem).with_suffix(".claim")
    try:
        pid, host, *job = claim.read_text().split()
        age = time.time() - claim.stat().st_mtime
    except (OSError, ValueError):
        return f"{claim} (gone)"
    owner = f"process {pid} on {host}" + (f", SLURM job {job[0]}" if job and job[0] != "-" else "")
    return (f"{claim} is held by {owner}, refreshed {age:.0f} s ago; it is taken over once not refreshed for "
            f"{CLAIM_LEASE_S:.0f} s (delete the file to take it now)")


def _heartbeat(claim: Path, stop) -> None:
    """Refresh ``claim``'s time until ``stop`` is set or the file is gone (its run is finished)."""
    while not stop.wait(CLAIM_HEARTBEAT_S):
        try:
            os.utime(claim)
        except OSError:
            return


def claim_run(stem: Path) -> bool:
    """Claim the run at ``stem`` for this process (``<stem>.claim`` holding "pid host job", created
    exclusively), so that two sweeps into one folder compute each run once.  False if another live
    process holds it; a claim whose process is gone is taken over."""
    claim = Path(stem).with_suffix(".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _claim_owner_alive(claim):
                return False
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {platform.node()} {cluster_job_id()}\n")
        stop = threading.Event()
        earlier = _HEARTBEATS.pop(claim, None)   # this process's heartbeat of an interrupted attempt
        if earlier is not None:
            earlier.set()
        _HEARTBEATS[claim] = stop
        threading.Thread(target=_heartbeat, args=(claim, stop), daemon=True, name=f"claim {claim.name}").start()
        return True
    return False


def release_claim(stem: Path) -> None:
    """Stop refreshing the run's claim and remove it."""
    claim = Path(stem).with_suffix(".claim")
    stop = _HEARTBEATS.pop(claim, None)
    if stop is not None:
        stop.set()
    claim.unlink(missing_ok=True)


def run_configured_sweep(
    dataset: str,
    scale: str,
    out: str | Path | None,
    *,
    regime: str = "linear",
    source: str = "auto",
    data_root: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    data: StudyData | None = None,
    extract: bool = True,
    weights: str | Path | None = None,
    device: str | None = None,
    shared: dict | None = None,
    claimed: str = "wait",
    folder: str | Path | None = None,
    **overrides,
) -> pd.DataFrame:
    """Run (or resume) the ``scale`` sweep of ``dataset``; runs land in ``<out>/<dataset>/`` (or
    ``folder``, when given: an experiment keeping these runs of its own elsewhere).

    ``regime``: ``"linear"``, the schedule of :mod:`alkit.experiments.catalog` on the backbone's
    cached features (``backbone``, ``cache_dir``, ``data``, ``extract`` say where they come from);
    ``"finetune"``, the sweep of :data:`alkit.finetune.FINETUNE_SCALES` on the images, the network
    trained on ``device`` (None: CUDA when present).  ``weights``: the backbone's checkpoint.
    ``overrides`` change the configured schedule (``seeds``, ``strategies``, ``rounds``, ...);
    the run key records them, so results made with other settings are never mixed in.  ``shared``:
    see :func:`run_sweep`; a caller running several sweeps of one data set keeps one per data set.
    ``claimed``: see :func:`run_sweep`.
    """
    if regime not in REGIMES:
        raise ParameterError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}", param="regime")
    loaded_commit()   # pin the provenance's commit to the code this process started with
    out_dir = Path(folder) if folder is not None else None if out is None else Path(out) / dataset
    if regime == "finetune":
        return _run_finetune_sweep(dataset, scale, out_dir, source=source, data_root=data_root, weights=weights,
                                   device=device, progress=progress, claimed=claimed, **overrides)
    config = sweep_config(dataset, scale, **overrides)
    data = data or load_study_data(dataset, scale, source=source, data_root=data_root, backbone=backbone,
                                   cache_dir=cache_dir, config=config, progress=progress, extract=extract,
                                   weights=weights)
    train_fp, test_fp = data.fingerprints()
    data_meta = {"source": data.source, "train_fingerprint": train_fp, "test_fingerprint": test_fp, "scale": scale,
                 "num_classes": data.num_classes, **({"note": config.note} if config.note else {})}
    train_features, test_features = data.loop_features()
    return run_sweep(
        train_features, data.train_labels, test_features, data.test_labels, data.num_classes,
        config.strategy_list(), config.seeds, initial_size=config.initial_size, round_budget=config.round_budget,
        rounds=config.rounds, val_per_class=config.val_per_class, probe=config.probe, out_dir=out_dir,
        dataset=dataset, data_meta=data_meta,
        data_source=data.source, progress=progress, shared=shared, claimed=claimed,
    )


def _run_finetune_sweep(dataset: str, scale: str, out_dir: Path | None, *, source: str, data_root, weights, device,
                        progress: bool, claimed: str, **overrides) -> pd.DataFrame:
    """The fine-tuning sweep of ``dataset`` at ``scale`` (:data:`alkit.finetune.FINETUNE_SCALES`),
    its settings changed by ``overrides``; the weights and the device are checked before any image is read."""
    entry = finetune.finetune_scale(scale, [dataset])[dataset]
    unknown = set(overrides) - {f.name for f in fields(entry)}
    if unknown:
        raise ParameterError(f"unknown fine-tuning sweep setting(s) {sorted(unknown)}; choose among "
                             f"{sorted(f.name for f in fields(entry))}", param="overrides")
    entry = replace(entry, **overrides)
    finetune.check_scale_weights({dataset: entry}, weights, scale)
    network = finetune.network_source(entry.backbone, weights)
    trainer = finetune.FineTuningTrainer(network, entry.preset, device=device)
    train, y, test, ty, num_classes, meta, data_source = finetune.load_scale_images(
        entry, network, source=source, data_root=data_root, allow_standin=scale == "smoke")
    data_meta = {**meta, "scale": scale, **({"note": entry.note} if entry.note else {})}
    return run_sweep(
        train, y, test, ty, num_classes, entry.strategies, entry.seeds, initial_size=entry.initial_size,
        round_budget=entry.round_budget, rounds=entry.rounds, val_per_class=entry.val_per_class, trainer=trainer,
        out_dir=out_dir, dataset=dataset, data_meta=data_meta, data_source=data_source, progress=progress,
        claimed=claimed)


# --------------------------------------------------------------------------------------------
# Reading results back
# --------------------------------------------------------------------------------------------

def finished_runs(results_dir: str | Path, dataset: str | None = None) -> list[Path]:
    """Stems of the finished runs (``.json`` written last) under ``results_dir[/dataset]``."""
    base = Path(results_dir) / dataset if dataset else Path(results_dir)
    if not base.is_dir():
        return []
    stems = []
    for meta in sorted(base.rglob("*__seed*.json")):
        stem = meta.with_suffix("")
        if stem.with_suffix(".csv").exists() and stem.with_suffix(".npz").exists():
            stems.append(stem)
    return stems


def load_runs(results_dir: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """All rows of the finished runs under ``results_dir`` (one folder per data set)."""
    frames = [pd.read_csv(stem.with_suffix(".csv")) for stem in finished_runs(results_dir, dataset)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def load_run_arrays(results_dir: str | Path, dataset: str, strategy: str, seed: int) -> dict[str, np.ndarray]:
    """The ``.npz`` of one run: picks per round, label counts, per-class accuracy."""
    stem = run_path(Path(results_dir) / dataset, strategy, seed)
    with np.load(stem.with_suffix(".npz")) as data:
        return {k: data[k] for k in data.files}


def results_for(
    datasets: Sequence[str],
    scale: str,
    results_dir: str | Path,
    *,
    run_missing: bool,
    regime: str = "linear",
    source: str = "auto",
    data_root: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Rows of ``datasets`` at ``scale``: with ``run_missing`` the sweeps of ``regime`` run
    (:func:`run_configured_sweep`; finished runs are loaded, not recomputed); without, only what
    ``results_dir`` already holds is read — the way ``make reproduce-figures`` renders committed
    results offline."""
    frames = []
    for dataset in datasets:
        if run_missing:
            frame = run_configured_sweep(dataset, scale, results_dir, regime=regime, source=source,
                                         data_root=data_root, backbone=backbone, progress=progress, **overrides)
        else:
            frame = load_runs(results_dir, dataset)
            # Committed results may hold more than asked for: keep the asked strategies and seeds.
            if not frame.empty and overrides.get("strategies") is not None:
                frame = frame[frame["strategy"].isin([resolve_strategy(s).name for s in overrides["strategies"]])]
            if not frame.empty and overrides.get("seeds") is not None:
                frame = frame[frame["seed"].isin([int(s) for s in overrides["seeds"]])]
        if frame.empty and regime == "finetune":
            raise ParameterError(f"results_dir: no finished fine-tuning runs of {dataset!r} under {results_dir}; run "
                                 f"`python -m alkit reproduce finetune --scale {scale} --out {results_dir}`",
                                 param="results_dir")
        if frame.empty:
            raise ParameterError(f"results_dir: no finished runs of {dataset!r} under {results_dir}; run "
                                 f"`python -m alkit experiment --scale {scale} --dataset {dataset} --out {results_dir}`",
                                 param="results_dir")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
