"""Data sets: layouts, archives, long-tailed profiles, stratified slices, bad input."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from image_fixtures import (CIFAR_ARCHIVE, TINY_ARCHIVE, cifar_slice, cifar_train_labels, make_imagefolder,
                            make_tar_gz, make_tiny_imagenet, make_zip, tiny_slice)

from alkit.data import datasets as ds
from alkit.data.datasets import (LongTailSpec, class_balanced_holdout, extract_archive, load_dataset,
                            long_tailed_class_counts, long_tailed_indices, stratified_limit_indices)

COUNTS = {"train": {"cat": 5, "ant": 4, "bee": 3}, "test": {"cat": 2, "ant": 2, "bee": 2}}

@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Nothing a test does lands in the user's cache ($ALKIT_CACHE or ~/.cache/alkit)."""
    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "alkit-cache"))


@pytest.fixture
def folder(tmp_path):
    return make_imagefolder(tmp_path / "data", COUNTS)


# ---------------------------------------------------------------- ImageFolder and archives

def test_imagefolder_labels_follow_sorted_class_folders(folder, tmp_path):
    train = load_dataset("imagefolder", folder, "train", cache_dir=tmp_path / "cache")
    assert train.class_names == ("ant", "bee", "cat")
    assert train.labels.dtype == np.int64
    assert train.class_counts().tolist() == [4, 3, 5]
    assert train.files[0] == "train/ant/0000.png" and train.files[-1] == "train/cat/0004.png"
    image, label = train[0]
    assert image.mode == "RGB" and image.size == (16, 16) and label == 0
    assert len(load_dataset("imagefolder", folder, "test", cache_dir=tmp_path / "cache")) == 6


def test_fingerprint_is_location_independent_and_content_sensitive(folder, tmp_path):
    import shutil

    a = load_dataset("imagefolder", folder, "train", cache_dir=tmp_path / "cache")
    moved = shutil.copytree(folder, tmp_path / "moved")
    b = load_dataset("imagefolder", moved, "train", cache_dir=tmp_path / "cache")
    assert a.content_fingerprint == b.content_fingerprint
    (moved / "train" / "ant" / "0000.png").write_bytes(b"x" * 10)
    c = load_dataset("imagefolder", moved, "train", cache_dir=tmp_path / "cache")
    assert c.content_fingerprint != a.content_fingerprint


def test_tar_gz_extracted_once_verified_and_reused(folder, tmp_path, monkeypatch):
    archive = make_tar_gz(folder, tmp_path / "set.tar.gz", top="set")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", archive, "train", cache_dir=cache)
    extracted = extract_archive(archive, cache)
    assert first.root == extracted / "set"
    marker = json.loads((extracted / ds.EXTRACTION_MARKER).read_text())
    assert marker["n_files"] == 18
    # A second load must not unpack again.
    monkeypatch.setattr(ds, "_unpack", lambda *a: (_ for _ in ()).throw(AssertionError("unpacked twice")))
    again = load_dataset("imagefolder", archive, "train", cache_dir=cache)
    assert again.files == first.files


def test_incomplete_extraction_is_never_used(folder, tmp_path, caplog):
    archive = make_tar_gz(folder, tmp_path / "set.tar.gz", top="set")
    cache = tmp_path / "cache"
    extracted = extract_archive(archive, cache)
    (extracted / "set" / "train" / "ant" / "0000.png").unlink()  # a file lost after extraction
    again = extract_archive(archive, cache)
    assert (again / "set" / "train" / "ant" / "0000.png").is_file()
    assert "incomplete" in caplog.text
    (again / ds.EXTRACTION_MARKER).unlink()  # no marker = an interrupted extraction
    assert (extract_archive(archive, cache) / ds.EXTRACTION_MARKER).is_file()


def test_failed_extraction_leaves_no_directory(tmp_path):
    bad = tmp_path / "broken.tar.gz"
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(Exception):
        extract_archive(bad, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "datasets").iterdir() if p.is_dir()]


