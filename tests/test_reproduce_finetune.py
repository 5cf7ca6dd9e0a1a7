"""The fine-tuning scales in the reproduction machinery: ``python -m alkit reproduce finetune`` (its
argument errors, and the smoke scale end to end on generated images: run files, provenance,
resume), the figures' skip rule for notebook h, and its parameters."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from alkit import finetune

from alkit.cli.reproduce import reproduce_main
from alkit.data.synthetic import colour_images
from alkit.experiments import reproduce, runs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        reproduce_main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["--scale", "paper"], "--weights: the networks at paper scale start from the authors' self-supervised"),
    (["--scale", "paper", "--datasets", "imagenet"], "pass --weights FILE"),
    (["--scale", "paper", "--weights", "README.md"], "one checkpoint cannot serve"),
    (["--scale", "paper", "--datasets", "cifar10", "--weights", "absent.pt"], "--weights: file not found"),
    (["--scale", "gpu", "--weights", "README.md"], "start from random weights"),
    (["--scale", "gpu", "--datasets", "imagenet"], "--datasets: 'imagenet' has no gpu-scale fine-tuning sweep"),
    (["--scale", "huge"], "argument --scale: invalid choice"),
])
def test_bad_arguments_exit_2_naming_the_flag_before_any_image_is_read(argv, says, capsys, tmp_path):
    assert says in _refused(["finetune", *argv, "--out", str(tmp_path / "runs")], capsys)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for CUDA where there is none")
def test_cuda_without_a_gpu_is_refused(capsys, tmp_path):
    assert "--device 'cuda' was asked for" in _refused(["finetune", "--scale", "cpu", "--device", "cuda",
                                                          "--out", str(tmp_path)], capsys)


@pytest.mark.slow
def test_smoke_scale_writes_the_run_store_and_resumes(tmp_path, capsys):
    out = tmp_path / "finetune-smoke"
    argv = ["finetune", "--scale", "smoke", "--source", "synthetic", "--out", str(out), "--device", "cpu"]
    assert reproduce_main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"runs in {out}/")
    entry = finetune.FINETUNE_SCALES["smoke"]["cifar10"]
    folder = out / "cifar10"
    metas = sorted(folder.glob("*__seed*.json"))
    assert len(metas) == len(entry.strategies) * len(entry.seeds)
    assert all(m.with_suffix(".csv").exists() and m.with_suffix(".npz").exists() for m in metas)
    assert not list(folder.glob("*.ckpt")) and not list(folder.glob("*.claim"))
    meta = json.loads((folder / "vaal__seed1.json").read_text())
    assert meta["config"]["regime"] == "finetune" and meta["run_key"]["dataset"] == "cifar10"
    assert {"git_commit", "time_utc", "wall_seconds"} <= set(meta["provenance"])
    rows = pd.read_csv(folder / "margin__seed0.csv")
    assert rows["n_labeled"].tolist() == [40, 80, 120] and (rows["dataset"] == "cifar10").all()
    assert rows["data_source"].str.startswith("SYNTHETIC").all()     # figures label it (report.figure_note)
    written = {m.name: m.stat().st_mtime_ns for m in metas}

    assert reproduce_main(argv) == 0   # resumed: every run is finished, none is computed again
    assert {m.name: m.stat().st_mtime_ns for m in sorted(folder.glob("*__seed*.json"))} == written
    log = json.loads((out / "sweep_times.json").read_text())
    assert [e["regime"] for e in log] == ["finetune", "finetune"] and log[0]["runs"] == len(metas)
    assert log[0]["device"] == "cpu" and log[1]["wall_seconds"] < log[0]["wall_seconds"]
    loaded = runs.results_for(["cifar10"], "smoke", out, run_missing=False, regime="finetune",
                              strategies=["random", "vaal"])
    assert set(loaded["strategy"]) == {"random", "vaal"} and len(loaded) == 2 * len(entry.seeds) * 3


def test_results_without_runs_name_the_command(tmp_path):
    with pytest.raises(ValueError, match="python -m alkit reproduce finetune --scale gpu --out"):
        runs.results_for(["cifar10"], "gpu", tmp_path, run_missing=False, regime="finetune")


def test_a_missing_data_root_is_an_error_outside_smoke(tmp_path, capsys):
    entry = finetune.FINETUNE_SCALES["cpu"]["cifar10"]
    with pytest.raises(ValueError, match="data_root: no images of 'cifar10'"):
        finetune.load_scale_images(entry, finetune.network_source("tiny_cnn"), data_root=tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["finetune", "--scale", "cpu", "--device", "cpu", "--out", str(tmp_path / "runs"), "--data-root"]
    assert reproduce_main(argv + [str(tmp_path / "absent")]) == 2
    assert "error: --data-root: no images of 'cifar10'" in capsys.readouterr().err
    assert reproduce_main(argv + [str(empty)]) == 2   # a folder without CIFAR-10 in it
    assert "error: --data-root=" in capsys.readouterr().err


def test_standin_images_are_seeded_and_labelled():
    a, b = colour_images(10, 6, 32, n_test_per_class=2, seed=3), colour_images(10, 6, 32, n_test_per_class=2, seed=3)
    assert all((x == y).all() for x, y in zip(a, b))
    train, y, test, ty = a
    assert train.shape == (60, 32, 32, 3) and train.dtype.name == "uint8" and test.shape[0] == ty.size == 20
    assert sorted(set(y.tolist())) == list(range(10))


def test_make_reproduce_figures_skips_h_without_finetune_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce, "FIGURE_NOTEBOOKS", ("h_finetune_vs_linear",))
    executed = reproduce.reproduce_figures(str(tmp_path / "linear"), class_count_runs=str(tmp_path / "cc"),
                                           finetune_runs=str(tmp_path / "finetune-gpu"))
    out = capsys.readouterr().out
    assert executed == []
    line = next(x for x in out.splitlines() if "h_finetune_vs_linear" in x)
    assert "skipped, no finished fine-tuning runs under" in line and "make reproduce-finetune" in line


def test_notebook_h_parameters():
    cpu = reproduce._parameters("h_finetune_vs_linear", "cpu", "results/runs/cpu", "results/figures",
                                "results/tables", False, "auto")
    assert cpu["FINETUNE_RUNS_DIR"] == reproduce.COMMITTED_FINETUNE and cpu["FINETUNE_SCALE"] == "gpu"
    assert "TORCH_THREADS" not in cpu and cpu["RESULTS_DIR"] == "results/runs/cpu"
    smoke = reproduce._parameters("h_finetune_vs_linear", "smoke", "x/runs", "x/figures", "x/tables", True, "auto")
    assert smoke["FINETUNE_SCALE"] == "smoke" and smoke["FINETUNE_RUNS_DIR"] == "x/finetune-smoke"
    assert "h_finetune_vs_linear" in reproduce.FIGURE_NOTEBOOKS


def test_figures_from_another_runs_folder_leave_results_alone(tmp_path, monkeypatch):
    other = tmp_path / "sweep_new"
    for ext in (".json", ".csv", ".npz"):   # one finished run of each data set (files are not read here)
        for ds in ("cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"):
            (other / ds).mkdir(parents=True, exist_ok=True)
            (other / ds / f"random__seed0{ext}").write_text("")
    calls = []
    monkeypatch.setattr(reproduce, "execute", lambda name, params, out_dir: calls.append((name, params, out_dir))
                        or out_dir / f"{name}.ipynb")
    reproduce.reproduce_figures(str(other))
    assert calls
    results = (reproduce.REPO / "results").resolve()
    for name, params, out_dir in calls:
        for key in ("FIGURES_DIR", "TABLES_DIR"):
            if key in params:
                target = reproduce.REPO / params[key]
                assert not target.resolve().is_relative_to(results), (name, key, params[key])
        assert out_dir.name == "figures-sweep_new"
    # the committed folder still renders into results/
    calls.clear()
    monkeypatch.setattr(reproduce, "FIGURE_NOTEBOOKS", ("a_toy_vs_many_class",))
    reproduce.reproduce_figures()
    assert calls[0][1]["FIGURES_DIR"] == "results/figures"
