"""The command line as the README shows it."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from alkit.cli import main
from alkit.data.synthetic import gaussian_mixture


@pytest.fixture()
def arrays(tmp_path):
    data = gaussian_mixture(5, 40, 6, separation=3.0, seed=0)
    y = np.full(data.train_labels.size, -1, np.int64)
    y[:25] = data.train_labels[:25]
    np.save(tmp_path / "F.npy", data.train_features.astype(np.float16))
    np.save(tmp_path / "Y.npy", y)
    np.save(tmp_path / "Ytrue.npy", data.train_labels)
    w = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.savez(tmp_path / "HEAD.npz", W=w, b=np.zeros(5, np.float32))
    return tmp_path


def test_select_with_and_without_head(arrays, capsys):
    out = arrays / "PICKS.npy"
    base = ["select", "--strategy", "margin", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Y.npy"),
            "--budget", "7", "--seed", "0", "--out", str(out)]
    assert main(base) == 0
    picks = np.load(out)
    assert picks.dtype == np.int64 and picks.size == 7 and (picks >= 25).all()
    assert main(base + ["--head", str(arrays / "HEAD.npz")]) == 0
    with_head = np.load(out)
    assert with_head.size == 7 and (with_head >= 25).all()
    assert main(base[:2] + ["base"] + base[3:] + ["--head", str(arrays / "HEAD.npz"), "--num-classes", "5"]) == 0


@pytest.mark.slow
def test_select_is_reproducible_through_a_subprocess(arrays):
    cmd = [sys.executable, "-m", "alkit", "select", "--strategy", "coreset", "--features", str(arrays / "F.npy"),
           "--labels", str(arrays / "Y.npy"), "--budget", "5", "--seed", "3"]
    for name in ("a.npy", "b.npy"):
        done = subprocess.run(cmd + ["--out", str(arrays / name)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(arrays / "a.npy"), np.load(arrays / "b.npy"))


@pytest.mark.parametrize("change, message", [
    ({"--strategy": "nope"}, "strategy 'nope' is unknown"),
    ({"--budget": "0"}, "--budget"),
    ({"--features": "missing.npy"}, "--features: file not found"),
    ({"--labels": "Ybad.npy"}, "--labels: must hold one entry per feature row"),
    ({"--strategy": "balanced_random"}, "oracle baseline"),
    ({"--head": "HEADbad.npz"}, "--head: W must be"),
    ({"--num-classes": "3"}, "--labels: values must be -1"),
    ({"--probe-epochs": "3"}, "--probe-epochs: applies to the early-stopping probes"),
    ({"--probe": "sgd"}, "--probe: invalid choice"),
])
def test_select_bad_input_is_one_clear_line(arrays, capsys, change, message):
    np.save(arrays / "Ybad.npy", np.zeros(3, np.int64))
    np.savez(arrays / "HEADbad.npz", W=np.zeros((5, 2), np.float32), b=np.zeros(5, np.float32))
    args = {"--strategy": "margin", "--features": "F.npy", "--labels": "Y.npy", "--budget": "3", "--seed": "0",
            "--out": "P.npy"}
    args.update(change)
    argv = ["select"]
    for k, v in args.items():
        argv += [k, str(arrays / v) if v.endswith((".npy", ".npz")) else v]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def exit_code(argv):
    """The status ``python -m alkit`` would exit with (argparse errors raise SystemExit)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_select_nan_features(arrays, capsys):
    x = np.load(arrays / "F.npy").astype(np.float32)
    x[3, 2] = np.nan
    np.save(arrays / "Fnan.npy", x)
    code = main(["select", "--strategy", "random", "--features", str(arrays / "Fnan.npy"), "--labels",
                 str(arrays / "Y.npy"), "--budget", "3", "--seed", "0", "--out", str(arrays / "P.npy")])
    assert code == 2 and "NaN or inf" in capsys.readouterr().err


