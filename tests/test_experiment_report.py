"""Sweeps as data (one file per run, atomic, resumable) and the summary / verdict rules."""
from __future__ import annotations

import json

import os

import numpy as np
import pandas as pd
import pytest

from alkit import experiment, io, report

from alkit.data.synthetic import gaussian_mixture
from alkit.experiments import runs
from alkit.probe import ProbeConfig
from alkit.stats import area_under_curve, mean_interval

FAST = ProbeConfig()


def _sweep(out, strategies=("random", "margin"), seeds=(0, 1), rounds=2):
    data = gaussian_mixture(4, 40, 8, separation=3.0, n_test_per_class=10, seed=3)
    return experiment.run_sweep(data.train_features, data.train_labels, data.test_features, data.test_labels,
                                4, list(strategies), list(seeds), initial_size=8, round_budget=8, rounds=rounds,
                                val_per_class=2, probe=FAST, out_dir=out, dataset="toy", progress=False)


def test_sweep_writes_one_result_per_run_with_provenance(tmp_path):
    frame = _sweep(tmp_path)
    stems = experiment.finished_runs(tmp_path)
    assert sorted(s.name for s in stems) == ["margin__seed0", "margin__seed1", "random__seed0", "random__seed1"]
    meta = json.loads(stems[0].with_suffix(".json").read_text())
    assert {"git_commit", "python", "torch", "time_utc", "wall_seconds", "command", "cpu"} <= set(meta["provenance"])
    assert meta["provenance"]["cpu"]   # kernels differ between CPU families: a rerun must know the CPU
    assert meta["run_key"]["strategy"] == stems[0].name.split("__")[0]
    assert not list(tmp_path.glob(".*.tmp"))
    with np.load(stems[0].with_suffix(".npz")) as arrays:
        assert {"picks_round0", "picks_round1", "picks_round2", "label_counts", "per_class_accuracy"} <= set(arrays.files)
    assert len(frame) == 4 * 3 and set(frame["dataset"]) == {"toy"}
    # runs go seed by seed, so a sweep cut short holds complete pairs
    assert list(frame.drop_duplicates(["strategy", "seed"])["seed"]) == [0, 0, 1, 1]


def test_sweep_resumes_without_recomputing_and_reruns_changed_settings(tmp_path, monkeypatch):
    first = _sweep(tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    monkeypatch.setattr(runs, "run_active_learning", boom)
    again = _sweep(tmp_path)
    cols = [c for c in first.columns if not c.endswith("_seconds")]
    pd.testing.assert_frame_equal(first[cols], again[cols], check_dtype=False)
    with pytest.raises(AssertionError, match="recomputed"):
        _sweep(tmp_path, rounds=3)  # another schedule must not reuse the old runs


def test_interrupted_run_leaves_no_result(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = runs.run_active_learning

    def fail_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "run_active_learning", fail_second)
    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path)
    assert [s.name for s in experiment.finished_runs(tmp_path)] == ["random__seed0"]


def test_configuration_errors_name_the_argument():
    with pytest.raises(ValueError, match="scale"):
        experiment.sweep_config("cifar10", "huge")
    with pytest.raises(ValueError, match="dataset"):
        experiment.sweep_config("mnist", "cpu")
    with pytest.raises(ValueError, match="unknown sweep setting"):
        experiment.sweep_config("cifar10", "cpu", budget=3)
    with pytest.raises(ValueError, match="source"):
        experiment.load_study_data("cifar10", "smoke", source="web")
    assert experiment.sweep_config("cifar10", "cpu", seeds=[7]).seeds == (7,)


def test_cpu_scale_matches_the_issue():
    cifar, tiny = experiment.sweep_config("cifar10", "cpu"), experiment.sweep_config("tiny-imagenet", "cpu")
    assert (cifar.initial_size, cifar.round_budget) == (1000, 1000) and cifar.rounds >= 10
    assert (tiny.initial_size, tiny.round_budget, tiny.rounds) == (30 * 200, 10 * 200, 8)
    assert len(cifar.seeds) >= 5 and len(tiny.seeds) >= 5
    paper = experiment.sweep_config("imagenet", "paper")
    assert (paper.initial_size, paper.round_budget, paper.rounds) == (30_000, 10_000, 8)


