"""Feature extraction and cache: shapes, reuse, resume bit-identical, stale/partial caches, CLI."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import CIFAR_ARCHIVE, TINY_ARCHIVE, cifar_slice, make_imagefolder, tiny_slice

from alkit.data import features as fx
from alkit.data.backbones import load_backbone
from alkit.data.datasets import ImageDataset, LongTailSpec, load_dataset
from alkit.data.features import (ExtractionInterrupted, Preprocessing, extract_features, get_features,
                            load_cached_features)
from alkit.cli.features import features_main

RES = 32  # tiny inputs keep every extraction here well under a second
COUNTS = {"train": {"ant": 7, "bee": 6, "cat": 5}, "test": {"ant": 2, "bee": 2, "cat": 2}}

@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Nothing a test does lands in the user's cache ($ALKIT_CACHE or ~/.cache/alkit)."""
    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "alkit-cache"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("images") / "data", COUNTS)


@pytest.fixture
def train(folder, tmp_path) -> ImageDataset:
    return load_dataset("imagefolder", folder, "train", cache_dir=tmp_path / "cache")


def _extract(dataset, backbone, cache, **kw):
    kw = {"resolution": RES, "batch_size": 4, "shard_size": 8, "progress": False, "device": "cpu", **kw}
    return extract_features(dataset, backbone, cache_dir=cache, **kw)


def test_extraction_writes_float16_memmap_labels_and_meta(train, backbone, tmp_path):
    result = _extract(train, backbone, tmp_path / "cache")
    features, labels, meta = load_cached_features(result.directory)
    assert isinstance(features, np.memmap) and features.dtype == np.float16 and features.shape == (18, 1280)
    assert labels.dtype == np.int64 and np.array_equal(labels, train.labels)
    assert np.array_equal(np.load(result.directory / "indices.npy"), np.arange(18))
    for key in ("dataset", "split", "backbone", "weights_sha256", "resolution", "versions", "n", "dim",
                "preprocessing", "extraction", "content_sha256", "class_names"):
        assert key in meta, key
    assert meta["resolution"] == RES and meta["n"] == 18 and meta["dim"] == 1280
    assert meta["weights_sha256"] == backbone.weights_sha256 and meta["versions"]["torch"]
    assert meta["class_names"] == ["ant", "bee", "cat"] and meta["extraction"]["sessions"] == 1
    assert not (result.directory / "partial").exists()
    # The numbers are those of the backbone on the preprocessed images (up to float16 rounding).
    prep = result.meta["preprocessing"]
    pixels = torch.from_numpy(np.stack([Preprocessing(**{**prep, "mean": tuple(prep["mean"]), "std": tuple(prep["std"])})
                                        .pixels(train.load_image(i)) for i in range(3)]))
    direct = backbone(Preprocessing(RES, mean=backbone.mean, std=backbone.std).normalize(pixels)).numpy()
    np.testing.assert_allclose(features[:3].astype(np.float32), direct, rtol=2e-3, atol=2e-3)


def test_cache_is_reused_without_recomputing(train, backbone, tmp_path, monkeypatch):
    first = _extract(train, backbone, tmp_path / "cache")
    monkeypatch.setattr(fx, "_pixel_batches", lambda *a, **k: pytest.fail("recomputed a cached entry"))
    again = _extract(train, backbone, tmp_path / "cache")
    assert again.directory == first.directory


def test_interrupted_extraction_resumes_bit_identical(train, backbone, tmp_path):
    reference = _extract(train, backbone, tmp_path / "uninterrupted")
    cache = tmp_path / "interrupted"
    with pytest.raises(ExtractionInterrupted):
        _extract(train, backbone, cache, stop_after_batches=3)  # 2 batches = shard 0 saved, batch 3 lost
    entry = fx.cache_entry_dir(cache, train, backbone, fx.default_preprocessing(train, backbone, RES))
    assert sorted(p.name for p in (entry / "partial").glob("shard_*.npy")) == ["shard_000000.npy"]
    with pytest.raises(ValueError, match="interrupted"):
        load_cached_features(entry)  # a partial entry is never used
    resumed = _extract(train, backbone, cache)
    assert resumed.meta["extraction"]["sessions"] == 2
    assert np.array_equal(np.asarray(resumed.features).view(np.uint16),
                          np.asarray(reference.features).view(np.uint16))


