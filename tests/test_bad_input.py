"""Bad input raises a ValueError that names the argument."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from alkit.loop import run_active_learning
from alkit.api import make_pool
from alkit.pool import PoolState, StrategyCache
from alkit.strategies import select


def test_shape_mismatch_names_labels(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="labels"):
        make_pool(pool.features, np.zeros(5, np.int64), 6)
    with pytest.raises(ValueError, match="labeled"):
        replace(pool, labeled=np.zeros(3, bool))
    with pytest.raises(ValueError, match="weight"):
        replace(pool, weight=np.zeros((6, 3), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_features(bad):
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    x[7, 1] = bad
    y = np.zeros(20, np.int64)
    with pytest.raises(ValueError, match="train_features.*NaN or inf.*row 7"):
        run_active_learning(x, y, x[:5] * 0, y[:5], 1, "random", seed=0, initial_size=3, round_budget=2, rounds=1)


@pytest.mark.parametrize("budget", [0, -3, 2.5, True])
def test_budget_must_be_positive_int(small_pool, budget):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="budget"):
        select(pool, "random", budget, 0)


def test_unknown_strategy_names_choices(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="strategy 'nope' is unknown.*margin"):
        select(pool, "nope", 3, 0)


def test_labels_outside_range(small_pool):
    pool, _ = small_pool
    labels = pool.labels.copy()
    labels[np.flatnonzero(pool.labeled)[0]] = 6
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\)"):
        replace(pool, labels=labels)
    with pytest.raises(ValueError, match="labels"):
        make_pool(pool.features, np.full(pool.size, -2), 6)


def test_empty_pool():
    with pytest.raises(ValueError, match="features is empty"):
        make_pool(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 3)
    x = np.zeros((4, 2), np.float32)
    full = make_pool(x, np.array([0, 1, 0, 1]), 2)
    with pytest.raises(ValueError, match="no eligible"):
        select(full, "random", 2, 0)


def test_model_strategies_need_a_model(small_pool):
    pool, _ = small_pool
    bare = replace(pool, weight=None, bias=None)
    with pytest.raises(ValueError, match="margin.*linear head"):
        select(bare, "margin", 3, 0)
    with pytest.raises(ValueError, match="mase.*weight, bias"):
        select(replace(bare, logits=np.zeros((pool.size, 6), np.float32)), "mase", 3, 0)


def test_unlabelled_labels_must_be_hidden(small_pool):
    pool, truth = small_pool
    with pytest.raises(ValueError, match="-1 for unlabelled"):
        PoolState(pool.features, pool.labeled, pool.held_out, truth.astype(np.int64), 6)


def test_seed_required(small_pool):
    pool, _ = small_pool
    with pytest.raises(ValueError, match="seed"):
        select(pool, "random", 3, None)


# ==============================================================================================
# Input that cannot hurt: every command line rejects bad input with status 2 and one stderr line
# naming the flag (before any compute); the public functions raise ValueError naming the argument.
# ==============================================================================================

import argparse  # noqa: E402
import errno  # noqa: E402
import os  # noqa: E402
import stat  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import alkit.io  # noqa: E402
from alkit.cli import main as alkit_main  # noqa: E402
from alkit.data.synthetic import gaussian_mixture  # noqa: E402


def _status(main, argv):
    try:
        return main(argv)
    except SystemExit as exc:   # argparse errors
        return exc.code


def one_error_line(main, argv, capsys) -> str:
    """Run ``main(argv)`` in-process; assert status 2, one line on stderr, no traceback; the line."""
    capsys.readouterr()
    code = _status(main, argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"status {code}, stderr: {err}"
    assert len(lines) == 1, f"expected one stderr line, got: {err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    data = gaussian_mixture(4, 30, 5, separation=3.0, seed=0)
    x, y = data.train_features, data.train_labels
    n = y.size
    partial = np.full(n, -1, np.int64)
    partial[:16] = y[:16]
    np.save(d / "F.npy", x)
    np.save(d / "Y.npy", partial)
    np.save(d / "Yt.npy", y)
    np.save(d / "T.npy", data.test_features)
    np.save(d / "TY.npy", data.test_labels)
    w = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    np.savez(d / "H.npz", W=w, b=np.zeros(4, np.float32))
    for name, bad in (("Fnan", np.nan), ("Finf", np.inf)):
        z = x.copy()
        z[11, 2] = bad
        np.save(d / f"{name}.npy", z)
    wn = w.copy()
    wn[1, 3] = np.nan
    np.savez(d / "Hnan.npz", W=wn, b=np.zeros(4, np.float32))
    np.savez(d / "Hinf.npz", W=w, b=np.array([0, np.inf, 0, 0], np.float32))
    np.savez(d / "Hnob.npz", W=w)
    np.savez(d / "Hshape.npz", W=w[:, :3], b=np.zeros(4, np.float32))
    np.save(d / "H.npy", w)
    (d / "Hcorrupt.npz").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    np.savez(d / "F.npz", features=x)
    (d / "empty.npy").write_bytes(b"")
    full = (d / "F.npy").read_bytes()
    (d / "Ftrunc.npy").write_bytes(full[: len(full) // 2])
    np.save(d / "Fint.npy", (x * 10).astype(np.int32))
    np.save(d / "F1d.npy", x[:, 0])
    np.save(d / "Yfloat.npy", partial.astype(np.float64))
    np.save(d / "Yshort.npy", partial[:10])
    yneg = partial.copy()
    yneg[20] = -2
    np.save(d / "Yneg.npy", yneg)
    np.save(d / "Yall.npy", y)
    one = np.full(n, -1, np.int64)
    one[np.flatnonzero(y == 2)[:6]] = 2
    np.save(d / "Yone.npy", one)
    np.save(d / "Ynone.npy", np.full(n, -1, np.int64))
    np.save(d / "Yconst.npy", np.zeros(n, np.int64))
    rare = np.zeros(n, np.int64)
    rare[:2] = 1   # 2 points of class 1: a small random initial set holds class 0 only
    np.save(d / "Yrare.npy", rare)
    np.save(d / "Tdim.npy", data.test_features[:, :3])
    ty = data.test_labels.copy()
    ty[0] = 9
    np.save(d / "TYbig.npy", ty)
    (d / "adir").mkdir()
    (d / "afile").write_text("not a folder")
    return d


def _select_argv(d: Path, **change) -> list[str]:
    args = {"--strategy": "margin", "--features": "F.npy", "--labels": "Y.npy", "--budget": "3", "--seed": "0",
            "--out": "P.npy"}
    args.update({f"--{k.replace('_', '-')}": v for k, v in change.items()})
    argv = ["select"]
    for key, value in args.items():
        if value is None:
            continue
        argv.append(key)
        if value is not True:
            argv.append(str(d / value) if value.endswith((".npy", ".npz")) or value in ("adir", "afile")
                        or "/" in value else value)
    return argv


SELECT_CASES = [
    # (change, flag, words the line must also hold)
    (dict(features="Fnan.npy"), "--features", "NaN or inf"),
    (dict(features="Finf.npy"), "--features", "row 11"),
    (dict(head="Hnan.npz"), "--head", "NaN or inf"),
    (dict(head="Hinf.npz"), "--head", "b holds NaN or inf"),
    (dict(head="H.npy"), "--head", "numpy.savez"),
    (dict(head="Hnob.npz"), "--head", "'b'"),
    (dict(head="Hcorrupt.npz"), "--head", "cannot read"),
    (dict(head="Hshape.npz"), "--head", "W must be"),
    (dict(features="F.npz"), "--features", ".npz archive"),
    (dict(features="empty.npy"), "--features", "empty (0 bytes)"),
    (dict(labels="empty.npy"), "--labels", "empty (0 bytes)"),
    (dict(features="adir"), "--features", "directory"),
    (dict(features="Ftrunc.npy"), "--features", "cannot read"),
    (dict(features="Fint.npy"), "--features", "float"),
    (dict(features="F1d.npy"), "--features", "2-D"),
    (dict(labels="Yfloat.npy"), "--labels", "integer"),
    (dict(labels="Yshort.npy"), "--labels", "one entry per feature row"),
    (dict(labels="Yneg.npy"), "--labels", "-1 (unlabelled)"),
    (dict(labels="Yall.npy"), "--labels", "every point is labelled"),
    (dict(labels="Yone.npy"), "--labels", "two classes"),
    (dict(labels="Ynone.npy", num_classes="4"), "--labels", "no point is labelled"),
    (dict(num_classes="2"), "--labels", "--num-classes"),
    (dict(out="adir"), "--out", "is a directory"),
    (dict(out="afile/P.npy"), "--out", "which is a file"),
    (dict(out="missing-folder/P.npy"), "--out", "does not exist"),
    (dict(seed="-1"), "--seed", "non-negative"),
    (dict(budget="0"), "--budget", "positive"),
    (dict(strategy="nope"), "--strategy", "unknown"),
    (dict(strategy="balanced_random"), "--strategy", "oracle"),
    (dict(out="picks.txt"), "--out", "must end in .npy"),
]


@pytest.mark.parametrize("change, flag, words", SELECT_CASES, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_select_rejects(files, capsys, monkeypatch, change, flag, words):
    import alkit.probe

    if "out" in change:   # the output path is checked before the head is trained
        monkeypatch.setattr(alkit.probe, "train_linear_probe", _no_compute)
    line = one_error_line(alkit_main, _select_argv(files, **change), capsys)
    assert flag in line and words in line, line


def _no_compute(*args, **kwargs):
    raise AssertionError("the compute started before the bad input was rejected")


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` read-only; as root (who may write anyway) make alkit.io see it so."""
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(folder, os.W_OK):
        real = os.access
        monkeypatch.setattr(alkit.io.os, "access",
                            lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK else real(p, mode, **kw))


