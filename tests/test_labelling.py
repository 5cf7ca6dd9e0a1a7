"""From a folder of images to the list of images to label: the walk the README shows."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alkit.cli import main as alkit_main
from alkit.cli.features import features_main
from alkit.data.features import PATHS_FILE, get_features, load_feature_set
from alkit.data.labelling import picks_table, read_labels_csv

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """24 small images of three colours in a folder and a subfolder, no class folders."""
    root = tmp_path_factory.mktemp("photos")
    (root / "day2").mkdir()
    rng = np.random.default_rng(0)
    names = list(COLOURS)
    truth = {}
    for i in range(24):
        colour = names[i % 3]
        pixels = np.clip(np.array(COLOURS[colour])[None, None] + rng.normal(0, 25, (64, 64, 3)), 0, 255)
        rel = f"{'day2/' if i % 2 else ''}photo_{i:02d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(root / rel)
        truth[rel] = colour
    return root, truth


@pytest.fixture(scope="module")
def entry(photos, tmp_path_factory, capsys_module=None):
    root, _ = photos
    cache = tmp_path_factory.mktemp("cache")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert features_main(["--dataset", "images", "--root", str(root), "--out", str(cache), "--quiet", "--json"]) == 0
    return json.loads(out.getvalue())


def test_a_folder_of_unlabelled_images_is_a_pool_with_its_paths(photos, entry):
    root, truth = photos
    features = load_feature_set(entry["directory"])
    assert len(features) == 24 and (features.labels == -1).all() and features.num_classes == 0
    assert sorted(features.paths) == sorted(truth) and features.paths_root == root
    assert features.meta["resolution"] == 112   # 64-px images are stretched to 112 px, as --help says
    assert entry["paths"].endswith(PATHS_FILE)


def test_from_nothing_labelled_to_a_csv_of_images_then_with_labels(photos, entry, tmp_path, capsys):
    root, truth = photos
    first = tmp_path / "to_label.csv"
    assert alkit_main(["select", "--strategy", "coreset", "--features", entry["directory"], "--budget", "6",
                       "--seed", "0", "--out", str(first)]) == 0
    picks = pd.read_csv(first)
    assert list(picks.columns) == ["rank", "index", "path"] and list(picks["rank"]) == [1, 2, 3, 4, 5, 6]
    assert picks["path"].is_unique and all((root / p).is_file() for p in picks["path"])
    # The user labels those six images, then asks for the next batch with a model-based strategy.
    labels_csv = tmp_path / "labels.csv"
    pd.DataFrame({"path": picks["path"], "label": [truth[p] for p in picks["path"]]}).to_csv(labels_csv, index=False)
    if len({truth[p] for p in picks["path"]}) < 2:
        pytest.skip("coreset's first picks are all of one colour here")
    second = tmp_path / "next.csv"
    capsys.readouterr()
    assert alkit_main(["select", "--strategy", "base", "--features", entry["directory"], "--labels", str(labels_csv),
                       "--budget", "6", "--seed", "1", "--out", str(second)]) == 0
    assert "classes: 0=" in capsys.readouterr().out
    nxt = pd.read_csv(second)
    assert len(nxt) == 6 and not set(nxt["path"]) & set(picks["path"])   # never an image already labelled


def test_labels_csv_errors_name_the_flag_and_the_line(entry, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    for text, words in [("path,label\nnot_there.png,red\n", "line 2"), ("file,class\nphoto_00.png,red\n", "header"),
                        ("path,label\nphoto_00.png,red\nphoto_00.png,blue\n", "labelled twice")]:
        bad.write_text(text)
        code = alkit_main(["select", "--strategy", "random", "--features", entry["directory"], "--labels", str(bad),
                           "--budget", "2", "--seed", "0", "--out", str(tmp_path / "o.csv")])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and "--labels" in err and words in err, err


def test_read_labels_csv_and_picks_table(tmp_path):
    paths = ["a.png", "b/c.png", "d.png"]
    (tmp_path / "l.csv").write_text("path,label\nd.png,dog\na.png,cat\n")
    labels, classes = read_labels_csv(tmp_path / "l.csv", paths)
    assert classes == ["cat", "dog"] and labels.tolist() == [0, -1, 1]
    table = picks_table(np.array([2, 0]), paths)
    assert table.to_dict("list") == {"rank": [1, 2], "index": [2, 0], "path": ["d.png", "a.png"]}
    with pytest.raises(ValueError, match="needs the pool's image paths"):
        read_labels_csv(tmp_path / "l.csv", None)
    # a spreadsheet's export starts with a UTF-8 byte-order mark: still the header path,label
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfpath,label\r\nd.png,dog\r\n")
    labels, classes = read_labels_csv(tmp_path / "excel.csv", paths)
    assert classes == ["dog"] and labels.tolist() == [-1, -1, 0]


def test_an_entry_made_before_paths_gets_them_back(photos, entry):
    root, _ = photos
    features = load_feature_set(entry["directory"])
    (features.directory / PATHS_FILE).unlink()
    assert load_feature_set(entry["directory"]).paths is None
    again = get_features("images", root, "train", cache_dir=features.directory.parents[1], progress=False,
                         cached_only=True)
    assert again.paths == features.paths


def test_small_images_in_an_imagefolder_are_stretched_as_help_says(photos, tmp_path):
    from alkit.data.backbones import load_backbone
    from alkit.data.datasets import load_dataset
    from alkit.data.features import default_preprocessing

    root, truth = photos
    for rel, colour in truth.items():
        target = tmp_path / "train" / colour / rel.replace("/", "_")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / rel).read_bytes())
    dataset = load_dataset("imagefolder", tmp_path, "train")
    assert dataset.native_size == 64
    assert default_preprocessing(dataset, load_backbone("efficientnet_lite0")).resolution == 112


@pytest.mark.slow
def test_two_extractions_of_one_entry_at_once_both_succeed_with_the_same_numbers(photos, tmp_path):
    import subprocess
    import sys

    root, _ = photos
    cmd = [sys.executable, "-m", "alkit", "features", "--dataset", "images", "--root", str(root), "--out",
           str(tmp_path), "--quiet", "--json", "--batch-size", "4"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    a, b = (json.loads(o[0]) for o in outs)
    assert a["directory"] == b["directory"]
    reference = load_feature_set(a["directory"])
    alone = get_features("images", root, "train", cache_dir=tmp_path / "alone", progress=False, batch_size=4)
    np.testing.assert_array_equal(np.asarray(reference.features), np.asarray(alone.features))
    assert not (reference.directory / "partial").exists()


def test_a_killed_archive_extraction_leaves_no_temporary_folder_behind(tmp_path):
    from alkit.data.datasets import remove_stale_temporary

    parent = tmp_path / "datasets"
    dead = parent / ".tmp-photos-abc-999999999-xyz"
    alive = parent / f".tmp-photos-abc-{__import__('os').getpid()}-xyz"
    dead.mkdir(parents=True)
    alive.mkdir()
    assert remove_stale_temporary(parent, ".tmp-photos-abc-") == [dead]
    assert alive.exists() and not dead.exists()