def test_crash_inside_a_batch_resumes_bit_identical(train, backbone, tmp_path, monkeypatch):
    reference = _extract(train, backbone, tmp_path / "uninterrupted")
    calls = {"n": 0}
    original = ImageDataset.load_image

    def flaky(self, index):
        calls["n"] += 1
        if calls["n"] == 13:  # in the second shard
            raise OSError("disk hiccup")
        return original(self, index)

    monkeypatch.setattr(ImageDataset, "load_image", flaky)
    with pytest.raises(OSError, match="hiccup"):
        _extract(train, backbone, tmp_path / "crashed")
    monkeypatch.setattr(ImageDataset, "load_image", original)
    resumed = _extract(train, backbone, tmp_path / "crashed")
    assert np.array_equal(np.asarray(resumed.features), np.asarray(reference.features))


def test_resume_with_other_settings_starts_over(train, backbone, tmp_path, caplog):
    with pytest.raises(ExtractionInterrupted):
        _extract(train, backbone, tmp_path / "cache", stop_after_batches=2)
    result = _extract(train, backbone, tmp_path / "cache", batch_size=2)
    assert "other settings" in caplog.text and result.meta["extraction"]["sessions"] == 1


def test_damaged_cache_is_rebuilt_not_used(train, backbone, tmp_path, caplog):
    first = _extract(train, backbone, tmp_path / "cache")
    np.save(first.directory / "features.npy", np.zeros((3, 4), np.float16))
    with pytest.raises(ValueError, match="inconsistent"):
        load_cached_features(first.directory)
    rebuilt = _extract(train, backbone, tmp_path / "cache")
    assert rebuilt.features.shape == (18, 1280) and "discarding" in caplog.text


def test_key_changes_with_everything_that_changes_the_numbers(folder, train, backbone, tmp_path):
    prep = fx.default_preprocessing(train, backbone, RES)
    key = fx.cache_key(train, backbone, prep)
    assert fx.cache_key(train, backbone, fx.default_preprocessing(train, backbone, RES + 8)) != key
    test = load_dataset("imagefolder", folder, "test", cache_dir=tmp_path / "cache")
    assert fx.cache_key(test, backbone, prep) != key
    limited = load_dataset("imagefolder", folder, "train", limit=6, cache_dir=tmp_path / "cache")
    assert fx.cache_key(limited, backbone, prep) != key
    other_weights = load_backbone()
    other_weights.weights_sha256 = "0" * 64
    assert fx.cache_key(train, other_weights, prep) != key
    bilinear = Preprocessing(RES, interpolation="bilinear", mean=backbone.mean, std=backbone.std)
    assert fx.cache_key(train, backbone, bilinear) != key