def test_select_out_read_only_folder(files, capsys, monkeypatch, tmp_path):
    import alkit.probe

    locked = tmp_path / "locked"
    locked.mkdir()
    _read_only(monkeypatch, locked)
    monkeypatch.setattr(alkit.probe, "train_linear_probe", _no_compute)
    try:
        line = one_error_line(alkit_main, _select_argv(files, out=str(locked / "P.npy")), capsys)
    finally:
        locked.chmod(0o755)
    assert "--out" in line and "read-only" in line


def test_select_out_on_read_only_file_system(files, capsys, monkeypatch, tmp_path):
    """What os.access cannot see (a read-only mount, no inodes left): a real write is tried first."""
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(alkit.io, "tempfile", types.SimpleNamespace(mkstemp=refuse))
    line = one_error_line(alkit_main, _select_argv(files, out=str(tmp_path / "P.npy")), capsys)
    assert "--out" in line and "Read-only file system" in line


def test_select_disk_full_keeps_the_picks(files, capsys, monkeypatch, tmp_path):
    def full(path, array):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(alkit.io, "save_npy", full)
    line = one_error_line(alkit_main, _select_argv(files, strategy="random", out=str(tmp_path / "P.npy")), capsys)
    assert "--out" in line and "No space left" in line
    rescue = Path(line.split("saved to ")[1].split(" instead")[0])
    assert np.load(rescue).size == 3
    rescue.unlink()