def test_cifar10_from_imagefolder_archive_needs_ten_classes(folder, tmp_path):
    archive = make_tar_gz(folder, tmp_path / "c.tar.gz", top="cifar")
    with pytest.raises(ValueError, match="10 class folders"):
        load_dataset("cifar10", archive, "train", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- Tiny-ImageNet, ImageNet-LT

@pytest.mark.parametrize("packing", ["folder", "tar.gz", "zip"])
def test_tiny_imagenet_official_layout(tmp_path, packing):
    wnids = ["n02", "n01", "n03"]
    source = make_tiny_imagenet(tmp_path / "tiny-imagenet-200", wnids)
    root = {"folder": source,
            "tar.gz": make_tar_gz(source, tmp_path / "t.tar.gz", "tiny-imagenet-200"),
            "zip": make_zip(source, tmp_path / "t.zip", "tiny-imagenet-200")}[packing]
    train = load_dataset("tiny-imagenet", root, "train", cache_dir=tmp_path / "cache")
    assert train.class_ids == ("n01", "n02", "n03")  # sorted WordNet ids
    assert train.class_names == ("name of n01", "name of n02", "name of n03")
    assert train.class_counts().tolist() == [3, 3, 3] and train.native_size == 64
    test = load_dataset("tiny-imagenet", root, "test", cache_dir=tmp_path / "cache")
    annotations = (test.root / "val" / "val_annotations.txt").read_text().splitlines()
    for rel, label, line in zip(test.files, test.labels, annotations):
        name, wnid = line.split("\t")[:2]
        assert rel == f"val/images/{name}" and test.class_ids[label] == wnid
    assert test.split == "test"


def test_imagenet_lt_split_file(tmp_path):
    root = make_imagefolder(tmp_path / "imagenet", {"train": {"n01": 3, "n02": 2}, "val": {"n01": 1, "n02": 1}})
    split_dir = tmp_path / "splits"
    split_dir.mkdir()
    (split_dir / "ImageNet_LT_train.txt").write_text(
        "train/n01/0000.png 0\ntrain/n01/0002.png 0\ntrain/n02/0001.png 1\n")
    lt = load_dataset("imagenet-lt", root, "train", split_file=split_dir, cache_dir=tmp_path / "cache")
    assert lt.labels.tolist() == [0, 0, 1] and lt.class_ids == ("n01", "n02")
    assert lt.load_image(2).size == (16, 16)
    with pytest.raises(FileNotFoundError, match="split_file"):
        load_dataset("imagenet-lt", root, "test", split_file=split_dir, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="split_file"):
        load_dataset("imagenet-lt", root, "train", cache_dir=tmp_path / "cache")
    imagenet = load_dataset("imagenet", root, "test", cache_dir=tmp_path / "cache")
    assert len(imagenet) == 2 and imagenet.native_size is None


# ---------------------------------------------------------------- long tail and slices

def test_exponential_profile_gives_the_papers_20431_images():
    counts = long_tailed_class_counts(10, 5000, 0.1, "exp")
    assert counts.sum() == 20_431
    assert counts[0] == 5000 and counts[-1] == 500 and np.all(np.diff(counts) < 0)
    assert long_tailed_class_counts(10, 5000, 0.01, "exp")[-1] == 50


def test_step_profile_halves_the_classes():
    assert long_tailed_class_counts(10, 100, 0.1, "step").tolist() == [100] * 5 + [10] * 5
    assert long_tailed_class_counts(5, 100, 0.01, "step").tolist() == [100, 100, 1, 1, 1]


@pytest.mark.parametrize("bad", [dict(imbalance_ratio=0.0), dict(imbalance_ratio=1.5),
                                 dict(imbalance_ratio=0.1, profile="linear"), dict(imbalance_ratio=0.1, n_max=0)])
def test_long_tail_spec_rejects_bad_parameters(bad):
    with pytest.raises(ValueError):
        LongTailSpec(**bad)


def test_long_tail_is_seeded_and_exact():
    labels = np.repeat(np.arange(4), 50)
    spec = LongTailSpec(0.1, "exp", seed=3)
    rows = long_tailed_indices(labels, 4, spec)
    assert np.array_equal(rows, long_tailed_indices(labels, 4, spec))
    assert np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows]).tolist() == long_tailed_class_counts(4, 50, 0.1).tolist()
    other = long_tailed_indices(labels, 4, LongTailSpec(0.1, "exp", seed=4))
    assert not np.array_equal(rows, other)
    with pytest.raises(ValueError, match="n_max"):
        long_tailed_indices(labels, 4, LongTailSpec(0.1, n_max=60))


def test_stratified_limit_is_balanced_deterministic_and_fills_from_big_classes():
    labels = np.array([0] * 10 + [1] * 2 + [2] * 10)
    rows = stratified_limit_indices(labels, 3, 12, seed=0)
    assert np.bincount(labels[rows]).tolist() == [5, 2, 5]
    assert np.array_equal(rows, stratified_limit_indices(labels, 3, 12, seed=0))
    assert np.bincount(labels[stratified_limit_indices(labels, 3, 7)]).tolist() == [3, 2, 2]
    assert stratified_limit_indices(labels, 3, 1000).size == 22
    with pytest.raises(ValueError, match="limit"):
        stratified_limit_indices(labels, 3, 0)


def test_class_balanced_holdout():
    labels = np.repeat(np.arange(3), [10, 20, 30])
    kept, held = class_balanced_holdout(labels, 3, 0.1, seed=98)
    assert np.bincount(labels[held]).tolist() == [1, 2, 3]
    assert np.intersect1d(kept, held).size == 0 and kept.size + held.size == 60


