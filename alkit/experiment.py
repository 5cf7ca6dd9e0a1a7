"""The experiment API in one import, for notebooks: the study's data sets and scales
(:mod:`alkit.experiments.catalog`) and its runs and sweeps (:mod:`alkit.experiments.runs`).

    from alkit import experiment
    config = experiment.sweep_config("cifar10", "cpu")          # the committed schedule
    rows = experiment.load_runs("results/runs/cpu", "cifar10")  # the committed runs' rows

Command line (resumable; one result file per run)::

    python -m alkit experiment --scale cpu --dataset cifar10 --out results/runs/cpu
"""
from __future__ import annotations

from alkit.data.features import FeaturesNotCached
from alkit.experiments.catalog import (
    DATASETS,
    DEFAULT_BACKBONE,
    SCALE_NAMES,
    SCALES,
    SOURCES,
    DataSpec,
    SweepConfig,
    data_spec,
    default_data_root,
    sweep_config,
)
from alkit.experiments.loading import StudyData, load_study_data
from alkit.experiments.runs import (
    claim_run,
    finished_runs,
    load_run_arrays,
    load_runs,
    release_claim,
    results_for,
    run_configured_sweep,
    run_path,
    run_sweep,
)

__all__ = [
    "DATASETS", "DEFAULT_BACKBONE", "SCALES", "SCALE_NAMES", "SOURCES", "DataSpec", "FeaturesNotCached", "StudyData",
    "SweepConfig", "claim_run", "data_spec", "default_data_root", "finished_runs", "load_run_arrays", "load_runs",
    "load_study_data", "release_claim", "results_for", "run_configured_sweep", "run_path", "run_sweep", "sweep_config",
]

if __name__ == "__main__":   # the command moved; say where (the command line imports this module, not back)
    raise SystemExit(f"`python -m alkit.experiment` is now `python -m alkit experiment` (same arguments)")