def test_select_single_class_is_fine_without_a_model(files, capsys):
    out = files / "Pone.npy"
    assert alkit_main(_select_argv(files, labels="Yone.npy", strategy="random", out="Pone.npy",
                                   num_classes="4")) == 0
    assert np.load(out).size == 3


def _run_argv(d: Path, **change) -> list[str]:
    args = {"--features": "F.npy", "--labels": "Yt.npy", "--strategies": "random", "--seeds": "0",
            "--initial": "10", "--budget": "10", "--rounds": "1", "--val-per-class": "2", "--out": "rows.csv"}
    args.update({f"--{k.replace('_', '-')}": v for k, v in change.items()})
    argv = ["run"]
    for key, value in args.items():
        if value is None:
            continue
        argv.append(key)
        if value is not True:
            argv.append(str(d / value) if value.endswith((".npy", ".csv")) or value in ("adir", "afile")
                        else value)
    return argv


RUN_CASES = [
    (dict(labels="Y.npy"), "--labels", "`python -m alkit select`"),
    (dict(seeds="0,0"), "--seeds", "listed twice"),
    (dict(seeds=","), "--seeds", "empty list"),
    (dict(seeds="0,-1"), "--seeds", "non-negative"),
    (dict(seeds="0,x"), "--seeds", "'x'"),
    (dict(strategies="random,margin,random"), "--strategies", "listed twice"),
    (dict(strategies=""), "--strategies", "empty list"),
    (dict(strategies="random,nope"), "--strategies", "unknown"),
    (dict(num_classes="7"), "--num-classes", "--allow-missing-classes"),
    (dict(num_classes="3"), "--num-classes", "too small"),
    (dict(budget="40", rounds="3"), "--budget", "lower --budget or --rounds"),
    (dict(initial="500"), "--initial", "outside validation"),
    (dict(labels="Yrare.npy", initial="2", val_per_class="0"), "--initial", "one class"),
    (dict(labels="Yconst.npy"), "--labels", "two classes"),
    (dict(out="adir"), "--out", "is a directory"),
    (dict(out="afile/rows.csv"), "--out", "which is a file"),
    (dict(out="no-such-folder/rows.csv"), "--out", "does not exist"),
    (dict(rounds="-1"), "--rounds", "non-negative"),
    (dict(features="Fnan.npy"), "--features", "NaN or inf"),
    (dict(test_features="T.npy"), "--test-features", "together"),
    (dict(test_features="T.npy", test_labels="TYbig.npy"), "--test-labels", "[0, 4)"),
    (dict(test_features="Tdim.npy", test_labels="TY.npy"), "--test-features", "like --features"),
    (dict(test_fraction="1.5"), "--test-fraction", "(0, 1)"),
]


@pytest.mark.parametrize("change, flag, words", RUN_CASES, ids=lambda v: str(v)[:40] if isinstance(v, dict) else None)
def test_run_rejects_before_the_compute(files, capsys, monkeypatch, change, flag, words):
    import alkit.experiments.runs

    monkeypatch.setattr(alkit.experiments.runs, "run_sweep", _no_compute)
    line = one_error_line(alkit_main, _run_argv(files, **change), capsys)
    assert flag in line and words in line, line


def test_run_allows_missing_classes_when_asked(files, capsys):
    out = files / "missing_ok.csv"
    assert alkit_main(_run_argv(files, num_classes="5", allow_missing_classes=True, rounds="0",
                                out="missing_ok.csv")) == 0
    assert out.exists()


