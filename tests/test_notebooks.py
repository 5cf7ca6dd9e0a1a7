"""The companion notebooks: .py/.ipynb pairs agree, and every notebook runs end to end at smoke
scale through papermill (how CI runs `make reproduce-results SCALE=smoke`).

The smoke run here uses the synthetic stand-ins (``SOURCE="synthetic"``) so that it takes the same
time on every machine, with or without ../shared/data; ``make reproduce-results SCALE=smoke`` uses
slices of the real archives when they are present.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from alkit.experiments import reproduce


def test_every_notebook_pair_agrees():
    assert reproduce.pair_mismatches() == []


def test_pair_check_detects_an_edited_notebook(tmp_path, monkeypatch):
    import shutil

    for name in ("a_toy_vs_many_class",):
        shutil.copy(reproduce.NOTEBOOK_DIR / f"{name}.py", tmp_path / f"{name}.py")
        nb = json.loads((reproduce.NOTEBOOK_DIR / f"{name}.ipynb").read_text())
        nb["cells"][-1]["source"] = ["print('edited only in the .ipynb')"]
        (tmp_path / f"{name}.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(reproduce, "NOTEBOOK_DIR", tmp_path)
    problems = reproduce.pair_mismatches(("a_toy_vs_many_class",))
    assert problems and "cells differ" in problems[0]


def test_every_notebook_has_a_parameters_cell_and_kernelspec():
    import nbformat

    for py in reproduce.notebook_sources():
        nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), py.name


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("smoke")
    executed = reproduce.run_smoke(base, source="synthetic")
    return base, executed


@pytest.mark.slow
def test_smoke_runs_every_notebook(smoke_run):
    base, executed = smoke_run
    assert [p.stem for p in executed] == list(reproduce.NOTEBOOKS)
    figures = {p.name for p in (base / "figures").iterdir()}
    for stem in ("a_accuracy", "a_difference_from_random", "b_batch_balance", "c_balanced_accuracy",
                 "d_imagenet_accuracy", "e_auc_difference", "g_class_count", "h_accuracy",
                 "h_difference_from_random"):
        assert f"{stem}.png" in figures and f"{stem}.pdf" in figures
    assert (base / "playground" / "f_playground.png").exists()


@pytest.mark.slow
def test_smoke_writes_one_result_file_per_run_and_the_tables(smoke_run):
    base, _ = smoke_run
    runs = base / "runs" / "cifar10"
    metas = sorted(runs.glob("*__seed*.json"))
    assert metas and all(m.with_suffix(".csv").exists() and m.with_suffix(".npz").exists() for m in metas)
    meta = json.loads(metas[0].read_text())
    assert {"git_commit", "time_utc", "wall_seconds"} <= set(meta["provenance"])
    claims = pd.read_csv(base / "tables" / "claims.csv")
    assert list(claims["claim"]) == [1, 2, 3]
    assert set(claims["verdict"]) <= {"supported", "not supported", "inconclusive"}


@pytest.mark.slow
def test_smoke_results_say_the_data_are_synthetic(smoke_run):
    base, _ = smoke_run
    rows = pd.read_csv(next((base / "runs" / "tiny-imagenet").glob("*.csv")))
    assert set(rows["data_source"]) == {"synthetic stand-in"}
    rows = pd.read_csv(next((base / "runs" / "imagenet-synthetic").glob("*.csv")))
    assert rows["data_source"].str.startswith("SYNTHETIC").all()
    rows = pd.read_csv(next((base / "finetune-smoke" / "cifar10").glob("vaal__*.csv")))   # notebook h: generated
    assert rows["data_source"].str.startswith("SYNTHETIC").all() and (rows["dataset"] == "cifar10").all()


@pytest.mark.slow
def test_smoke_class_count_table_has_the_issue_columns(smoke_run):
    base, _ = smoke_run
    table = pd.read_csv(base / "tables" / "class_count.csv")
    assert {"num_classes", "strategy", "seeds", "auc_diff", "auc_diff_lo", "auc_diff_hi", "batch_entropy",
            "batch_max_min_ratio"} <= set(table.columns)
    assert sorted(table["num_classes"].unique()) == [5, 10]
    assert (base / "class-count" / "k5").is_dir()



def test_a_notebook_run_by_hand_never_writes_over_the_committed_figures():
    from alkit import report

    repo = Path(reproduce.REPO)
    assert report.output_dir(None, "a_toy_vs_many_class", "figures") == \
        repo / "notebooks" / "executed" / "a_toy_vs_many_class" / "figures"
    assert report.output_dir("results/figures", "a_toy_vs_many_class", "figures") == repo / "results" / "figures"
    for py in reproduce.notebook_sources():   # every parameters cell defaults to None (or the playground's own folder)
        text = py.read_text()
        for name in ("FIGURES_DIR", "TABLES_DIR"):
            line = next((ln for ln in text.splitlines() if ln.startswith(f"{name} =")), None)
            assert line is None or "results/" not in line.split("#")[0], (py.name, line)
    params = reproduce._parameters("e_summary", "cpu", "results/runs/cpu", "results/figures", "results/tables",
                                   False, "auto")
    assert params["FIGURES_DIR"] == "results/figures" and params["TABLES_DIR"] == "results/tables"


@pytest.mark.slow
def test_jupyterlab_comes_with_the_environment():
    import subprocess
    import sys

    lab = Path(sys.executable).parent / "jupyter-lab"
    assert lab.exists(), "jupyterlab is not installed beside this Python: add it to requirements.txt"
    done = subprocess.run([str(lab), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().startswith("4.")
    assert "jupyterlab" in (Path(reproduce.REPO) / "requirements.txt").read_text()