def test_strategies_lists_registry(capsys):
    assert main(["strategies"]) == 0
    out = capsys.readouterr().out
    import re

    assert re.search(r"^balanced_random\s+oracle\s+ORACLE", out, re.M)
    assert re.search(r"^margin\s+Margin", out, re.M) and not re.search(r"^margin\s+oracle", out, re.M)
    assert re.search(r"^vaal\s+images\s+VAAL", out, re.M)   # listed, marked: it trains on images (finetune only)


def test_run_refuses_an_image_strategy_before_reading_anything(tmp_path, capsys):
    """`run` holds features only: VAAL is refused with the command that can run it, before any file is read."""
    code = main(["run", "--features", str(tmp_path / "absent.npy"), "--labels", str(tmp_path / "absent.npy"),
                 "--strategies", "margin,vaal", "--initial", "5", "--budget", "5", "--rounds", "1",
                 "--out", str(tmp_path / "rows.csv")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--strategies: 'vaal' trains on the pool's images" in err and "python -m alkit finetune" in err


@pytest.mark.slow
def test_run_writes_csv_and_says_which_strategy_did_better(arrays, capsys):
    from alkit.report import summary_table

    out = arrays / "rows.csv"
    assert main(["run", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Ytrue.npy"),
                 "--strategies", "random,margin", "--seeds", "0,1", "--initial", "10", "--budget", "10",
                 "--rounds", "2", "--val-per-class", "2", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 2 * 2 * 3 and set(frame["strategy"]) == {"random", "margin"}
    printed = capsys.readouterr().out
    margin = summary_table(frame).set_index("strategy").loc["margin"]
    line = next(x for x in printed.splitlines() if x.startswith("margin "))
    assert f"{margin['auc_diff']:+.4f} [{margin['auc_diff_low']:+.4f}, {margin['auc_diff_high']:+.4f}]" in line
    assert "(baseline)" in next(x for x in printed.splitlines() if x.startswith("random "))


@pytest.mark.slow
def test_run_records_the_probe_it_was_asked_for(arrays):
    base = ["run", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Ytrue.npy"), "--strategies", "margin",
            "--initial", "10", "--budget", "10", "--rounds", "1", "--val-per-class", "2"]
    assert main(base + ["--out", str(arrays / "a.csv")]) == 0
    assert main(base + ["--out", str(arrays / "b.csv"), "--probe", "adam_early_stopping", "--probe-epochs", "4"]) == 0
    a, b = pd.read_csv(arrays / "a.csv"), pd.read_csv(arrays / "b.csv")
    assert set(a["probe_method"]) == {"logreg"} and a["probe_converged"].all() and a["probe_l2"].notna().all()
    assert set(b["probe_method"]) == {"early_stopping"} and (b["probe_epochs"] <= 4).all()



@pytest.mark.slow
def test_select_reports_progress_unless_quiet(arrays, capsys):
    base = ["select", "--strategy", "margin", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Y.npy"),
            "--budget", "4", "--seed", "0", "--out", str(arrays / "P.npy")]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "training the head" in out and "selecting 4 of" in out and out.rstrip().splitlines()[-1].startswith("selected")
    assert main(base + ["--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"selected 4 points with margin -> {arrays / 'P.npy'}"]


def test_run_resumes_from_the_runs_it_kept(arrays, monkeypatch):
    import alkit.experiments.runs as runs

    out = arrays / "rows.csv"
    argv = ["run", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Ytrue.npy"), "--strategies",
            "random,margin", "--seeds", "0", "--initial", "10", "--budget", "10", "--rounds", "2",
            "--val-per-class", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    first = pd.read_csv(out)
    assert sorted(p.name for p in (arrays / "rows.csv.runs").glob("*.json")) == \
        ["margin__seed0.json", "random__seed0.json"]
    calls = []
    real = runs.run_active_learning
    monkeypatch.setattr(runs, "run_active_learning", lambda *a, **k: calls.append(a[5]) or real(*a, **k))
    assert main(argv[:8] + ["0,1"] + argv[9:]) == 0        # one more seed: only its runs are computed
    assert len(calls) == 2
    again = pd.read_csv(out)
    pd.testing.assert_frame_equal(again[again["seed"] == 0].drop(columns=["selection_seconds", "training_seconds"])
                                  .reset_index(drop=True),
                                  first.drop(columns=["selection_seconds", "training_seconds"]), check_dtype=False)


@pytest.mark.slow
def test_two_sweeps_into_one_folder_compute_each_run_once(tmp_path):
    """Each run is claimed before it is computed: a second process skips what the first holds and
    collects it when it is written; a claim whose process is gone is taken over."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import json, numpy as np
        import alkit.experiments.runs as runs
        from alkit.data.synthetic import gaussian_mixture
        d = gaussian_mixture(5, 40, 6, separation=3.0, seed=0)
        computed = []
        real = runs.run_active_learning
        runs.run_active_learning = lambda *a, **k: computed.append((k["seed"], a[5].name)) or real(*a, **k)
        runs.run_sweep(d.train_features, d.train_labels, d.test_features, d.test_labels, 5,
                       ["random", "margin", "coreset"], [0, 1, 2], initial_size=10, round_budget=10, rounds=2,
                       val_per_class=2, out_dir={str(tmp_path / "runs")!r}, progress=False)
        print(json.dumps(computed))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    import json

    done = [tuple(x) for o in outs for x in json.loads(o[0])]
    assert len(done) == len(set(done)) == 9   # every run computed exactly once between the two
    assert not list((tmp_path / "runs").glob("*.claim"))
    from alkit.experiments.runs import claim_run, release_claim

    stem = tmp_path / "runs" / "x__seed0"
    stem.with_suffix(".claim").write_text("999999999 " + __import__("platform").node() + "\n")   # a dead process
    assert claim_run(stem)                                  # taken over from the dead process
    assert stem.with_suffix(".claim").read_text().split()[0] == str(__import__("os").getpid())
    release_claim(stem)
    assert not stem.with_suffix(".claim").exists()


@pytest.mark.slow
def test_a_strategy_of_your_own_is_named_module_colon_function(arrays, tmp_path, monkeypatch, capsys):
    (tmp_path / "my_strategies.py").write_text(
        "import numpy as np\n\n"
        "def last_rows(pool, budget, rng):\n"
        "    \"\"\"The last eligible rows.\"\"\"\n"
        "    return pool.eligible_indices()[-budget:]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from alkit.strategies.registry import _REGISTRY

    try:
        out = tmp_path / "picks.npy"
        assert main(["select", "--strategy", "my_strategies:last_rows", "--features", str(arrays / "F.npy"),
                     "--labels", str(arrays / "Y.npy"), "--budget", "3", "--seed", "0", "--out", str(out)]) == 0
        labels = np.load(arrays / "Y.npy")
        assert np.load(out).tolist() == np.flatnonzero(labels == -1)[-3:].tolist()
        assert main(["run", "--features", str(arrays / "F.npy"), "--labels", str(arrays / "Ytrue.npy"),
                     "--strategies", "random,my_strategies:last_rows", "--initial", "10", "--budget", "5",
                     "--rounds", "1", "--val-per-class", "2", "--out", str(tmp_path / "rows.csv")]) == 0
        assert set(pd.read_csv(tmp_path / "rows.csv")["strategy"]) == {"random", "last_rows"}
        capsys.readouterr()
        assert main(["select", "--strategy", "my_strategies:nope", "--features", str(arrays / "F.npy"),
                     "--budget", "3", "--seed", "0", "--out", str(out)]) == 2
        assert "module 'my_strategies' has no 'nope'" in capsys.readouterr().err
    finally:
        _REGISTRY.pop("last_rows", None)


@pytest.mark.parametrize("module,command", [("experiment", "experiment"), ("finetune", "finetune")])
def test_the_old_module_commands_say_where_the_command_went(module, command):
    # Every command lives under `python -m alkit`; the old module form must not run silently (or
    # do nothing and exit 0), but name the new one.
    done = subprocess.run([sys.executable, "-m", f"alkit.{module}", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert f"python -m alkit {command}" in done.stderr


@pytest.mark.parametrize("command", ["features", "reproduce", "experiment", "demo", "samples", "imagenet-pool"])
def test_every_command_answers_help_under_one_entry_point(command, capsys):
    try:
        code = main([command, "--help"])
    except SystemExit as stop:   # argparse's own --help
        code = stop.code
    assert code == 0
    assert f"python -m alkit {command}" in capsys.readouterr().out


def test_library_errors_carry_their_parameter_and_the_cli_names_its_flag():
    # The check helpers put the parameter's name on the error as data; the command line opens the
    # message with the flag, no pattern matching over the text.
    from alkit.checks import ParameterError, check_float, check_int
    from alkit.cli.common import PARAMETER_FLAGS, flagged

    with pytest.raises(ParameterError) as caught:
        check_int(0, "round_budget", low=1)
    assert caught.value.param == "round_budget"
    assert flagged(caught.value) == "--budget must be an integer ≥ 1, got 0"
    with pytest.raises(ParameterError) as caught:
        check_float(float("nan"), "tol", low=0.0)
    assert caught.value.param == "tol" and flagged(caught.value).startswith("tol must be")   # no flag: unchanged
    # The data wins over the text: a parameter named in the message that is not the error's own
    # stays as written.
    error = ParameterError("val_per_class must be ≥ 0 (initial_size is fine), got -1", param="val_per_class")
    assert flagged(error) == "--val-per-class must be ≥ 0 (initial_size is fine), got -1"
    assert "round_budget" in PARAMETER_FLAGS


def test_the_features_command_names_flags_from_the_errors_parameter_alone():
    # No text rewriting: the flag comes from ``param``. A message that opens with the parameter gets
    # the flag in its place, any other message the flag in front, one without a parameter no flag.
    from alkit.checks import MissingPathError, ParameterError
    from alkit.cli.common import flagged
    from alkit.cli.features import FEATURES_FLAGS

    assert flagged(MissingPathError("root=/x does not exist", param="root"), FEATURES_FLAGS) == \
        "--root=/x does not exist"
    assert flagged(ParameterError("archive a.zip is corrupt", param="root"), FEATURES_FLAGS) == \
        "--root: archive a.zip is corrupt"
    assert flagged(ParameterError("rootless words", param="root"), FEATURES_FLAGS) == "--root: rootless words"
    assert flagged(ValueError("root=/x is odd"), FEATURES_FLAGS) == "root=/x is odd"


def test_every_parameter_the_data_layer_names_has_a_flag_or_is_internal():
    # A new ``param=`` in alkit/data/ without a flag of `python -m alkit features` would reach the
    # user unflagged: list it here or give it a flag.
    import ast
    from pathlib import Path

    import alkit.data
    from alkit.cli.features import FEATURES_FLAGS

    internal = {"resize", "interpolation"}   # Preprocessing fields that no flag sets
    named = set()
    for path in Path(alkit.data.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "param" and isinstance(node.value, ast.Constant):
                named.add(node.value.value)
    assert "root" in named and "weights" in named
    assert named - internal <= set(FEATURES_FLAGS), named - internal - set(FEATURES_FLAGS)


def test_the_loop_reports_absent_classes_as_num_classes(arrays):
    from alkit.checks import ParameterError
    from alkit.loop import run_active_learning

    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    y = np.arange(60) % 3
    with pytest.raises(ParameterError) as caught:
        run_active_learning(x, y, x, y, 5, "random", seed=0, initial_size=10, round_budget=5, rounds=1,
                            progress=False)
    assert caught.value.param == "num_classes"