def test_run_disk_full_keeps_the_rows(files, capsys, monkeypatch, tmp_path):
    import alkit.io

    real = alkit.io.atomic_write

    def full(path, write):   # the disk fills when the rows are written (the kept runs went through)
        if Path(path) == tmp_path / "rows.csv":
            raise OSError(28, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(alkit.io, "atomic_write", full)
    line = one_error_line(alkit_main, _run_argv(files, rounds="0", quiet=True, out=str(tmp_path / "rows.csv")),
                          capsys)
    assert "--out" in line and "No space left" in line
    rescue = Path(line.split("saved to ")[1].split(" instead")[0])
    assert len(rescue.read_text().splitlines()) == 2   # header + the one round-0 row
    rescue.unlink()


def test_parameter_names_become_flags():
    # The flag comes from the error's parameter (data), not from its text.
    from alkit.checks import ParameterError
    from alkit.cli.common import flagged
    from alkit.cli.experiment import _experiment_message

    assert flagged(ParameterError("initial_size 1000 exceeds the 160 points outside validation",
                                  param="initial_size")).startswith("--initial 1000")
    assert flagged(ParameterError("budget must be a positive integer, got 0", param="budget")) == \
        "--budget must be a positive integer, got 0"
    assert flagged(ParameterError("train_features contains NaN or inf", param="train_features")) == \
        "--features contains NaN or inf"
    assert flagged(ValueError("--labels: must hold integer classes")) == "--labels: must hold integer classes"
    assert flagged(ValueError("budget words without a parameter")) == "budget words without a parameter"
    message = _experiment_message(ParameterError("weights file w.pth holds Python objects besides tensors; if you "
                                                 "trust it, load it with trust_checkpoint=True (…)",
                                                 param="trust_checkpoint"))
    assert "python -m alkit features" in message and "--trust-checkpoint" in message
    assert _experiment_message(ParameterError("data_root: no data for 'cifar10'", param="data_root")).startswith(
        "--data-root: no data")


# ---------------------------------------------------------------- python -m alkit features

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from image_fixtures import make_imagefolder, make_tar_gz, make_zip

    d = tmp_path_factory.mktemp("images")
    counts = {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}
    good = make_imagefolder(d / "good", counts)
    for name, maker in (("tar.gz", make_tar_gz), ("zip", make_zip)):
        archive = maker(good, d / f"good.{name}", "data")
        data = archive.read_bytes()
        (d / f"truncated.{name}").write_bytes(data[: len(data) // 2])
    (d / "garbage.tar.gz").write_bytes(bytes(range(256)) * 8)
    (d / "empty.zip").write_bytes(b"")
    cut = make_imagefolder(d / "cut", {"train": {"a": 2, "b": 2}}, suffix=".jpg")
    jpeg = cut / "train" / "a" / "0001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    fake = make_imagefolder(d / "fake", {"train": {"a": 2, "b": 2}}, suffix=".jpg")
    (fake / "train" / "b" / "0000.jpg").write_text("a text file named .jpg")
    import torch

    torch.save({"encoder.conv1.weight": torch.zeros(1), "config": argparse.Namespace(epochs=1)}, d / "objects.pth")
    (d / "afile").write_text("x")
    return d


FEATURE_CASES = [
    (["--root", "{d}/truncated.tar.gz"], "--root", "corrupt or truncated"),
    (["--root", "{d}/garbage.tar.gz"], "--root", "corrupt or truncated"),
    (["--root", "{d}/truncated.zip"], "--root", "corrupt or truncated"),
    (["--root", "{d}/empty.zip"], "--root", "empty (0 bytes)"),
    (["--root", "{d}/cut"], "--root", "cut/train/a/0001.jpg"),
    (["--root", "{d}/fake"], "--root", "fake/train/b/0000.jpg"),
    (["--root", "{d}/good", "--out", "{d}/afile"], "--out", "not a folder"),
    (["--root", "{d}/good", "--out", "{d}/afile/cache"], "--out", "which is a file"),
    (["--root", "{d}/good", "--batch-size", "0"], "--batch-size", "positive"),
    (["--root", "{d}/good", "--trust-checkpoint"], "--trust-checkpoint", "efficientnet_lite0"),
    (["--root", "{d}/good", "--backbone", "simclr_resnet18_cifar", "--weights", "{d}/objects.pth"],
     "--trust-checkpoint", "if you trust it"),
]


@pytest.mark.parametrize("extra, flag, words", FEATURE_CASES, ids=lambda v: " ".join(v)[:50] if isinstance(v, list) else None)
def test_features_rejects(images, tmp_path, monkeypatch, capsys, extra, flag, words):
    from alkit.cli.features import features_main

    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "cache"))
    argv = ["--dataset", "imagefolder", "--split", "train", "--resolution", "32", "--batch-size", "2", "--quiet",
            "--out", str(tmp_path / "cache")]
    argv += [a.format(d=images) for a in extra]
    line = one_error_line(features_main, argv, capsys)
    assert flag in line and words in line, line
    assert not list((tmp_path / "cache").glob("datasets/.tmp-*")), "an unpacking folder was left behind"


def test_features_cifar10_has_no_val_split(images, capsys):
    from alkit.cli.features import features_main

    line = one_error_line(features_main, ["--dataset", "cifar10", "--root", str(images / "good"), "--split", "val"],
                          capsys)
    assert "--split" in line and "train and test" in line


def test_features_worker_errors_name_the_image(images, tmp_path, capsys):
    from alkit.cli.features import features_main

    argv = ["--dataset", "imagefolder", "--split", "train", "--root", str(images / "fake"), "--resolution", "32",
            "--quiet", "--num-workers", "1", "--out", str(tmp_path / "cache")]
    line = one_error_line(features_main, argv, capsys)
    assert line.count("error:") == 1 and "--root" in line and "fake/train/b/0000.jpg" in line, line


def _free(monkeypatch, free: int) -> list:
    """``shutil.disk_usage`` reports ``free`` bytes (for every disk); returns the folders asked about."""
    import shutil

    asked = []

    def usage(path):
        asked.append(path)
        return types.SimpleNamespace(total=free + 10**9, used=10**9, free=free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return asked


def test_free_space_check_names_folder_disk_bytes_and_fix(tmp_path, monkeypatch):
    from alkit.io import DiskFullError, check_free_space

    asked = _free(monkeypatch, 1000)
    target = tmp_path / "not" / "yet"
    assert check_free_space(target, 1000, "the features") == 1000   # exactly enough is enough
    with pytest.raises(DiskFullError) as info:
        check_free_space(target, 1001, "the features")
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    message = str(info.value)
    for words in (f"not enough free space for the features in {target}", "needs 1,001 bytes", "has 1,000 bytes free",
                  "the disk mounted at", "ALKIT_CACHE=FOLDER"):
        assert words in message, (words, message)
    assert all(Path(p).is_dir() for p in asked)   # measured on the nearest folder that exists
    with pytest.raises(DiskFullError, match=r"needs 2\.0 GiB \(2,147,483,648 bytes\).*write elsewhere"):
        check_free_space(target, 2**31, "the run", fix="write elsewhere")


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded"),
    (OSError("81920 requested and 32704 written"), "only 32,704 of 81,920 bytes were written (disk or quota full)"),
])
def test_a_full_disk_while_saving_names_the_file(tmp_path, monkeypatch, error, reason):
    from alkit.io import DiskFullError, save_npy

    def full(fh, array, *args, **kwargs):
        raise error

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(DiskFullError) as info:
        save_npy(tmp_path / "x.npy", np.zeros(3))
    assert str(info.value).startswith(f"cannot write {tmp_path / 'x.npy'}: {reason}; the disk mounted at ")
    assert info.value.filename == str(tmp_path / "x.npy") and info.value.strerror in (os.strerror(errno.ENOSPC),
                                                                                   os.strerror(errno.EDQUOT))
    assert list(tmp_path.iterdir()) == []   # the temporary file is gone


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    from alkit.io import DiskFullError, save_npy

    def broken(fh, array, *args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(np, "save", broken)
    with pytest.raises(OSError, match="Input/output error") as info:
        save_npy(tmp_path / "x.npy", np.zeros(3))
    assert not isinstance(info.value, DiskFullError)


def test_features_refuses_a_too_small_disk_before_the_work(images, tmp_path, monkeypatch, capsys):
    from alkit.cli.features import features_main
    from alkit.data import features as fx

    _free(monkeypatch, 50_000)   # 4 images × 1280 float16 need ~ 120 kB with the side files
    monkeypatch.setattr(fx, "_pixel_batches", lambda *a, **k: pytest.fail("read images with no room to keep them"))
    argv = ["--dataset", "imagefolder", "--split", "train", "--resolution", "32", "--quiet",
            "--root", str(images / "good"), "--out", str(tmp_path / "cache")]
    line = one_error_line(features_main, argv, capsys)
    assert line.startswith("python -m alkit features: error: --out: not enough free space for the features"), line
    for words in (str(tmp_path / "cache" / "features" / "imagefolder-train-"), "4 images × 1280", "needs ",
                  "the disk mounted at", "(50,000 bytes) free", "ALKIT_CACHE=FOLDER or --out FOLDER"):
        assert words in line, (words, line)


def test_features_names_the_file_when_the_disk_fills(images, tmp_path, monkeypatch, capsys):
    from alkit.cli.features import features_main

    real_save = np.save

    def full(fh, array, *args, **kwargs):   # what numpy's tofile says when the disk fills mid-write
        if "shard_" in str(getattr(fh, "name", "")):
            raise OSError("10240 requested and 4032 written")
        return real_save(fh, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    argv = ["--dataset", "imagefolder", "--split", "train", "--resolution", "32", "--quiet",
            "--root", str(images / "good"), "--out", str(tmp_path / "cache")]
    line = one_error_line(features_main, argv, capsys)
    assert "--out: cannot write " in line and "/partial/shard_000000.npy: only 4,032 of 10,240 bytes" in line, line
    assert "bytes) free" in line and "--out FOLDER" in line and "run the same command again" in line, line


def test_unpacking_an_archive_checks_the_room_first(images, tmp_path, monkeypatch):
    from alkit.data.datasets import extract_archive
    from alkit.io import DiskFullError

    _free(monkeypatch, 10)
    with pytest.raises(DiskFullError, match=r"unpacking .*good\.zip \(6 files\) in .*datasets: it needs"):
        extract_archive(images / "good.zip", tmp_path / "cache")
    assert not list((tmp_path / "cache" / "datasets").glob("good-*"))


# ---------------------------------------------------------------- python -m alkit experiment / alkit.experiments.reproduce

@pytest.mark.parametrize("extra, flag, words", [
    (["--out", "{d}/afile"], "--out", "not a folder"),
    (["--out", "{d}/x", "--seeds", "0,0"], "--seeds", "listed twice"),
    (["--out", "{d}/x", "--seeds", "-1"], "--seeds", "non-negative"),
    (["--out", "{d}/x", "--strategies", "random,nope"], "--strategies", "unknown"),
    (["--out", "{d}/x", "--strategies", ""], "--strategies", "empty list"),
    (["--out", "{d}/x", "--rounds", "-1"], "--rounds", "non-negative"),
    (["--out", "{d}/x", "--dataset", "nope"], "--dataset", "cifar10"),
    (["--out", "{d}/x", "--data-root", "{d}/no-such-folder"], "--data-root", "does not exist"),
])
def test_experiment_rejects(files, capsys, monkeypatch, extra, flag, words):
    from alkit import cli

    from alkit.experiments import runs
    monkeypatch.setattr(runs, "run_configured_sweep", _no_compute)
    argv = ["--scale", "smoke", "--dataset", "cifar10"] + [a.format(d=files) for a in extra]
    line = one_error_line(cli.experiment_main, argv, capsys)
    assert flag in line and words in line, line


@pytest.mark.parametrize("argv, flag", [
    (["results", "--jobs", "0"], "--jobs"),
    (["class-count", "--class-counts", "10,x"], "--class-counts"),
    (["class-count", "--seeds", "1,1"], "--seeds"),
    (["results", "--scale", "cpu", "--datasets", "nope"], "--datasets"),
    (["figures", "--results", "/no/such/runs"], "--results"),
    (["mechanism", "--jobs", "0"], "--jobs"),
    (["mechanism", "--out", "README.md"], "--out"),
    (["mechanism", "--class-count-out", "README.md/x"], "--class-count-out"),
    (["class-count", "--out", "README.md"], "--out"),
    (["class-count", "--sweep-out", "/proc/no-such-folder"], "--sweep-out"),
    (["results", "--scale", "cpu", "--out", "README.md"], "--out"),
])
def test_reproduce_rejects(capsys, monkeypatch, argv, flag):
    from alkit.cli.reproduce import reproduce_main
    from alkit.experiments import class_count, mechanism

    for module, name in ((mechanism, "run_mechanism"), (class_count, "run_class_count")):   # no work may start
        monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("work started before the arguments were checked"))
    line = one_error_line(reproduce_main, argv, capsys)
    assert flag in line, line


# ---------------------------------------------------------------- help

def test_help_lists_features_and_run_shows_defaults(capsys):
    assert _status(alkit_main, ["--help"]) == 0
    assert "features" in capsys.readouterr().out
    assert _status(alkit_main, ["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: random,margin,base)" in out and "(default: 0.2)" in out and "(default: logreg)" in out


# ---------------------------------------------------------------- the Python API

@pytest.mark.parametrize("strategy", ["coreset", "badge", "probcover", "typiclust", "margin", "balancing"])
def test_select_rejects_non_finite_features(small_pool, strategy):
    pool, _ = small_pool
    x = np.array(pool.features, np.float32)
    x[5, 0] = np.nan
    with pytest.raises(ValueError, match=r"features contains NaN or inf \(first at row 5\)"):
        select(replace(pool, features=x), strategy, 4, 0)


def test_select_rejects_non_finite_logits(small_pool):
    pool, _ = small_pool
    logits = np.zeros((pool.size, pool.num_classes), np.float32)
    logits[3, 1] = np.inf
    with pytest.raises(ValueError, match="logits contains NaN or inf"):
        select(replace(pool, weight=None, bias=None, logits=logits), "margin", 4, 0)


def test_make_pool_rejects_non_finite_model_outputs(small_pool):
    pool, _ = small_pool
    labels = pool.labels
    bad = np.full((pool.size, pool.num_classes), 1.0 / pool.num_classes)
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="probabilities"):
        make_pool(pool.features, labels, pool.num_classes, probabilities=bad)
    with pytest.raises(ValueError, match="logits"):
        make_pool(pool.features, labels, pool.num_classes, logits=np.log(bad))
    w = np.array(pool.weight)
    w[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        make_pool(pool.features, labels, pool.num_classes, weight=w, bias=pool.bias)


def test_select_checks_a_runs_features_once(small_pool, monkeypatch):
    import alkit.strategies.registry as registry

    pool, _ = small_pool
    calls = []
    real = registry.check_features
    def counting(array, name="features", check_finite=True):
        if check_finite:   # the scans for NaN/inf, not PoolState's shape checks
            calls.append(name)
        return real(array, name, check_finite)

    monkeypatch.setattr(registry, "check_features", counting)
    cache = StrategyCache(pool.features)
    for _ in range(3):
        select(replace(pool, cache=cache), "random", 2, 0)
    assert calls.count("features") == 1
    select(pool, "random", 2, 0)   # no cache: scanned again
    assert calls.count("features") == 2


def test_output_checks_name_the_argument(tmp_path):
    from alkit.io import check_output_dir, check_output_file

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="out_path: .* is a directory"):
        check_output_file(tmp_path, "out_path")
    with pytest.raises(ValueError, match="out_path: .*which is a file"):
        check_output_file(tmp_path / "f" / "x.npy", "out_path")
    with pytest.raises(ValueError, match="out_path: folder .* does not exist"):
        check_output_file(tmp_path / "new" / "x.npy", "out_path")
    assert check_output_file(tmp_path / "new" / "x.npy", "out_path", create_folder=True)
    with pytest.raises(ValueError, match="results: .* is a file"):
        check_output_dir(tmp_path / "f", "results")
    assert check_output_dir(tmp_path / "a" / "b", "results") == tmp_path / "a" / "b"
    assert not list(tmp_path.glob(".alkit-write-check*"))


def test_corrupt_archive_and_unreadable_image_name_the_file(images, tmp_path):
    from alkit.data.datasets import UnreadableImage, extract_archive, load_dataset

    with pytest.raises(ValueError, match="truncated.tar.gz is corrupt or truncated"):
        extract_archive(images / "truncated.tar.gz", tmp_path)
    assert not list((tmp_path / "datasets").glob(".tmp-*"))
    dataset = load_dataset("imagefolder", images / "cut", "train", cache_dir=tmp_path)
    bad = dataset.files.index("train/a/0001.jpg")
    with pytest.raises(UnreadableImage, match="cut/train/a/0001.jpg"):
        dataset.load_image(bad)
    assert isinstance(UnreadableImage("x"), ValueError)


# ---------------------------------------------------------------- permissions of written files

@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_written_files_get_the_default_permissions(tmp_path, umask):
    from alkit.io import save_npy, write_json, write_text

    old = os.umask(umask)
    try:
        paths = [save_npy(tmp_path / "a.npy", np.arange(3)), write_text(tmp_path / "b.txt", "x"),
                 write_json(tmp_path / "c.json", {"a": 1}), write_text(tmp_path / "b.txt", "again")]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_cli_output_gets_the_default_permissions(files, tmp_path):
    old = os.umask(0o022)
    try:
        assert alkit_main(_select_argv(files, strategy="random", out=str(tmp_path / "P.npy"))) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "P.npy").stat().st_mode) == 0o644