def test_cpu_phases_cover_every_strategy_of_every_cpu_data_set_once():
    # Reordering the sweep must never drop a (data set, strategy) the cpu scale promises.
    from alkit.experiments.catalog import CPU_PHASES, SWEEP_DATASETS

    planned: dict[str, list[str]] = {}
    extra: dict[tuple[str, str], tuple[int, ...]] = {}
    for dataset, strategies, *seeds in CPU_PHASES:
        names = experiment.sweep_config(dataset, "cpu", strategies=strategies).strategy_list()
        if seeds:   # a phase of more seeds for some strategies
            extra.update({(dataset, n): seeds[0] for n in names})
            continue
        planned.setdefault(dataset, []).extend(names)
    assert set(planned) == set(SWEEP_DATASETS["cpu"])
    for dataset, names in planned.items():
        assert sorted(names) == sorted(experiment.sweep_config(dataset, "cpu").strategy_list()), dataset
    # Ten seeds on Tiny-ImageNet for the score-based strategies and the baselines (issue: effects of
    # fractions of a point there), five elsewhere.
    tier1 = ("random", "balanced_random", "confidence", "margin", "entropy", "mase", "base")
    assert extra == {("tiny-imagenet", n): (5, 6, 7, 8, 9) for n in tier1}
    assert experiment.sweep_config("tiny-imagenet", "cpu").seeds == (0, 1, 2, 3, 4)


def test_only_phases_keeps_the_order_and_names_bad_filters():
    from alkit.checks import ParameterError
    from alkit.experiments.catalog import CPU_PHASES
    from alkit.experiments.launch import only_phases

    kept = only_phases(CPU_PHASES, "cpu", datasets=["cifar10-lt", "cifar10"], strategies=["probcover", "random"])
    flat = [(d, n) for d, names, *_ in kept for n in names]
    assert sorted(set(flat)) == sorted({(d, n) for d in ("cifar10", "cifar10-lt") for n in ("probcover", "random")})
    assert flat.index(("cifar10", "random")) < flat.index(("cifar10", "probcover"))  # sweep priority kept
    with pytest.raises(ParameterError, match="strategies: 'probcovr'") as caught:
        only_phases(CPU_PHASES, "cpu", strategies=["probcovr"])
    assert caught.value.param == "strategies"
    with pytest.raises(ParameterError, match="datasets: 'imagenet'") as caught:
        only_phases(CPU_PHASES, "cpu", datasets=["imagenet"])
    assert caught.value.param == "datasets"


def _count_graph_builds(monkeypatch) -> list:
    from alkit.strategies import probcover as probcover_module

    builds, real = [], probcover_module.delta_graph
    monkeypatch.setattr(probcover_module, "delta_graph", lambda *a, **k: builds.append(1) or real(*a, **k))
    return builds


def _round0_heads(shared: dict) -> list:
    return [key for key in shared if key[:2] == ("loop", "round0_head")]


def test_sweep_shares_what_depends_on_the_features_alone(tmp_path, monkeypatch):
    """One shared dict serves a sweep's runs: one round-0 head per seed, one ProbCover graph for
    every run and round; a run's own reuse (its cache's run dict) never leaks into another run."""
    builds = _count_graph_builds(monkeypatch)
    shared: dict = {}
    data = gaussian_mixture(4, 40, 8, separation=3.0, n_test_per_class=10, seed=3)
    experiment.run_sweep(data.train_features, data.train_labels, data.test_features, data.test_labels, 4,
                         ["probcover", "margin", "coreset"], [0, 1], initial_size=8, round_budget=8, rounds=2,
                         val_per_class=2, probe=FAST, dataset="toy", progress=False, shared=shared)
    assert len(builds) == 1 and len(_round0_heads(shared)) == 2
    assert not [key for key in shared if key[0] == "coreset"]   # coreset's bounds belong to one run