def test_cached_only_never_extracts(folder, backbone, tmp_path):
    options = dict(resolution=RES, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    with pytest.raises(fx.FeaturesNotCached, match="python -m alkit features"):
        get_features("imagefolder", folder, "test", backbone, cached_only=True, **options)
    made = get_features("imagefolder", folder, "test", backbone, **options)
    assert get_features("imagefolder", folder, "test", backbone, cached_only=True, **options).directory == made.directory


def test_limit_extracts_a_stratified_slice(folder, backbone, tmp_path):
    result = get_features("imagefolder", folder, "train", backbone, limit=6, resolution=RES,
                          cache_dir=tmp_path / "cache", progress=False, device="cpu")
    assert np.bincount(result.labels).tolist() == [2, 2, 2] and result.meta["subset"]["limit"]["n"] == 6


def test_long_tailed_features_are_rows_of_the_full_split(folder, backbone, tmp_path):
    lt = get_features("imagefolder", folder, "train", backbone, lt=LongTailSpec(0.5, seed=1), resolution=RES,
                      cache_dir=tmp_path / "cache", progress=False, device="cpu")
    full = get_features("imagefolder", folder, "train", backbone, resolution=RES, cache_dir=tmp_path / "cache",
                        progress=False, device="cpu")
    assert np.bincount(lt.labels).tolist() == [5, 3, 2]  # floor(5 · 0.5^(c/2)), n_max = smallest class
    assert np.array_equal(np.asarray(lt.features), np.asarray(full.features)[lt.indices])
    assert lt.meta["derived_from"]["key"] == full.meta["key"] and lt.meta["dataset"] == "imagefolder-lt"
    again = get_features("imagefolder", folder, "train", backbone, lt=LongTailSpec(0.5, seed=1), resolution=RES,
                         cache_dir=tmp_path / "cache", progress=False, device="cpu")
    assert again.directory == lt.directory


def test_preprocessing_shapes_and_bad_values():
    from PIL import Image

    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    assert Preprocessing(16, "stretch").pixels(wide).shape == (16, 16, 3)
    assert Preprocessing(16, "center_crop").pixels(wide).shape == (16, 16, 3)
    with pytest.raises(ValueError, match="resolution"):
        Preprocessing(4)
    with pytest.raises(ValueError, match="resize"):
        Preprocessing(16, "squash")
    with pytest.raises(ValueError, match="device"):
        fx.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            fx.resolve_device("cuda")


# ---------------------------------------------------------------- command line

def test_cli_extracts_and_prints_the_paths(folder, tmp_path, capsys):
    argv = ["--dataset", "imagefolder", "--root", str(folder), "--split", "test", "--out", str(tmp_path / "c"),
            "--resolution", str(RES), "--quiet", "--json"]
    assert features_main(argv) == 0
    paths = json.loads(capsys.readouterr().out)
    features = np.load(paths["features"], mmap_mode="r")
    assert features.shape == (6, 1280) and np.load(paths["labels"]).tolist() == [0, 0, 1, 1, 2, 2]
    assert json.loads(open(paths["meta"]).read())["split"] == "test"
    assert features_main(argv[:-1]) == 0  # found in the cache; human-readable lines
    assert "meta:" in capsys.readouterr().out


def test_core_cli_accepts_the_cached_features(folder, tmp_path, capsys):
    """``python -m alkit select`` reads features.npy / labels.npy as written by the cache."""
    from alkit.cli import main as alkit_main

    argv = ["--dataset", "imagefolder", "--root", str(folder), "--split", "train", "--out", str(tmp_path / "c"),
            "--resolution", str(RES), "--quiet", "--json"]
    assert features_main(argv) == 0
    paths = json.loads(capsys.readouterr().out)
    labels = np.load(paths["labels"])
    partial = np.full_like(labels, -1)
    partial[[0, 7, 13]] = labels[[0, 7, 13]]  # one labelled image per class
    np.save(tmp_path / "partial.npy", partial)
    picks = tmp_path / "picks.npy"
    assert alkit_main(["select", "--strategy", "margin", "--features", paths["features"], "--labels",
                       str(tmp_path / "partial.npy"), "--budget", "4", "--seed", "0", "--out", str(picks),
                       "--probe", "adam_early_stopping", "--probe-epochs", "3"]) == 0
    chosen = np.load(picks)
    assert chosen.size == 4 and not np.isin(chosen, [0, 7, 13]).any()


@pytest.mark.parametrize("argv, named", [
    (["--dataset", "mnist", "--split", "train"], "--dataset"),
    (["--dataset", "imagefolder", "--root", "/no/such/dir", "--split", "train"], "root"),
    (["--dataset", "cifar10", "--root", "/no/such/dir", "--split", "train", "--imbalance-ratio", "0.1"],
     "--imbalance-ratio"),
    (["--dataset", "imagefolder", "--root", "/no/such/dir", "--split", "train", "--limit", "0"], "--limit"),
    (["--dataset", "cifar10-lt", "--root", "/no/such/dir", "--split", "train", "--imbalance-ratio", "2"],
     "--imbalance-ratio must be in (0, 1]"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, named, capsys):
    assert features_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and named in err[0] and "Traceback" not in err[0]


def test_cli_unknown_backbone_and_corrupt_weights(folder, tmp_path, capsys):
    base = ["--dataset", "imagefolder", "--root", str(folder), "--split", "test", "--out", str(tmp_path / "c")]
    assert features_main(base + ["--backbone", "nope"]) == 2
    assert "backbone" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\0" * 100)
    assert features_main(base + ["--backbone", "simclr_resnet18_cifar", "--weights", str(corrupt)]) == 2
    assert "corrupt.pth" in capsys.readouterr().err


# ---------------------------------------------------------------- the shared archives (skipped when absent)

@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="shared CIFAR-10 archive absent")
def test_shared_cifar10_slice(backbone, tmp_path):
    test = load_dataset("cifar10", cifar_slice(), "test", limit=200, cache_dir=tmp_path)
    result = _extract(test, backbone, tmp_path / "cache", batch_size=50, shard_size=100)
    assert result.features.shape == (200, 1280) and np.bincount(result.labels).tolist() == [20] * 10
    assert result.meta["class_names"][0] == "airplane"


@pytest.mark.skipif(not TINY_ARCHIVE.is_file(), reason="shared Tiny-ImageNet archive absent")
def test_shared_tiny_imagenet_slice(backbone, tmp_path):
    test = load_dataset("tiny-imagenet", tiny_slice(), "test", cache_dir=tmp_path)
    result = _extract(test, backbone, tmp_path / "cache", batch_size=50, shard_size=100)
    assert result.features.shape == (200, 1280) and result.num_classes == 200
    assert np.isfinite(np.asarray(result.features, np.float32)).all()


def _bmp_folder(root, seed: int):
    """Six 8 × 8 BMPs named alike in every folder: same names and byte sizes, other pixels per seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / f"img_{i}.bmp")
    return root


def test_a_folder_with_the_same_names_and_sizes_gets_its_own_features(backbone, tmp_path):
    options = dict(resolution=RES, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    camera_a, camera_b = _bmp_folder(tmp_path / "camera_a", 0), _bmp_folder(tmp_path / "camera_b", 1)
    assert [p.stat().st_size for p in sorted(camera_a.iterdir())] == [p.stat().st_size for p in sorted(camera_b.iterdir())]
    a = get_features("images", camera_a, "train", backbone, **options)
    b = get_features("images", camera_b, "train", backbone, **options)
    assert a.directory != b.directory
    fresh = extract_features(load_dataset("images", camera_b, "train"), backbone, cache_dir=tmp_path / "fresh",
                             resolution=RES, progress=False, device="cpu")
    np.testing.assert_array_equal(np.asarray(b.features), np.asarray(fresh.features))
    assert np.abs(np.asarray(a.features, np.float32) - np.asarray(b.features, np.float32)).max() > 0.01


def test_an_image_edited_in_place_is_extracted_again(backbone, tmp_path):
    import os

    from PIL import Image

    options = dict(resolution=RES, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    camera = _bmp_folder(tmp_path / "camera", 0)
    before = get_features("images", camera, "train", backbone, **options)
    path = camera / "img_3.bmp"
    size, then = path.stat().st_size, path.stat().st_mtime_ns
    negative = 255 - np.asarray(Image.open(path))
    Image.fromarray(negative.astype(np.uint8)).save(path)      # same size, other pixels
    os.utime(path, ns=(then, then + 1_000_000))                 # even a barely newer time is seen
    assert path.stat().st_size == size
    after = get_features("images", camera, "train", backbone, **options)
    assert after.directory != before.directory
    row = list(load_dataset("images", camera, "train").files).index("img_3.bmp")
    assert np.abs(np.asarray(after.features[row], np.float32) - np.asarray(before.features[row], np.float32)).max() > 0.01


# ---------------------------------------------------------------- a full disk: checked before, named during

def _free(monkeypatch, free: int) -> list:
    """``shutil.disk_usage`` reports ``free`` bytes; returns the folders it was asked about."""
    import shutil
    import types

    asked = []

    def usage(path):
        asked.append(path)
        return types.SimpleNamespace(total=10 * free + 10**9, used=10**9, free=free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return asked


def test_extraction_estimate_counts_shards_entry_and_side_files(train):
    n, dim = len(train), 1280
    paths = sum(len(f) + 1 for f in train.files)   # ascii names
    side = fx.SIDE_FILE_BYTES + 3 * fx.BYTES_PER_CLASS
    assert fx.paths_bytes(train) == paths > 0
    # shards (2 bytes per float16) + the features.npy joined from them while they are still there
    assert fx.extraction_bytes(n, dim, paths=paths, num_classes=3) == 4 * n * dim + 16 * n + paths + side
    assert (fx.extraction_bytes(n, dim, rows_done=8, paths=paths, num_classes=3)   # shard 0 on disk
            == (4 * n - 2 * 8) * dim + 16 * n + paths + side)
    assert fx.entry_bytes(n, dim, paths=paths, num_classes=3) == 2 * n * dim + 16 * n + paths + side


def test_extraction_refuses_before_reading_an_image_when_the_disk_is_too_small(train, backbone, tmp_path,
                                                                               monkeypatch):
    from alkit.io import DiskFullError

    need = fx.extraction_bytes(len(train), 1280, paths=fx.paths_bytes(train), num_classes=3)
    asked = _free(monkeypatch, need - 1)
    monkeypatch.setattr(fx, "_pixel_batches", lambda *a, **k: pytest.fail("read images with no room to keep them"))
    with pytest.raises(DiskFullError) as info:
        _extract(train, backbone, tmp_path / "cache")
    message, entry = str(info.value), fx.cache_entry_dir(tmp_path / "cache", train, backbone,
                                                         fx.default_preprocessing(train, backbone, RES))
    assert info.value.errno == errno.ENOSPC and all(Path(p).exists() for p in asked)
    for words in (str(entry), f"needs {need / 1024:.1f} KiB ({need:,} bytes)", f"({need - 1:,} bytes) free",
                  "the disk mounted at", "ALKIT_CACHE=FOLDER", "cache_dir=FOLDER", "18 images × 1280"):
        assert words in message, (words, message)
    # the features alone (4 bytes each at the peak) are not enough either: the side files count
    _free(monkeypatch, 4 * len(train) * 1280 + 16 * len(train))
    with pytest.raises(DiskFullError):
        _extract(train, backbone, tmp_path / "cache")
    monkeypatch.undo()
    _free(monkeypatch, need)   # exactly enough
    assert len(_extract(train, backbone, tmp_path / "cache")) == 18


def test_a_resumed_extraction_needs_room_for_the_rest_only(train, backbone, tmp_path, monkeypatch):
    with pytest.raises(ExtractionInterrupted):
        _extract(train, backbone, tmp_path / "cache", stop_after_batches=2)   # shard 0 (8 rows) on disk
    rest = fx.extraction_bytes(len(train), 1280, rows_done=8, paths=fx.paths_bytes(train), num_classes=3)
    _free(monkeypatch, rest)
    assert _extract(train, backbone, tmp_path / "cache").meta["extraction"]["sessions"] == 2


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError(errno.EDQUOT, "Disk quota exceeded"),
                                   OSError("20480 requested and 4032 written")],   # numpy's words: no errno
                         ids=["ENOSPC", "EDQUOT", "short write"])
def test_a_disk_filling_during_extraction_names_the_file_and_keeps_the_shards(train, backbone, tmp_path,
                                                                              monkeypatch, error):
    from alkit.io import DiskFullError

    reference = _extract(train, backbone, tmp_path / "reference")
    real_save = np.save

    def full_at_shard_1(fh, array, *args, **kwargs):
        if "shard_000001" in str(getattr(fh, "name", "")):
            raise error
        return real_save(fh, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", full_at_shard_1)
    with pytest.raises(DiskFullError) as info:
        _extract(train, backbone, tmp_path / "cache")
    partial = fx.cache_entry_dir(tmp_path / "cache", train, backbone,
                                 fx.default_preprocessing(train, backbone, RES)) / "partial"
    message = str(info.value)
    assert f"cannot write {partial / 'shard_000001.npy'}: " in message, message
    assert "bytes) free" in message and "the disk mounted at" in message and "ALKIT_CACHE=FOLDER" in message
    assert info.value.errno == (errno.EDQUOT if error.errno == errno.EDQUOT else errno.ENOSPC)
    assert ("4,032 of 20,480 bytes" in message) == (error.errno is None)
    assert sorted(p.name for p in partial.iterdir() if p.suffix == ".npy") == ["shard_000000.npy"]
    assert not list(partial.glob(".*.tmp"))
    monkeypatch.setattr(np, "save", real_save)
    resumed = _extract(train, backbone, tmp_path / "cache")
    assert resumed.meta["extraction"]["sessions"] == 2
    assert np.array_equal(np.asarray(resumed.features).view(np.uint16), np.asarray(reference.features).view(np.uint16))


def test_joining_the_shards_on_a_full_disk_is_an_error_not_a_crash(train, backbone, tmp_path, monkeypatch):
    """The joined features.npy is written through a memory map, which on a full disk dies of SIGBUS
    (measured on a full tmpfs): its blocks are allocated first, so ENOSPC comes as an error."""
    from alkit.io import DiskFullError

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fx.os, "posix_fallocate", full, raising=False)
    with pytest.raises(DiskFullError, match=r"cannot write .*features\.npy: No space left on device; the disk"):
        _extract(train, backbone, tmp_path / "cache")
    entry = fx.cache_entry_dir(tmp_path / "cache", train, backbone, fx.default_preprocessing(train, backbone, RES))
    assert len(list((entry / "partial").glob("shard_*.npy"))) == 3 and not list(entry.glob(".*.tmp"))

    def unsupported(fd, offset, length):   # a file system that cannot allocate ahead: written as before
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(fx.os, "posix_fallocate", unsupported, raising=False)
    monkeypatch.setattr(fx, "_pixel_batches", lambda *a, **k: pytest.fail("recomputed a finished shard"))
    assert len(_extract(train, backbone, tmp_path / "cache")) == 18


def test_a_long_tailed_cut_checks_its_room_too(folder, backbone, tmp_path, monkeypatch):
    from alkit.io import DiskFullError

    options = dict(resolution=RES, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    full = get_features("imagefolder", folder, "train", backbone, **options)
    _free(monkeypatch, fx.SIDE_FILE_BYTES)   # less than the cut's 10 rows of features and its side files
    with pytest.raises(DiskFullError, match=r"imagefolder-lt \(10 rows × 1280"):
        get_features("imagefolder", folder, "train", backbone, lt=LongTailSpec(0.5, seed=1), **options)
    assert not list(full.directory.parent.glob("imagefolder-lt-*"))