def test_a_corrupt_head_file_is_closed_after_the_error(tmp_path):
    """numpy leaves its handle open on a corrupt zip (a ResourceWarning when it is collected); the
    CLI opens and closes the file itself."""
    import gc
    import warnings

    from alkit.cli.common import UsageError, _load_head

    bad = tmp_path / "head.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UsageError, match="--head: cannot read"):
            _load_head(str(bad))
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ---------------------------------------------------------------- strategy options, probe and loop arguments
# Each was accepted and ran (a silent wrong result); each must name the parameter and its range.

STRATEGY_OPTION_CASES = [
    ("typiclust", dict(max_clusters=0), "max_clusters"), ("typiclust", dict(max_clusters=-1), "max_clusters"),
    ("typiclust", dict(k_nn=0), "k_nn"), ("probcover", dict(alpha=2), "alpha"), ("probcover", dict(alpha=-1), "alpha"),
    ("margin_clustering", dict(candidate_factor=0), "candidate_factor"),
    ("margin_clustering", dict(candidate_factor=-1), "candidate_factor"),
    ("margin_clustering", dict(n_clusters=0), "n_clusters"), ("base", dict(slack=-1), "slack"),
    ("base", dict(chunk_rows=0), "chunk_rows"), ("badge", dict(cache_bytes=-1), "cache_bytes"),
    ("partitioned_badge", dict(subset_labeled=-1), "subset_labeled"), ("coreset", dict(chunk_rows=2.5), "chunk_rows"),
    ("badge", dict(lazy="yes"), "lazy"), ("mase", dict(chunk_rows=True), "chunk_rows"),
]