def test_sweep_workers_keep_one_shared_dict_per_data_set(tmp_path, monkeypatch):
    """A parallel sweep's worker keeps the shared dict of each data set across its tasks, so the
    seeds of a SHARED_ACROSS_SEEDS strategy sent to it build ProbCover's graph once."""
    from alkit.experiments import launch

    builds = _count_graph_builds(monkeypatch)
    monkeypatch.setattr(launch, "_WORKER_STATE", launch.WorkerState())
    for seeds in ([0], [1]):
        launch._worker_run("cifar10", "probcover", seeds, "smoke", str(tmp_path), "synthetic", None)
    state = launch.worker_state()
    assert len(builds) == 1 and state.shared_keys() == ["cifar10"]
    assert len(_round0_heads(state.shared("cifar10"))) == 2
    assert "probcover" in launch.SHARED_ACROSS_SEEDS


@pytest.mark.slow
def test_parallel_sweep_writes_the_serial_runs_and_logs_its_time(tmp_path):
    """Two worker processes give the same rows and picks as one process; ProbCover's seeds go to
    one worker; a rerun skips every finished run; each sweep appends its wall time."""
    import json

    from alkit.experiments.launch import run_phases

    phases = [("cifar10", ("random", "margin", "probcover"))]
    run_phases(phases, "smoke", str(tmp_path / "serial"), source="synthetic")
    run_phases(phases, "smoke", str(tmp_path / "parallel"), source="synthetic", jobs=2)
    for name in ("random", "margin", "probcover"):
        for seed in (0, 1):
            stems = [experiment.run_path(tmp_path / d / "cifar10", name, seed) for d in ("serial", "parallel")]
            a, b = (pd.read_csv(s.with_suffix(".csv")) for s in stems)
            pd.testing.assert_frame_equal(a.drop(columns=["selection_seconds", "training_seconds"]),
                                          b.drop(columns=["selection_seconds", "training_seconds"]))
            with np.load(stems[0].with_suffix(".npz")) as x, np.load(stems[1].with_suffix(".npz")) as y:
                assert all(np.array_equal(x[k], y[k]) for k in x.files)
            meta = json.loads(stems[1].with_suffix(".json").read_text())
            assert meta["provenance"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
            # a worker records the sweep's command, not submitit's worker script
            assert meta["provenance"]["command"] == io.launch_command() and "_submit" not in meta["provenance"]["command"]
    run_phases(phases, "smoke", str(tmp_path / "parallel"), source="synthetic", jobs=2)
    log = json.loads((tmp_path / "parallel" / "sweep_times.json").read_text())
    assert [(e["jobs"], e["runs_planned"], e["runs_run"]) for e in log] == [(2, 6, 6), (2, 6, 0)]
    assert all(e["wall_seconds"] > 0 for e in log)
    table = report.sweep_times(tmp_path / "parallel")
    assert table["runs_run"].tolist() == [6, 0] and (table["wall_minutes"] >= 0).all()
    assert report.sweep_times(tmp_path / "serial")["jobs"].tolist() == [1]
    assert report.sweep_times(tmp_path / "nothing").empty
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        run_phases(phases, "smoke", str(tmp_path / "x"), source="synthetic", jobs=0)


def _worker_needing_features(dataset, strategy, seeds, scale, out, source, data_root, **kwargs):
    """Stands in for a sweep worker: fails as an uncached data set does until ``out/<dataset>.cached`` exists."""
    from pathlib import Path

    if not (Path(out) / f"{dataset}.cached").exists():
        raise experiment.FeaturesNotCached(f"features of {dataset} are not in the cache yet")
    (Path(out) / f"{dataset}-{strategy}-{seeds[0]}.done").touch()
    return f"{dataset} {strategy} {seeds}"


@pytest.mark.slow
def test_parallel_sweep_extracts_missing_features_once_in_the_parent(tmp_path, monkeypatch):
    import sys

    import cloudpickle

    from alkit.experiments import launch
    from alkit.experiments.launch import run_parallel

    # The workers are other processes (submitit): they get this module's stand-in worker by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    extracted = []

    def fake_load(dataset, scale, **kw):   # the parent's extraction
        assert kw["extract"] is True
        extracted.append(dataset)
        (tmp_path / f"{dataset}.cached").touch()

    monkeypatch.setattr(launch, "load_study_data", fake_load)
    pending = [("cifar10", ("random",), 0), ("cifar10", ("margin",), 0), ("cifar10", ("random",), 1)]
    run_parallel(pending, "cpu", str(tmp_path), jobs=2, worker=_worker_needing_features)
    assert extracted == ["cifar10"]
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["cifar10-margin-0.done", "cifar10-random-0.done",
                                                                "cifar10-random-1.done"]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(SystemExit, match="not in the cache yet"):
        run_parallel(pending, "cpu", str(other), jobs=2, extract=False, worker=_worker_needing_features)
    assert extracted == ["cifar10"]


def test_synthetic_standin_says_so():
    data = experiment.load_study_data("tiny-imagenet", "smoke", source="synthetic")
    assert data.synthetic and "synthetic" in data.label
    lt = experiment.load_study_data("cifar10-lt", "smoke", source="synthetic")
    counts = np.bincount(lt.train_labels)
    assert counts[0] == 10 * counts[-1]  # ρ = 0.1


# ------------------------------------------------------------------------------- report


def _rows(dataset, strategy, seed, top1_by_round, oracle=False, entropy=1.0):
    return [{"dataset": dataset, "strategy": strategy, "oracle": oracle, "seed": seed, "round": r,
             "n_labeled": 100 * (r + 1), "top1": acc, "balanced_accuracy": acc,
             "labeled_normalized_entropy": entropy, "labeled_gini": 0.0, "labeled_classes_without_label": 0,
             "batch_normalized_entropy": entropy, "batch_distinct_classes": 10}
            for r, acc in enumerate(top1_by_round)]


def test_summary_pairs_by_seed_and_computes_the_area():
    rows = []
    for seed, luck in enumerate([0.0, 0.1, -0.1]):  # seed luck shared by both strategies
        rows += _rows("toy", "random", seed, [0.5 + luck, 0.6 + luck, 0.7 + luck])
        rows += _rows("toy", "margin", seed, [0.5 + luck, 0.62 + luck, 0.72 + luck])
    table = report.summary_table(pd.DataFrame(rows)).set_index("strategy")
    # AUC of (0.5, 0.62, 0.72) over x = 100..300 (trapezoid / range) minus random's
    assert table.loc["margin", "auc_diff"] == pytest.approx((0.02 / 2 + (0.02 + 0.02) / 2) / 2)
    assert table.loc["margin", "auc_diff_low"] == pytest.approx(table.loc["margin", "auc_diff"])  # no spread
    assert table.loc["margin", "outcome"] == "win" and table.loc["margin", "wins"] == 3
    assert table.loc["random", "outcome"] == "baseline"
    assert area_under_curve([0, 1, 2], [0.0, 1.0, 1.0]) == pytest.approx(0.75)
    assert mean_interval(np.array([1.0, 2.0, 3.0]))["mean"] == 2.0


def _summary(outcomes: dict[str, dict[str, str]], base_diff=None, entropies=None) -> pd.DataFrame:
    rows = []
    for ds, per_strategy in outcomes.items():
        rows.append({"dataset": ds, "strategy": "random", "oracle": False, "seeds": 5, "auc_diff": np.nan,
                     "auc_diff_low": np.nan, "auc_diff_high": np.nan, "wins": pd.NA, "outcome": "baseline",
                     "final_labeled_entropy": 1.0, "mean_batch_entropy": 1.0})
        for s, out in per_strategy.items():
            d = {"win": 0.01, "tie": 0.0, "loss": -0.01}[out] if s != "base" or base_diff is None else base_diff[ds]
            rows.append({"dataset": ds, "strategy": s, "oracle": False, "seeds": 5, "auc_diff": d,
                         "auc_diff_low": d - 0.005, "auc_diff_high": d + 0.005, "wins": 5 if d > 0 else 0,
                         "outcome": out, "final_labeled_entropy": (entropies or {}).get((ds, s), 0.99),
                         "mean_batch_entropy": 0.995 if s == "base" else 0.98})
    return pd.DataFrame(rows)


def test_verdict_rules():
    table = _summary({"cifar10": {"margin": "win", "confidence": "win", "base": "win"},
                      "tiny-imagenet": {"margin": "tie", "confidence": "loss", "base": "win"}},
                     entropies={("cifar10", "margin"): 0.999, ("cifar10", "confidence"): 0.999,
                                ("tiny-imagenet", "margin"): 0.95, ("tiny-imagenet", "confidence"): 0.95})
    v = report.claim_verdicts(table).set_index("claim")["verdict"]
    assert v[1] == "inconclusive"       # judged on the mechanism runs, which this table lacks
    assert v[2] == "inconclusive"       # all popular ones win on CIFAR-10, none on Tiny
    assert v[3] == "supported"          # BASE wins on both with more balanced batches

    none_win = _summary({"cifar10": {"margin": "tie", "base": "tie"}, "tiny-imagenet": {"margin": "loss", "base": "tie"}},
                        base_diff={"cifar10": -0.001, "tiny-imagenet": 0.002})
    v = report.claim_verdicts(none_win).set_index("claim")["verdict"]
    assert v[2] == "supported" and v[3] == "not supported"

    few = none_win.copy()
    few.loc[few["strategy"] == "random", "seeds"] = 2
    assert set(report.claim_verdicts(few)["verdict"]) == {"inconclusive"}


def test_markdown_table_has_a_row_per_row():
    md = report.to_markdown(pd.DataFrame({"a": [1, 2], "b": ["x|y", None]}))
    lines = md.strip().splitlines()
    assert len(lines) == 4 and "x\\|y" in lines[2]


def test_runs_inventory_lists_seeds_and_mean_time_per_run():
    import pandas as pd

    from alkit.report import runs_inventory

    rows = pd.DataFrame({
        "dataset": ["d"] * 4, "strategy": ["s"] * 4, "seed": [0, 0, 1, 1], "round": [0, 1, 0, 1],
        "selection_seconds": [0.0, 2.0, 0.0, 4.0], "training_seconds": [1.0, 1.0, 2.0, 2.0]})
    table = runs_inventory(rows)
    assert table.loc[0, "seeds"] == "0,1"
    assert table.loc[0, "selection s / run"] == 3.0      # (2 + 4) / 2 runs
    assert table.loc[0, "training s / run"] == 3.0       # (2 + 4) / 2 runs


def test_provenance_commit_is_the_one_the_process_started_with(monkeypatch):
    from alkit import io

    monkeypatch.setattr(io, "_LOADED_COMMIT", None)
    monkeypatch.setattr(io, "git_commit", lambda cwd=None: "aaa")
    assert io.loaded_commit() == "aaa"
    monkeypatch.setattr(io, "git_commit", lambda cwd=None: "bbb")   # a commit made while the sweep runs
    assert io.provenance()["git_commit"] == "aaa"


def test_git_commit_is_dirty_for_code_changes_not_for_results(tmp_path):
    import shutil
    import subprocess

    from alkit.io import git_commit

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    (tmp_path / "results").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "results" / "fig.txt").write_text("1")
    (tmp_path / "pkg" / "code.py").write_text("1")
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(git + ["add", "."], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path / "pkg") == head
    (tmp_path / "results" / "fig.txt").write_text("2")   # a regenerated figure
    assert git_commit(tmp_path / "pkg") == head
    (tmp_path / "pkg" / "code.py").write_text("2")
    assert git_commit(tmp_path / "pkg") == head + "+dirty"