def test_lt_and_limit_through_load_dataset(folder, tmp_path):
    lt = load_dataset("imagefolder", folder, "train", lt=LongTailSpec(0.5), cache_dir=tmp_path / "cache")
    assert lt.class_counts().tolist() == [3, 2, 1] and lt.display_name == "imagefolder-lt"
    assert lt.subset["lt"]["imbalance_ratio"] == 0.5
    full = load_dataset("imagefolder", folder, "train", cache_dir=tmp_path / "cache")
    assert np.array_equal(full.labels[lt.source_indices], lt.labels)
    test = load_dataset("imagefolder", folder, "test", lt=LongTailSpec(0.5), cache_dir=tmp_path / "cache")
    assert len(test) == 6  # the test split stays balanced
    limited = load_dataset("imagefolder", folder, "train", limit=6, cache_dir=tmp_path / "cache")
    assert limited.class_counts().tolist() == [2, 2, 2] and limited.subset["limit"]["n"] == 6


# ---------------------------------------------------------------- bad input, offline

def test_bad_input_names_the_argument(folder, tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("mnist", folder, "train")
    with pytest.raises(ValueError, match="split"):
        load_dataset("imagefolder", folder, "validation")
    with pytest.raises(FileNotFoundError, match="root"):
        load_dataset("imagefolder", tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="root"):
        load_dataset("tiny-imagenet", None, "train")
    with pytest.raises(FileNotFoundError, match="root"):
        load_dataset("tiny-imagenet", folder, "train", cache_dir=tmp_path / "cache")


def test_cifar10_download_fails_fast_offline_and_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "check_online", lambda url, timeout=8.0: "URLError: offline")
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", None, "train", cache_dir=tmp_path / "cache")
    assert time.perf_counter() - started < 5


@pytest.mark.slow
def test_online_check_gives_up_within_its_timeout():
    import socket

    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.perf_counter()
        reason = ds.check_online(f"http://127.0.0.1:{silent.getsockname()[1]}/file", timeout=1.0)
    assert reason is not None and "timed out" in reason
    assert time.perf_counter() - started < 5


# ---------------------------------------------------------------- the shared archives (skipped when absent)

@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="shared CIFAR-10 archive absent")
def test_shared_cifar10_slice(tmp_path):
    train = load_dataset("cifar10", cifar_slice(), "train", limit=200, cache_dir=tmp_path)
    assert train.class_names[0] == "airplane" and train.class_names[-1] == "truck"
    assert train.class_counts().tolist() == [20] * 10
    assert train.load_image(0).size == (32, 32) and train.native_size == 32


@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="shared CIFAR-10 archive absent")
def test_long_tail_of_the_real_cifar10_training_labels_has_20431_images():
    labels = cifar_train_labels()
    assert np.bincount(labels).tolist() == [5000] * 10
    rows = long_tailed_indices(labels, 10, LongTailSpec(0.1, "exp", seed=0))
    assert rows.size == 20_431 and np.bincount(labels[rows])[-1] == 500


@pytest.mark.skipif(not TINY_ARCHIVE.is_file(), reason="shared Tiny-ImageNet archive absent")
def test_shared_tiny_imagenet_slice(tmp_path):
    test = load_dataset("tiny-imagenet", tiny_slice(), "test", cache_dir=tmp_path)
    assert test.num_classes == 200 and test.class_counts().tolist() == [1] * 200
    assert test.class_names[0] == "goldfish" and test.load_image(0).size == (64, 64)
    train = load_dataset("tiny-imagenet", tiny_slice(), "train", cache_dir=tmp_path)
    assert len(train) == 200 and train.files[0] == "train/n01443537/images/n01443537_0.JPEG"


def test_file_digests_are_remembered_until_a_file_changes(folder):
    import hashlib
    import os

    files = ["train/ant/0000.png", "train/bee/0001.png"]
    first = ds.file_digests(folder, files)
    assert first[0] == hashlib.sha256((folder / files[0]).read_bytes()).hexdigest()
    memo = ds._digest_memo_path(folder)
    memo.write_text(memo.read_text().replace(first[0], "remembered"))
    assert ds.file_digests(folder, files)[0] == "remembered"          # stat unchanged: not read again
    st = (folder / files[0]).stat()
    os.utime(folder / files[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1))   # written again, same bytes here
    assert ds.file_digests(folder, files)[0] == first[0]               # rehashed
    with pytest.raises(FileNotFoundError):
        ds.file_digests(folder, ["train/ant/missing.png"])


def test_a_symlink_loop_adds_no_image_twice(tmp_path):
    from PIL import Image

    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / "a" / f"{i}.png")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)     # a link back up the tree
    (root / "again").symlink_to(root / "a", target_is_directory=True)   # a second way into one folder
    assert load_dataset("images", root, "train").files == ("a/0.png", "a/1.png", "a/2.png")