@pytest.mark.parametrize("name, options, parameter", STRATEGY_OPTION_CASES,
                         ids=[f"{n}-{next(iter(o))}={next(iter(o.values()))}" for n, o, _ in STRATEGY_OPTION_CASES])
def test_strategy_options_are_checked(name, options, parameter):
    import functools

    from alkit.checks import ParameterError
    from alkit.strategies import select
    from alkit.strategies.registry import _REGISTRY, StrategyInfo
    from conftest import build_pool

    pool, _ = build_pool(seed=1)
    info = _REGISTRY[name]
    bound = StrategyInfo(name, functools.partial(info.fn, **options), info.oracle)
    with pytest.raises(ParameterError, match=parameter) as caught:
        select(pool, bound, 5, 0)
    assert str(next(iter(options.values()))) in str(caught.value)


@pytest.mark.parametrize("options, parameter", [
    (dict(patience=-1), "patience"), (dict(tol=float("nan")), "tol"), (dict(max_iter=1.5), "max_iter"),
    (dict(lr_step=-3), "lr_step"), (dict(class_weighted="no"), "class_weighted"), (dict(momentum=1.0), "momentum"),
    (dict(batch_size=True), "batch_size"), (dict(lr=0), "lr"),
])
def test_probe_config_is_checked(options, parameter):
    from alkit.checks import ParameterError
    from alkit.probe import ProbeConfig

    with pytest.raises(ParameterError, match=f"probe {parameter}"):
        ProbeConfig(**options)