def test_change_table_pairs_each_strategy_before_and_after():
    from alkit import report

    def summary(diff_margin, outcome_margin, final_random):
        return pd.DataFrame([
            {"dataset": "d", "strategy": "random", "oracle": False, "seeds": 5, "auc_diff": np.nan,
             "auc_diff_low": np.nan, "auc_diff_high": np.nan, "outcome": "baseline", "final_top1": final_random},
            {"dataset": "d", "strategy": "margin", "oracle": False, "seeds": 5, "auc_diff": diff_margin,
             "auc_diff_low": diff_margin - 0.01, "auc_diff_high": diff_margin + 0.01, "outcome": outcome_margin,
             "final_top1": final_random + diff_margin}])

    table = report.change_table(summary(0.002, "tie", 0.70), summary(0.02, "win", 0.75), ("old", "new"))
    margin = table.set_index("strategy").loc["margin"]
    assert (margin["auc_diff_old"], margin["auc_diff_new"]) == (0.002, 0.02)
    assert (margin["outcome_old"], margin["outcome_new"], bool(margin["outcome_changed"])) == ("tie", "win", True)
    assert table.set_index("strategy").loc["random", "final_top1_new"] == 0.75
    assert not table.set_index("strategy").loc["random", "outcome_changed"]


def test_figure_note_names_only_the_synthetic_panels_and_keeps_the_real_caveats():
    from alkit import report

    rows = pd.DataFrame({"dataset": ["cifar10", "imagenet-synthetic"], "strategy": ["random", "random"],
                         "seed": [0, 0], "data_source": ["efficientnet_lite0 features", "SYNTHETIC ImageNet-shaped pool"]})
    note = report.figure_note(rows)
    assert "SYNTHETIC DATA: the panel of ImageNet-shaped pool is not" in note
    assert "CIFAR-10: lossy JPEG" in note
    only = report.figure_note(rows[rows["dataset"] == "imagenet-synthetic"])
    assert only.startswith("SYNTHETIC DATA: these panels are not") and "CIFAR-10" not in only
    assert "SYNTHETIC" not in report.figure_note(rows[rows["dataset"] == "cifar10"])


