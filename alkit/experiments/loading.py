"""Loading a data set of the study: its pool and test set as arrays, ready for the loop.

``load_study_data("cifar10", "cpu")`` is the pool and test set of the committed CIFAR-10 runs: frozen
features of the real images (extracted once and cached by :mod:`alkit.data.features`), the
labelled synthetic stand-in in CI, or the synthetic ImageNet-shaped pool.  What each data set and
scale is: :mod:`alkit.experiments.catalog`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alkit.checks import ParameterError
from alkit.data.backbones import load_backbone
from alkit.data.datasets import LongTailSpec, load_dataset, long_tailed_indices, stratified_limit_indices
from alkit.data.features import FeaturesNotCached, cache_entry_dir, default_preprocessing, get_features, load_feature_set
from alkit.data.imagenet_pool import ImageNetPoolSpec, make_imagenet_pool
from alkit.data.synthetic import gaussian_mixture
from alkit.experiments.catalog import (
    DEFAULT_BACKBONE,
    SOURCES,
    DataSpec,
    SweepConfig,
    data_root_for,
    data_spec,
    sweep_config,
)
from alkit.io import array_fingerprint


@dataclass
class StudyData:
    """Train pool and test set of one data set, ready for the loop."""

    dataset: str
    title: str
    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    source: str      # "efficientnet_lite0 features", "synthetic stand-in", "synthetic ImageNet-shaped pool"
    synthetic: bool
    meta: dict = field(default_factory=dict)
    _in_memory: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:
        """Title with what the numbers are, for figure titles (synthetic data says so)."""
        return f"{self.title} [{self.source}]"

    def loop_features(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) features as the loop should read them: converted once to in-memory
        float32 when they fit :data:`IN_MEMORY_BYTES` (kept for every later run), else as stored."""
        if not self._in_memory:
            self._in_memory["train"] = in_memory_float32(self.train_features)
            self._in_memory["test"] = in_memory_float32(self.test_features)
        return self._in_memory["train"], self._in_memory["test"]

    def fingerprints(self) -> tuple[str, str]:
        """(train, test) fingerprints of the features and labels, as the run files record them;
        hashed once per StudyData (100 k × 1280 features take a second)."""
        if "fingerprints" not in self.meta:
            self.meta["fingerprints"] = (array_fingerprint(self.train_features, self.train_labels),
                                         array_fingerprint(self.test_features, self.test_labels))
        return self.meta["fingerprints"]


#: Largest feature matrix (as float32) that a sweep converts once and keeps in memory.  Every
#: round of every strategy reads the pool's features at least once (scores, distances); on a
#: float16 memory map each read gathers and converts the rows again (0.5 s per pass over the
#: 50 k CIFAR-10 pool here).  The values are the same: float16 → float32 is exact.
IN_MEMORY_BYTES = 4 * 1024**3


def in_memory_float32(features: np.ndarray, max_bytes: int = IN_MEMORY_BYTES) -> np.ndarray:
    """``features`` as one in-memory float32 array if that takes at most ``max_bytes``, else as given
    (a larger float16 memory map stays streamed in chunks)."""
    if type(features) is np.ndarray and features.dtype == np.float32:   # not a memmap: already in memory
        return features
    if features.shape[0] * features.shape[1] * 4 > max_bytes:
        return features
    out = np.empty(features.shape, np.float32)
    for start in range(0, features.shape[0], 65_536):
        out[start:start + 65_536] = features[start:start + 65_536]
    return out


def _standin(spec: DataSpec, seed: int = 7) -> StudyData:
    data = gaussian_mixture(**spec.standin, seed=seed)
    return StudyData(spec.name, spec.title, data.train_features, data.train_labels, data.test_features,
                     data.test_labels, data.num_classes, "synthetic stand-in", True,
                     {"description": data.description})


def _imagenet_synthetic(spec: DataSpec, config: SweepConfig) -> StudyData:
    pool = make_imagenet_pool(spec=ImageNetPoolSpec(**(config.pool_spec or {})), progress=False)
    shape = f"N = {pool.labels.size:,}, C = {pool.num_classes}, D = {pool.features.shape[1]}"
    return StudyData(spec.name, spec.title, pool.features, pool.labels, pool.test_features, pool.test_labels,
                     pool.num_classes, f"SYNTHETIC ImageNet-shaped pool, {shape}", True,
                     {"pool": str(pool.path), "pool_key": pool.meta["key"], "spec": pool.meta["spec"]})


def _cached_full_split(loader: str, root: Path, split: str, backbone: str, cache_dir, weights=None):
    """The complete cache entry of a whole split if it exists (no extraction), else None."""
    dataset = load_dataset(loader, root, split, cache_dir=cache_dir)
    model = load_backbone(backbone, weights)
    directory = cache_entry_dir(cache_dir, dataset, model, default_preprocessing(dataset, model))
    if not (directory / "meta.json").is_file():
        return None
    try:
        return load_feature_set(directory)
    except ValueError:
        return None