@pytest.mark.parametrize("change, parameter", [
    (dict(seed=1.5), "seed"), (dict(seed=True), "seed"), (dict(rounds=True), "rounds"), (dict(rounds=-1), "rounds"),
    (dict(num_classes=6), "num_classes"), (dict(num_classes=0), "num_classes"), (dict(val_per_class=1.0), "val_per_class"),
])
def test_loop_arguments_are_checked(change, parameter):
    from alkit.checks import ParameterError
    from alkit.loop import run_active_learning

    data = gaussian_mixture(4, 20, 4, separation=3.0, seed=0, n_test_per_class=3)
    args = dict(seed=0, initial_size=8, round_budget=4, rounds=1, val_per_class=2, num_classes=4) | change
    num_classes = args.pop("num_classes")
    with pytest.raises(ParameterError, match=parameter):
        run_active_learning(data.train_features, data.train_labels, data.test_features, data.test_labels,
                            num_classes, "random", progress=False, **args)


@pytest.mark.parametrize("argv, words", [
    (["class-count", "--class-counts", "1"], "each must lie in [2, 200]"),
    (["class-count", "--class-counts", "300"], "each must lie in [2, 200]"),
    (["class-count", "--strategies", "vaal"], "trains on the pool's images"),
])
def test_class_count_arguments_are_checked_before_any_data_is_loaded(capsys, monkeypatch, argv, words):
    from alkit.cli.reproduce import reproduce_main
    from alkit.experiments import class_count, loading

    monkeypatch.setattr(loading, "load_study_data", _no_compute)
    monkeypatch.setattr(class_count, "run_class_count", _no_compute)
    line = one_error_line(reproduce_main, argv, capsys)
    assert words in line, line