def test_provenance_records_a_command_without_this_machines_paths():
    from pathlib import Path

    from alkit import io

    package = Path(io.__file__).resolve().parent
    assert io.command_line([str(package / "__main__.py"), "reproduce", "mechanism", "--jobs", "2"]) == \
        "python -m alkit reproduce mechanism --jobs 2"
    assert io.command_line([str(package / "experiments" / "mechanism.py"), "x"]) == "python -m alkit.experiments.mechanism x"
    assert io.command_line([str(package / "__main__.py"), "run"]) == "python -m alkit run"
    assert io.command_line([str(package.parent / "benchmarks" / "bench_scale.py"), "--n", "9"]) == \
        "benchmarks/bench_scale.py --n 9"
    assert io.command_line(["/somewhere/else/bin/pytest", "-q"]) == "pytest -q"


def test_no_committed_result_records_a_path_of_the_machine_that_made_it():
    import re
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    pattern = re.compile(r"(?<![\w.~])/(?:work|tmp|home|root|Users|mnt|scratch|var|opt)/")
    found = [str(p.relative_to(results)) for p in results.rglob("*") if p.suffix in (".json", ".md", ".csv")
             and pattern.search(p.read_text(errors="replace"))]
    assert not found, f"absolute machine paths in {len(found)} files under results/, e.g. {found[:5]}"


def test_notebook_list_parameters_parse_papermill_strings_or_say_how():
    from pathlib import Path

    from alkit.checks import ParameterError

    assert report.list_parameter('["cifar10", "tiny-imagenet"]', "DATASETS") == ["cifar10", "tiny-imagenet"]
    assert report.list_parameter("cifar10,tiny-imagenet", "DATASETS") == ["cifar10", "tiny-imagenet"]
    assert report.list_parameter("0,1,2", "SEEDS", int) == [0, 1, 2] and report.list_parameter(None, "SEEDS") is None
    for bad, kind in (("[", str), ("", str), ("1.5", int), ([True], int)):
        with pytest.raises(ParameterError, match="SEEDS" if kind is int else "DATASETS"):
            report.list_parameter(bad, "SEEDS" if kind is int else "DATASETS", kind)
    # every notebook reads its list parameters through it
    for path in sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py")):
        text = path.read_text()
        for name in ("DATASETS", "STRATEGIES", "SEEDS", "CLASS_COUNTS"):
            if f"\n{name} = " in text.split('tags=["parameters"]')[1].split("# %%")[0]:
                assert f"{name} = report.list_parameter({name}" in text, (path.name, name)
