"""A small sample of real features that ships with alkit, for the playground and quick trials.

``alkit/data/tiny_imagenet_sample.npz``: the cached EfficientNet-Lite0 features (112 px, float16,
1280-d) of 40 Tiny-ImageNet-200 classes (a fixed random subset), 60 training and 20 validation
images of each — 2,400 pool points and an 800-image test set, 8 MB.  It lets the playground show a
comparison on real features within a minute of a fresh clone, with no data set and no extraction.
Rebuild it from the full cached features with ``python -m alkit samples`` (needs the Tiny-ImageNet
features in the cache: ``python -m alkit features --dataset tiny-imagenet ...``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alkit.checks import ParameterError
from alkit.experiments import loading
from alkit.io import atomic_write

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "data" / "tiny_imagenet_sample.npz"
SAMPLE_CLASSES, TRAIN_PER_CLASS, TEST_PER_CLASS, SAMPLE_SEED = 40, 60, 20, 0
#: The playground's schedule on the sample: 5 labels per class to start, 3 per class per round (the
#: last round labels 40 % of the pool).
SAMPLE_SCHEDULE = {"initial_size": 5 * SAMPLE_CLASSES, "round_budget": 3 * SAMPLE_CLASSES, "rounds": 6,
                   "val_per_class": 5}


def build_sample(data: loading.StudyData, path: str | Path = SAMPLE_FILE, num_classes: int = SAMPLE_CLASSES,
                 train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS,
                 seed: int = SAMPLE_SEED) -> Path:
    """Write the sample: ``num_classes`` random classes of ``data``, the first ``train_per_class`` /
    ``test_per_class`` rows of each in a seeded shuffle, relabelled 0 … K−1 (class order kept)."""
    rng = np.random.default_rng(seed)
    classes = np.sort(rng.choice(data.num_classes, size=num_classes, replace=False))

    def rows(labels: np.ndarray, per_class: int) -> np.ndarray:
        picked = [np.sort(rng.permutation(np.flatnonzero(labels == c))[:per_class]) for c in classes]
        if any(p.size < per_class for p in picked):
            raise ValueError(f"data: some class has fewer than {per_class} rows")
        return np.concatenate(picked)

    train, test = rows(data.train_labels, train_per_class), rows(data.test_labels, test_per_class)
    relabel = {int(c): k for k, c in enumerate(classes)}
    arrays = {
        "train_features": np.asarray(data.train_features[train], np.float16),
        "train_labels": np.array([relabel[int(v)] for v in data.train_labels[train]], np.int16),
        "test_features": np.asarray(data.test_features[test], np.float16),
        "test_labels": np.array([relabel[int(v)] for v in data.test_labels[test]], np.int16),
        "source_classes": classes.astype(np.int16),
        "source_train_rows": train.astype(np.int32),
        "source_test_rows": test.astype(np.int32),
    }

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(Path(path), write)


def load_sample(path: str | Path = SAMPLE_FILE) -> loading.StudyData:
    """The shipped sample as :class:`alkit.experiments.loading.StudyData` (real features, 40 classes)."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"path: the feature sample {path} is missing; rebuild it with `python -m alkit samples`",
                             param="path")
    with np.load(path) as arrays:
        data = {k: arrays[k] for k in arrays.files}
    k = int(data["source_classes"].size)
    return loading.StudyData(
        "tiny-imagenet-sample", f"Tiny-ImageNet sample ({k} classes)", data["train_features"],
        data["train_labels"].astype(np.int64), data["test_features"], data["test_labels"].astype(np.int64), k,
        f"efficientnet_lite0 features, {data['train_labels'].size:,}-image sample", False,
        {"sample": str(path), "source_classes": data["source_classes"].tolist()})


def rebuild_sample(path: str | Path = SAMPLE_FILE, data_root: str | Path | None = None) -> Path:
    """Cut the sample again from the cached Tiny-ImageNet features (``python -m alkit samples``)."""
    data = loading.load_study_data("tiny-imagenet", "cpu", data_root=data_root, extract=False, progress=False)
    return build_sample(data, path)