@pytest.mark.parametrize("labels, num_classes, words", [
    ([0, 1, 10**9], None, "num_classes must be at most 1,000,000"),
    ([0, 1, -1], 10**8, "num_classes must be at most 1,000,000"),
])
def test_absurd_class_counts_are_refused_before_any_allocation(labels, num_classes, words):
    import warnings

    import alkit

    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    with warnings.catch_warnings(), pytest.raises(ValueError, match=words):
        warnings.simplefilter("ignore")
        alkit.make_pool(x, np.array(labels), num_classes)


def test_float128_features_are_refused_with_the_fix():
    import alkit

    x = np.zeros((4, 3), np.longdouble)
    if x.dtype == np.float64:
        pytest.skip("this platform's long double is float64")
    with pytest.raises(ValueError, match="float16/float32/float64, got dtype float128; cast it first"):
        alkit.make_pool(x, np.full(4, -1), 2)


@pytest.mark.slow
def test_figures_from_an_empty_or_damaged_runs_folder_say_so_in_one_line(tmp_path, capsys):
    from alkit.cli.reproduce import reproduce_main

    (tmp_path / "empty").mkdir()
    assert reproduce_main(["figures", "--results", str(tmp_path / "empty")]) == 0
    assert "no notebook ran: no finished runs" in capsys.readouterr().out
    damaged = tmp_path / "damaged" / "cifar10"
    damaged.mkdir(parents=True)
    for ext, text in ((".json", "{}"), (".csv", "garbage\n"), (".npz", "")):
        (damaged / f"random__seed0{ext}").write_text(text)
    line = one_error_line(reproduce_main, ["figures", "--results", str(tmp_path / "damaged")], capsys)
    assert "notebook e_summary stopped in cell" in line and "executed copy with the traceback" in line


def test_seeds_and_probes_given_the_wrong_way_name_the_parameter():
    import alkit
    from alkit.checks import ParameterError
    from alkit.loop import run_active_learning
    from conftest import build_pool

    pool, _ = build_pool(seed=2)
    for seed in (-1, 1.5, True, "0"):
        with pytest.raises(ParameterError, match="seed"):
            alkit.select(pool, "random", 3, seed)
    data = gaussian_mixture(3, 20, 4, separation=3.0, seed=0, n_test_per_class=3)
    args = (data.train_features, data.train_labels, data.test_features, data.test_labels, 3, "random")
    options = dict(seed=0, initial_size=6, round_budget=3, rounds=1, val_per_class=2, progress=False)
    with pytest.raises(ParameterError, match="probe must be an alkit.ProbeConfig or a preset name"):
        run_active_learning(*args, probe=3, **options)
    named = run_active_learning(*args, probe="logreg", **options)   # a preset by name works as on the CLI
    assert named.config["probe"] == alkit.ProbeConfig().as_dict()