def _real_split(spec: DataSpec, root: Path, split: str, backbone: str, limit: int | None, cache_dir,
                progress: bool, extract: bool = True, weights: str | None = None):
    """Features + labels of one split (long-tailed training split: rows of the full one).

    A ``limit`` slice is class-stratified (the rows :func:`alkit.data.datasets.load_dataset` would
    take), cut from the cached whole split when that exists (instant) and extracted on its own
    otherwise; a long-tailed training split is then cut from that balanced slice with the same
    profile, so that a smoke-sized pool is long-tailed too."""
    base_loader = spec.loader.removesuffix("-lt")
    long_tail = spec.long_tail is not None and split == "train"
    if limit is not None:
        full = _cached_full_split(base_loader, root, split, backbone, cache_dir, weights)
        if full is not None:
            rows = stratified_limit_indices(full.labels, full.num_classes, limit, seed=0)
            features, labels, meta = full.features, full.labels, _feature_meta(full.meta)
        else:
            entry = get_features(base_loader, root, split, backbone, limit=limit, cache_dir=cache_dir,
                                 progress=progress, weights=weights)
            features, labels, meta = entry.features, entry.labels, _feature_meta(entry.meta)
            rows = np.arange(labels.size)
        if long_tail:
            rows = rows[long_tailed_indices(labels[rows], spec.num_classes, LongTailSpec(spec.long_tail))]
        return (np.asarray(features[rows]), labels[rows],
                {**meta, "limit": int(limit), "long_tail": spec.long_tail if long_tail else None})
    if not extract and _cached_full_split(base_loader, root, split, backbone, cache_dir, weights) is None:
        raise FeaturesNotCached(f"features of {spec.loader} {split} ({backbone}) are not in the cache yet and "
                                "extraction was not allowed (--no-extract); run `python -m alkit features ...` first")
    entry = get_features(spec.loader, root, split, backbone, limit=limit, cache_dir=cache_dir, progress=progress,
                         weights=weights)
    return entry.features, entry.labels, _feature_meta(entry.meta)


def _feature_meta(meta: dict) -> dict:
    keep = ("dataset", "split", "key", "n", "dim", "backbone", "weights_sha256", "preprocessing", "subset")
    return {k: meta[k] for k in keep if k in meta}


def load_study_data(
    dataset: str,
    scale: str = "cpu",
    *,
    source: str = "auto",
    data_root: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    cache_dir: str | Path | None = None,
    config: SweepConfig | None = None,
    progress: bool = True,
    extract: bool = True,
    weights: str | Path | None = None,
) -> StudyData:
    """The pool and test set of ``dataset`` for ``scale``.

    ``source="features"``: frozen ``backbone`` features of the real images (extracted once and
    cached by :mod:`alkit.data.features`); ``"synthetic"``: the labelled stand-in used in CI;
    ``"auto"``: real features when the data set's archive is under ``data_root`` (default
    :func:`default_data_root`), else — at smoke scale only — the stand-in.  ``extract=False``
    refuses to extract features that are not cached yet (:class:`alkit.data.features.FeaturesNotCached`)
    instead of extracting them.
    """
    spec = data_spec(dataset)
    if source not in SOURCES:
        raise ParameterError(f"source must be one of {', '.join(SOURCES)}, got {source!r}", param="source")
    config = config or sweep_config(dataset, scale)
    if spec.loader == "imagenet-synthetic":
        return _imagenet_synthetic(spec, config)
    root = data_root_for(dataset, data_root)
    have_real = root is not None and root.exists()
    if source == "synthetic" or (source == "auto" and not have_real and scale == "smoke"):
        return _standin(spec)
    if not have_real:
        raise ParameterError(
            f"data_root: no data for {dataset!r} (looked for {spec.archive or 'a folder'} under "
            f"{root or '$ALKIT_DATA / ../shared/data'}); pass --data-root, or --source synthetic for a stand-in",
                         param="data_root")
    train_x, train_y, train_meta = _real_split(spec, root, "train", backbone, config.train_limit, cache_dir, progress,
                                               extract, weights)
    test_x, test_y, test_meta = _real_split(spec, root, spec.test_split, backbone, config.test_limit, cache_dir,
                                            progress, extract, weights)
    source_text = f"{backbone} features" + (f", {train_y.size}-image slice (smoke)" if config.train_limit else "")
    return StudyData(spec.name, spec.title, train_x, train_y, test_x, test_y, spec.num_classes,
                     source_text, False, {"train": train_meta, "test": test_meta, "root": str(root)})
