"""Sweeps on SLURM through submitit, tested up to the cluster: the submission script, a job run as
SLURM would run it, requeued jobs and their claims.  (The local executor's runs equal the inline
ones: tests/test_experiment_report.py::test_parallel_sweep_writes_the_serial_runs_and_logs_its_time.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alkit.experiments import loading
from alkit.experiments.launch import RunJob, SlurmOptions, run_phases
from alkit.experiments.runs import claim_run, cluster_job_id, run_path
from alkit.loop import TIMING_COLUMNS

PHASES = [("cifar10", ("random", "margin"), (0, 1))]


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` and ``srun`` on PATH: sbatch keeps a copy of the script it is given and answers
    like SLURM; submitit needs srun only to exist."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\nfor last; do :; done\ncp "$last" "$FAKE_SBATCH_COPY"\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SBATCH_COPY", str(tmp_path / "submitted.sh"))
    return tmp_path / "submitted.sh"


def _run_array_task(out: Path, task: int) -> None:
    """What srun starts on a node for array task ``task`` of the job submitted into ``out``."""
    env = {**os.environ, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4242",
           "SLURM_ARRAY_TASK_ID": str(task), "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "1",
           "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost"}
    done = subprocess.run([sys.executable, "-u", "-m", "submitit.core._submit", str(out / ".submitit")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def _rows(stem: Path) -> pd.DataFrame:
    frame = pd.read_csv(stem.with_suffix(".csv"))
    return frame.drop(columns=[c for c in TIMING_COLUMNS if c in frame])


@pytest.mark.slow
def test_the_submission_script_asks_for_the_resources_and_one_task_per_missing_run(tmp_path, fake_slurm):
    out = tmp_path / "runs"
    run_phases([("cifar10", ("random",), (0,))], "smoke", str(out), source="synthetic")   # finished before
    options = SlurmOptions(partition="gpu", account="lab", gpus_per_node=1, cpus_per_task=8, mem_gb=16,
                           timeout_min=90, array_parallelism=3)
    run_phases(PHASES, "smoke", str(out), source="synthetic", executor="slurm", slurm=options)
    script = fake_slurm.read_text()
    for line in ("--array=0-2%3", "--partition=gpu", "--account=lab", "--gpus-per-node=1", "--cpus-per-task=8",
                 "--mem=16GB", "--time=90", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, line
    submitted = json.loads((out / "slurm_jobs.json").read_text())["jobs"]
    assert [(j["strategy"], j["seed"]) for j in submitted] == [("margin", 0), ("random", 1), ("margin", 1)]
    assert [j["job_id"] for j in submitted] == ["4242_0", "4242_1", "4242_2"]


@pytest.mark.slow
def test_a_submitted_job_computes_its_run_as_the_inline_executor_does(tmp_path, fake_slurm):
    out = tmp_path / "slurm"
    run_phases(PHASES, "smoke", str(out), source="synthetic", executor="slurm", slurm=SlurmOptions())
    # What srun starts on the node, with the environment SLURM gives array task 1 (margin, seed 0).
    _run_array_task(out, 1)
    stem = run_path(out / "cifar10", "margin", 0)
    assert stem.with_suffix(".json").exists() and not run_path(out / "cifar10", "random", 0).with_suffix(".json").exists()
    run_phases([("cifar10", ("margin",), (0,))], "smoke", str(tmp_path / "inline"), source="synthetic")
    inline = run_path(tmp_path / "inline" / "cifar10", "margin", 0)
    pd.testing.assert_frame_equal(_rows(stem), _rows(inline))
    with np.load(stem.with_suffix(".npz")) as a, np.load(inline.with_suffix(".npz")) as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)
    assert not stem.with_suffix(".claim").exists() and not stem.with_suffix(".ckpt").exists()
    # the run records the command that submitted it, not submitit's (and no path of this machine)
    recorded = json.loads(stem.with_suffix(".json").read_text())["provenance"]["command"]
    assert "_submit" not in recorded and str(tmp_path) not in recorded, recorded


def test_a_requeued_job_takes_over_its_own_claim_but_not_another_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert cluster_job_id() == "77_3"
    stem = tmp_path / "margin__seed0"
    # written on another node before a preemption: that host's process cannot be asked, the job id tells
    stem.with_suffix(".claim").write_text("12345 node-17 77_3\n")
    assert claim_run(stem)
    stem.with_suffix(".claim").write_text("12345 node-17 77_4\n")   # another task of the array, still running
    assert not claim_run(stem)


def test_a_run_job_requeues_itself_when_slurm_signals_it():
    job = RunJob("cifar10", "margin", 0, "smoke", "out", "synthetic", None)
    again = job.checkpoint()
    assert again.function is job   # submitit resubmits the same job; its run resumes from the round checkpoint


def test_without_slurm_the_executor_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no srun anywhere
    with pytest.raises(ValueError, match="no SLURM on this machine"):
        run_phases(PHASES, "smoke", str(tmp_path / "runs"), source="synthetic", executor="slurm")


@pytest.mark.parametrize("argv, flag", [
    (["results", "--scale", "cpu", "--executor", "slurm", "--jobs", "2"], "--jobs"),
    (["results", "--scale", "cpu", "--executor", "inline", "--jobs", "2"], "--jobs"),
    (["results", "--scale", "cpu", "--slurm-partition", "gpu"], "--slurm-partition"),
    (["results", "--scale", "smoke", "--executor", "local"], "--executor"),
    (["results", "--scale", "cpu", "--executor", "cluster"], "--executor"),
])
def test_reproduce_rejects_executor_misuse(argv, flag, capsys):
    from alkit.cli.reproduce import reproduce_main

    with pytest.raises(SystemExit) as stop:
        reproduce_main(argv)
    assert stop.value.code == 2
    assert flag in capsys.readouterr().err


@pytest.mark.slow
def test_the_mechanism_experiment_runs_through_slurm_as_every_sweep(tmp_path, fake_slurm):
    """Its (cell, strategy) tasks go into one job array (finished runs left out), and a task run as
    SLURM would run it writes the run the inline executor writes."""
    from alkit.experiments import mechanism

    out, cc, sweep = tmp_path / "m", tmp_path / "cc", tmp_path / "sweep"
    cell = mechanism.cells("smoke")[0]
    data = loading.load_study_data("tiny-imagenet", "smoke", source="synthetic", progress=False)
    mechanism.run_one(data, cell, "random", 0, "smoke", out, cc, sweep)   # finished before
    mechanism.run_mechanism(out, cc, sweep, scale="smoke", source="synthetic", executor="slurm",
                            slurm=SlurmOptions(array_parallelism=4))
    submitted = json.loads((out / "slurm_jobs.json").read_text())["jobs"]
    assert len(submitted) == len(mechanism.pending_runs("smoke")) - 1
    first = submitted[0]
    assert first["strategy"] == [cell.name, "margin"] and first["seed"] == 0
    _run_array_task(out, 0)
    stem = run_path(out / cell.name, "margin", 0)
    inline = tmp_path / "inline"
    mechanism.run_one(data, cell, "margin", 0, "smoke", inline, cc, sweep)
    pd.testing.assert_frame_equal(_rows(stem), _rows(run_path(inline / cell.name, "margin", 0)))
