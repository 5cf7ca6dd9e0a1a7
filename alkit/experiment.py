"""Experiments as data: configured sweeps over (data set, strategy, seed), one result per run.

Each finished run leaves ``<out>/<dataset>/<strategy>__seed<k>.csv`` (its rows), ``.npz`` (picks,
label counts, per-class accuracy) and, written last, ``.json`` (run key + provenance).  A run
whose ``.json`` exists with the same key is skipped, so an interrupted sweep resumes where it
stopped and never reuses a result made with other settings.

Data sets and scales are plain dictionaries (:data:`DATASETS`, :data:`SCALES`) so that every
setting of every committed result is in one place::

    python -m alkit.experiment --scale cpu --dataset cifar10 --out results/runs/cpu

``smoke`` runs in seconds on slices of the real data when ``../shared/data`` (or ``$ALKIT_DATA``)
holds it, and on clearly labelled synthetic stand-ins when it does not (CI); ``cpu`` is the
offline reproduction on EfficientNet-Lite0 features; ``paper`` is the authors' schedule for users
with a GPU, ImageNet and the paper's self-supervised checkpoints.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alkit.io import atomic_write, loaded_commit, provenance, write_json
from alkit.loop import RunResult, run_active_learning
from alkit.probe import ProbeConfig
from alkit.strategies.registry import Strategy, resolve_strategy, strategy_names

SCALE_NAMES = ("smoke", "cpu", "paper")


class FeaturesNotCached(ValueError):
    """Raised with ``extract=False`` when the features a sweep needs are not cached yet."""

SOURCES = ("auto", "features", "synthetic")
DEFAULT_BACKBONE = "efficientnet_lite0"


# --------------------------------------------------------------------------------------------
# Data sets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """One data set of the study: where its images are and what stands in for it in CI."""

    name: str                 # folder name of its results, key of DATASETS
    title: str                # for figures and tables
    loader: str               # name for alkit.datasets / alkit.features (or "imagenet-synthetic")
    archive: str | None       # file name under the data root (../shared/data), if any
    test_split: str           # "test" (CIFAR) or "val" (Tiny-ImageNet, ImageNet)
    num_classes: int
    long_tail: float | None = None   # ρ of the exponential long-tailed training split
    many_class: bool = False         # the paper's "ImageNet-like" side of the contrast
    caveat: str = ""
    standin: dict = field(default_factory=dict)  # gaussian_mixture parameters for the CI stand-in


DATASETS: dict[str, DataSpec] = {
    "cifar10": DataSpec(
        "cifar10", "CIFAR-10", "cifar10", "cifar10-jpeg.tar.gz", "test", 10,
        caveat="lossy JPEG (q75) copy of CIFAR-10; ImageNet-supervised EfficientNet-Lite0 features stand in "
               "for the paper's self-supervised SimCLR features",
        standin=dict(num_classes=10, n_max=120, dim=32, separation=2.4, n_test_per_class=40)),
    "tiny-imagenet": DataSpec(
        "tiny-imagenet", "Tiny-ImageNet-200", "tiny-imagenet", "tiny-imagenet-200.tar.gz", "val", 200,
        many_class=True,
        caveat="Tiny-ImageNet stands in for ImageNet; the ImageNet-pretrained backbone has seen many of these "
               "images during its supervised training",
        standin=dict(num_classes=40, n_max=40, dim=32, separation=3.0, n_test_per_class=15)),
    "cifar10-lt": DataSpec(
        "cifar10-lt", "CIFAR-10-LT (ρ = 0.1)", "cifar10-lt", "cifar10-jpeg.tar.gz", "test", 10, long_tail=0.1,
        caveat="exponential long tail n_c = 5000·0.1^(c/9) cut from the JPEG CIFAR-10 copy; backbone pretrained "
               "on balanced ImageNet (the paper pretrains SimCLR on the imbalanced set)",
        standin=dict(num_classes=10, n_max=200, dim=32, separation=2.4, profile="exp", imbalance_ratio=0.1,
                     n_test_per_class=40)),
    "imagenet": DataSpec(
        "imagenet", "ImageNet-1k", "imagenet", None, "val", 1000, many_class=True,
        caveat="your own ImageNet copy and backbone"),
    "imagenet-synthetic": DataSpec(
        "imagenet-synthetic", "ImageNet-shaped pool", "imagenet-synthetic", None, "test", 1000,
        many_class=True,
        caveat="SYNTHETIC pool of ImageNet's shape (alkit.imagenet_pool), not ImageNet data"),
}


def data_spec(name: str) -> DataSpec:
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}")
    return DATASETS[name]


def default_data_root() -> Path | None:
    """``$ALKIT_DATA``, else ``../shared/data`` beside the repository when it exists, else None."""
    env = os.environ.get("ALKIT_DATA")
    if env:
        return Path(env).expanduser()
    beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else None


# --------------------------------------------------------------------------------------------
# Scales: every setting of a sweep in one place
# --------------------------------------------------------------------------------------------

#: The linear probe of every scale but ``paper``: a converged L2 logistic regression whose strength
#: is chosen on the validation split (``ProbeConfig()``; benchmarks/full_data_probe.py holds it to a
#: wider, tighter grid).  ``ProbeConfig.named("adam_early_stopping")`` is the earlier default.
CPU_PROBE = ProbeConfig()
SMOKE_PROBE = ProbeConfig()


@dataclass(frozen=True)
class SweepConfig:
    """The schedule of one data set at one scale."""

    dataset: str
    initial_size: int
    round_budget: int
    rounds: int
    val_per_class: int
    seeds: tuple[int, ...]
    strategies: tuple[str, ...] | None = None   # None: every registered strategy
    probe: ProbeConfig = ProbeConfig()
    train_limit: int | None = None   # class-stratified slice of the real training split (smoke)
    test_limit: int | None = None
    pool_spec: dict | None = None    # imagenet-synthetic: alkit.imagenet_pool.ImageNetPoolSpec fields
    note: str = ""

    def strategy_list(self) -> list[str]:
        return list(self.strategies) if self.strategies is not None else strategy_names()

    def as_dict(self) -> dict:
        out = asdict(self)
        out["probe"] = self.probe.as_dict()
        out["strategies"] = self.strategy_list()
        return out


#: Strategies for the synthetic ImageNet-shaped pool at cpu scale: the score-based ones (one
#: chunked pass over the pool each) that carry the paper's argument, plus the two baselines.
IMAGENET_CPU_STRATEGIES = ("random", "balanced_random", "confidence", "margin", "entropy", "mase", "base")

#: Smoke runs a few strategies of each family (uncertainty, boundary, diversity, hybrid, oracle) so
#: that every notebook runs end to end in seconds; ``--strategies`` or ``STRATEGIES`` widen it.
SMOKE_STRATEGIES = ("random", "balanced_random", "margin", "base", "coreset", "badge")

SCALES: dict[str, dict[str, SweepConfig]] = {
    # Seconds per notebook: tiny slices (real data when present, else synthetic stand-ins).
    "smoke": {
        "cifar10": SweepConfig("cifar10", 40, 40, 2, 5, (0, 1), SMOKE_STRATEGIES, SMOKE_PROBE, train_limit=600,
                               test_limit=300),
        "tiny-imagenet": SweepConfig("tiny-imagenet", 200, 100, 2, 1, (0, 1), SMOKE_STRATEGIES, SMOKE_PROBE,
                                     train_limit=1200, test_limit=400),
        "cifar10-lt": SweepConfig("cifar10-lt", 40, 40, 2, 5, (0, 1), SMOKE_STRATEGIES, SMOKE_PROBE, train_limit=1000,
                                  test_limit=300),
        "imagenet-synthetic": SweepConfig(
            "imagenet-synthetic", 300, 100, 2, 2, (0, 1), ("random", "balanced_random", "margin", "base"), SMOKE_PROBE,
            pool_spec=dict(n_total=6000, num_classes=50, dim=64, n_test_per_class=10, latent_dim=16)),
    },
    # The offline reproduction (EfficientNet-Lite0 features, this 2-core CPU).
    "cpu": {
        # Paper's CIFAR-10 schedule (1 k + 1 k per round), 10 rounds; 10 % class-balanced validation.
        "cifar10": SweepConfig("cifar10", 1000, 1000, 10, 500, (0, 1, 2, 3, 4), probe=CPU_PROBE),
        # The paper's ImageNet budgets per class: 30/class initial, 10/class per round, 8 rounds;
        # validation 10 % (50/class) as for CIFAR-10, since 1 % would be 5 images per class.
        "tiny-imagenet": SweepConfig("tiny-imagenet", 6000, 2000, 8, 50, (0, 1, 2, 3, 4), probe=CPU_PROBE),
        # Long tail ρ = 0.1 (20,431 images); ~10 % validation, balanced: 200 per class (the
        # smallest class has 500); class-weighted loss as in the authors' imbalanced-CIFAR recipe.
        "cifar10-lt": SweepConfig("cifar10-lt", 1000, 1000, 10, 200, (0, 1, 2, 3, 4),
                                  probe=replace(CPU_PROBE, class_weighted=True)),
        # ImageNet's shape with 100 classes and 512-d features so that it runs on 2 cores; the
        # paper's per-class schedule (30/class initial, 10/class per round, 8 rounds).
        "imagenet-synthetic": SweepConfig(
            "imagenet-synthetic", 3000, 1000, 8, 13, (0, 1, 2, 3, 4), IMAGENET_CPU_STRATEGIES, CPU_PROBE,
            pool_spec=dict(n_total=128_000, num_classes=100, dim=512, n_test_per_class=50),
            note="reduced for CPU: N = 128 k, C = 100, D = 512; the paper's per-class budgets"),
    },
    # The authors' settings, for GPU users with their own data and checkpoints.
    "paper": {
        "cifar10": SweepConfig("cifar10", 1000, 1000, 30, 500, (98, 99), probe=ProbeConfig.paper(),
                               note="the paper fine-tunes SimCLR ResNet-18 end to end; here: linear evaluation"),
        "cifar10-lt": SweepConfig("cifar10-lt", 1000, 1000, 30, 200, (98, 99),
                                  probe=replace(ProbeConfig.paper(), class_weighted=True)),
        "tiny-imagenet": SweepConfig("tiny-imagenet", 6000, 2000, 8, 50, (98, 99), probe=ProbeConfig.paper()),
        # 30 k random initial + 8 × 10 k on ImageNet-1k train, 1 % (13 per class) validation.
        "imagenet": SweepConfig("imagenet", 30_000, 10_000, 8, 13, (98, 99), probe=ProbeConfig.paper(),
                                note="MoCo v2 800-epoch ResNet-50 features (--backbone moco_v2_resnet50 --weights ...)"),
        "imagenet-synthetic": SweepConfig("imagenet-synthetic", 30_000, 10_000, 8, 13, (98, 99),
                                          probe=ProbeConfig.paper(), pool_spec={}),
    },
}


def sweep_config(dataset: str, scale: str, **overrides) -> SweepConfig:
    """The configured schedule of ``dataset`` at ``scale``, with keyword overrides
    (e.g. ``seeds=(0,)``, ``strategies=("random", "base")``, ``rounds=3``)."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    data_spec(dataset)
    if dataset not in SCALES[scale]:
        raise ValueError(f"dataset {dataset!r} has no {scale}-scale configuration; choose one of "
                         f"{', '.join(SCALES[scale])}")
    config = SCALES[scale][dataset]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("seeds", "strategies"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    unknown = set(overrides) - set(SweepConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown sweep setting(s): {', '.join(sorted(unknown))}")
    return replace(config, **overrides)


# --------------------------------------------------------------------------------------------
# Loading features (or the synthetic stand-in)
# --------------------------------------------------------------------------------------------

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


def _fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of array bytes (float16 features of 100 k × 1280 take about a second)."""
    digest = hashlib.sha256()
    for array in arrays:
        a = np.asarray(array)
        digest.update(str((a.shape, a.dtype.str)).encode())
        for start in range(0, a.shape[0], 65_536):
            digest.update(np.ascontiguousarray(a[start:start + 65_536]).tobytes())
    return digest.hexdigest()


def _standin(spec: DataSpec, seed: int = 7) -> StudyData:
    from alkit.synthetic import gaussian_mixture

    data = gaussian_mixture(**spec.standin, seed=seed)
    return StudyData(spec.name, spec.title, data.train_features, data.train_labels, data.test_features,
                     data.test_labels, data.num_classes, "synthetic stand-in", True,
                     {"description": data.description})


def _imagenet_synthetic(spec: DataSpec, config: SweepConfig) -> StudyData:
    from alkit.imagenet_pool import ImageNetPoolSpec, make_imagenet_pool

    pool = make_imagenet_pool(spec=ImageNetPoolSpec(**(config.pool_spec or {})), progress=False)
    shape = f"N = {pool.labels.size:,}, C = {pool.num_classes}, D = {pool.features.shape[1]}"
    return StudyData(spec.name, spec.title, pool.features, pool.labels, pool.test_features, pool.test_labels,
                     pool.num_classes, f"SYNTHETIC ImageNet-shaped pool, {shape}", True,
                     {"pool": str(pool.path), "pool_key": pool.meta["key"], "spec": pool.meta["spec"]})


def _cached_full_split(loader: str, root: Path, split: str, backbone: str, cache_dir, weights=None):
    """The complete cache entry of a whole split if it exists (no extraction), else None."""
    from alkit.backbones import load_backbone
    from alkit.datasets import load_dataset
    from alkit.features import cache_entry_dir, default_preprocessing, load_feature_set

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

    A ``limit`` slice is class-stratified (the rows :func:`alkit.datasets.load_dataset` would
    take), cut from the cached whole split when that exists (instant) and extracted on its own
    otherwise; a long-tailed training split is then cut from that balanced slice with the same
    profile, so that a smoke-sized pool is long-tailed too."""
    from alkit.datasets import LongTailSpec, long_tailed_indices, stratified_limit_indices
    from alkit.features import get_features

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
    cached by :mod:`alkit.features`); ``"synthetic"``: the labelled stand-in used in CI;
    ``"auto"``: real features when the data set's archive is under ``data_root`` (default
    :func:`default_data_root`), else — at smoke scale only — the stand-in.  ``extract=False``
    refuses to extract features that are not cached yet (ValueError) instead of extracting them.
    """
    spec = data_spec(dataset)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    config = config or sweep_config(dataset, scale)
    if spec.loader == "imagenet-synthetic":
        return _imagenet_synthetic(spec, config)
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    if spec.archive is not None and root is not None and (root / spec.archive).exists():
        root = root / spec.archive
    have_real = root is not None and root.exists()
    if source == "synthetic" or (source == "auto" and not have_real and scale == "smoke"):
        return _standin(spec)
    if not have_real:
        raise ValueError(
            f"data_root: no data for {dataset!r} (looked for {spec.archive or 'a folder'} under "
            f"{root or '$ALKIT_DATA / ../shared/data'}); pass --data-root, or --source synthetic for a stand-in")
    train_x, train_y, train_meta = _real_split(spec, root, "train", backbone, config.train_limit, cache_dir, progress,
                                               extract, weights)
    test_x, test_y, test_meta = _real_split(spec, root, spec.test_split, backbone, config.test_limit, cache_dir,
                                            progress, extract, weights)
    source_text = f"{backbone} features" + (f", {train_y.size}-image slice (smoke)" if config.train_limit else "")
    return StudyData(spec.name, spec.title, train_x, train_y, test_x, test_y, spec.num_classes,
                     source_text, False, {"train": train_meta, "test": test_meta, "root": str(root)})


# --------------------------------------------------------------------------------------------
# Runs and sweeps
# --------------------------------------------------------------------------------------------

def run_path(out_dir: Path, strategy: str, seed: int) -> Path:
    return Path(out_dir) / f"{strategy}__seed{seed}"


def _save_run(stem: Path, result: RunResult, extra: dict) -> None:
    atomic_write(stem.with_suffix(".csv"), lambda tmp: pd.DataFrame(result.rows).to_csv(tmp, index=False))

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            # int32 picks: pools here are far below 2³¹ points and the files are committed.
            np.savez_compressed(
                fh, validation_indices=result.validation_indices.astype(np.int32),
                label_counts=result.label_counts.astype(np.int32),
                per_class_accuracy=result.per_class_accuracy.astype(np.float32),
                **{f"picks_round{r}": p.astype(np.int32) for r, p in enumerate(result.picks)},
            )

    atomic_write(stem.with_suffix(".npz"), write_npz)
    write_json(stem.with_suffix(".json"), {"config": result.config, **extra})  # last: marks the run done


def _finished(stem: Path, run_key: dict) -> bool:
    meta = stem.with_suffix(".json")
    if not (meta.exists() and stem.with_suffix(".csv").exists() and stem.with_suffix(".npz").exists()):
        return False
    try:
        return json.loads(meta.read_text()).get("run_key") == run_key
    except (OSError, ValueError):
        return False


def run_sweep(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    strategies: Sequence[str | Strategy],
    seeds: Sequence[int],
    *,
    initial_size: int,
    round_budget: int,
    rounds: int,
    val_per_class: int = 0,
    probe: ProbeConfig = ProbeConfig(),
    out_dir: str | Path | None = None,
    dataset: str = "arrays",
    data_meta: dict | None = None,
    data_source: str = "arrays",
    progress: bool = True,
    shared: dict | None = None,
) -> pd.DataFrame:
    """Run every (strategy, seed); return all rows.

    Runs go seed by seed (every strategy for seed 0, then seed 1, …), so a sweep stopped early
    still holds complete paired comparisons for the seeds it finished.  With ``out_dir`` each
    run is saved as it finishes and finished runs with the same settings are loaded instead.
    ``shared``: the ``shared`` dict of every run's :class:`alkit.pool.StrategyCache`, for work that
    depends on these features alone (round-0 heads, ProbCover's δ-graph; see
    :func:`alkit.loop.run_active_learning`); a fresh dict for this call when None.  Pass the same
    dict again only with the same features and labels.
    """
    shared = {} if shared is None else shared
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    infos = [resolve_strategy(s) for s in strategies]
    jobs = [(info, int(seed)) for seed in seeds for info in infos]
    deferred = []   # runs another live process has claimed: collected (or taken over) at the end
    bar = tqdm(jobs, desc=f"sweep {dataset}", disable=not progress)

    def key_of(info, seed) -> dict:
        key = {"dataset": dataset, "strategy": info.name, "seed": seed, "initial_size": initial_size,
               "round_budget": round_budget, "rounds": rounds, "val_per_class": val_per_class,
               "probe": probe.as_dict(), "data": data_meta or {}, "pool_size": int(train_features.shape[0])}
        return json.loads(json.dumps(key, default=str))

    def compute(info, seed, key, stem) -> pd.DataFrame:
        started = time.perf_counter()
        try:
            result = run_active_learning(
                train_features, train_labels, test_features, test_labels, num_classes, info, seed=seed,
                initial_size=initial_size, round_budget=round_budget, rounds=rounds, val_per_class=val_per_class,
                probe=probe, progress=False, shared=shared,
            )
            frame = result.frame()
            frame.insert(0, "dataset", dataset)
            frame.insert(1, "data_source", data_source)
            result.rows = frame.to_dict("records")
            if stem is not None:
                _save_run(stem, result, {"run_key": key, "provenance": provenance(
                    wall_seconds=round(time.perf_counter() - started, 2))})
        finally:
            if stem is not None:
                release_claim(stem)
        return frame

    for info, seed in bar:
        key = key_of(info, seed)
        stem = run_path(Path(out_dir), info.name, seed) if out_dir is not None else None
        if stem is not None and _finished(stem, key):
            frames[(info.name, seed)] = pd.read_csv(stem.with_suffix(".csv"))
            continue
        if stem is not None and not claim_run(stem):
            deferred.append((info, seed, key, stem))
            continue
        bar.set_postfix(run=f"{info.name} seed {seed}")
        frames[(info.name, seed)] = compute(info, seed, key, stem)
    while deferred:   # wait for the other process's runs; take over any whose process has gone
        for job in list(deferred):
            info, seed, key, stem = job
            if _finished(stem, key):
                frames[(info.name, seed)] = pd.read_csv(stem.with_suffix(".csv"))
                deferred.remove(job)
            elif claim_run(stem):
                frames[(info.name, seed)] = compute(info, seed, key, stem)
                deferred.remove(job)
        if deferred:
            time.sleep(CLAIM_POLL_S)
    ordered = [frames[(info.name, seed)] for info, seed in jobs]
    return pd.concat(ordered, ignore_index=True) if ordered else pd.DataFrame()


#: Seconds between looks at runs another process has claimed.
CLAIM_POLL_S = 2.0


def _claim_owner_alive(claim: Path) -> bool:
    """Whether the process that wrote ``claim`` ("pid host") still runs; on another host, whether the
    claim is less than a day old (its process cannot be asked)."""
    try:
        pid_text, host = claim.read_text().split()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if host != platform.node():
        try:
            return time.time() - claim.stat().st_mtime < 86_400
        except OSError:
            return False
    if pid == os.getpid():
        return False   # this process's own claim from an interrupted attempt
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_run(stem: Path) -> bool:
    """Claim the run at ``stem`` for this process (``<stem>.claim`` holding "pid host", created
    exclusively), so that two sweeps into one folder compute each run once.  False if another live
    process holds it; a claim whose process is gone is taken over."""
    claim = Path(stem).with_suffix(".claim")
    claim.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if _claim_owner_alive(claim):
                return False
            claim.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {platform.node()}\n")
        return True
    return False


def release_claim(stem: Path) -> None:
    Path(stem).with_suffix(".claim").unlink(missing_ok=True)


def run_configured_sweep(
    dataset: str,
    scale: str,
    out: str | Path | None,
    *,
    source: str = "auto",
    data_root: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    data: StudyData | None = None,
    extract: bool = True,
    weights: str | Path | None = None,
    shared: dict | None = None,
    **overrides,
) -> pd.DataFrame:
    """Run (or resume) the ``scale`` sweep of ``dataset``; runs land in ``<out>/<dataset>/``.

    ``overrides`` change the configured schedule (``seeds``, ``strategies``, ``rounds``, ...);
    the run key records them, so results made with other settings are never mixed in.  ``shared``:
    see :func:`run_sweep`; a caller running several sweeps of one data set keeps one per data set.
    """
    loaded_commit()   # pin the provenance's commit to the code this process started with
    config = sweep_config(dataset, scale, **overrides)
    data = data or load_study_data(dataset, scale, source=source, data_root=data_root, backbone=backbone,
                                   cache_dir=cache_dir, config=config, progress=progress, extract=extract,
                                   weights=weights)
    if "fingerprints" not in data.meta:  # hashing 100 k × 1280 features takes a second: once per StudyData
        data.meta["fingerprints"] = (_fingerprint(data.train_features, data.train_labels),
                                     _fingerprint(data.test_features, data.test_labels))
    train_fp, test_fp = data.meta["fingerprints"]
    data_meta = {"source": data.source, "train_fingerprint": train_fp, "test_fingerprint": test_fp, "scale": scale,
                 "num_classes": data.num_classes, **({"note": config.note} if config.note else {})}
    train_features, test_features = data.loop_features()
    return run_sweep(
        train_features, data.train_labels, test_features, data.test_labels, data.num_classes,
        config.strategy_list(), config.seeds, initial_size=config.initial_size, round_budget=config.round_budget,
        rounds=config.rounds, val_per_class=config.val_per_class, probe=config.probe,
        out_dir=None if out is None else Path(out) / dataset, dataset=dataset, data_meta=data_meta,
        data_source=data.source, progress=progress, shared=shared,
    )


# --------------------------------------------------------------------------------------------
# Reading results back
# --------------------------------------------------------------------------------------------

def finished_runs(results_dir: str | Path, dataset: str | None = None) -> list[Path]:
    """Stems of the finished runs (``.json`` written last) under ``results_dir[/dataset]``."""
    base = Path(results_dir) / dataset if dataset else Path(results_dir)
    if not base.is_dir():
        return []
    stems = []
    for meta in sorted(base.rglob("*__seed*.json")):
        stem = meta.with_suffix("")
        if stem.with_suffix(".csv").exists() and stem.with_suffix(".npz").exists():
            stems.append(stem)
    return stems


def load_runs(results_dir: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """All rows of the finished runs under ``results_dir`` (one folder per data set)."""
    frames = [pd.read_csv(stem.with_suffix(".csv")) for stem in finished_runs(results_dir, dataset)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def load_run_arrays(results_dir: str | Path, dataset: str, strategy: str, seed: int) -> dict[str, np.ndarray]:
    """The ``.npz`` of one run: picks per round, label counts, per-class accuracy."""
    stem = run_path(Path(results_dir) / dataset, strategy, seed)
    with np.load(stem.with_suffix(".npz")) as data:
        return {k: data[k] for k in data.files}


def results_for(
    datasets: Sequence[str],
    scale: str,
    results_dir: str | Path,
    *,
    run_missing: bool,
    source: str = "auto",
    data_root: str | Path | None = None,
    backbone: str = DEFAULT_BACKBONE,
    progress: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Rows of ``datasets`` at ``scale``: with ``run_missing`` the sweeps run (finished runs are
    loaded, not recomputed); without, only what ``results_dir`` already holds is read — the way
    ``make reproduce-figures`` renders committed results offline."""
    frames = []
    for dataset in datasets:
        if run_missing:
            frame = run_configured_sweep(dataset, scale, results_dir, source=source, data_root=data_root,
                                         backbone=backbone, progress=progress, **overrides)
        else:
            frame = load_runs(results_dir, dataset)
            # Committed results may hold more than asked for: keep the asked strategies and seeds.
            if not frame.empty and overrides.get("strategies") is not None:
                frame = frame[frame["strategy"].isin([resolve_strategy(s).name for s in overrides["strategies"]])]
            if not frame.empty and overrides.get("seeds") is not None:
                frame = frame[frame["seed"].isin([int(s) for s in overrides["seeds"]])]
        if frame.empty:
            raise ValueError(f"results_dir: no finished runs of {dataset!r} under {results_dir}; run "
                             f"`python -m alkit.experiment --scale {scale} --dataset {dataset} --out {results_dir}`")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _csv_list(text: str | None, cast=str) -> list | None:
    if text is None:
        return None
    return [cast(part.strip()) for part in text.split(",") if part.strip()]


EXPERIMENT_PROG = "python -m alkit.experiment"

#: Python parameter names in library errors → the flags of ``python -m alkit.experiment``.
EXPERIMENT_FLAGS = {"data_root": "--data-root", "cache_dir": "--cache-dir", "weights": "--weights",
                    "dataset": "--dataset", "scale": "--scale", "source": "--source", "rounds": "--rounds",
                    "seeds": "--seeds", "strategies": "--strategies", "results_dir": "--out"}


def _experiment_message(exc: BaseException) -> str:
    from alkit.cli import flag_names, one_line

    message = flag_names(one_line(exc), EXPERIMENT_FLAGS)
    # The checkpoint loader's hint names a Python keyword this command does not have.
    return message.replace(
        "if you trust it, load it with trust_checkpoint=True",
        "if you trust it, extract the features first with `python -m alkit features … --weights FILE "
        "--trust-checkpoint` (the sweep then finds them in the cache)")


def main(argv: list[str] | None = None) -> int:
    from alkit.cli import HelpFormatter, OneLineParser, UsageError, non_negative_int, parse_seeds, parse_strategies
    from alkit.io import check_output_dir

    parser = OneLineParser(
        prog=EXPERIMENT_PROG, formatter_class=HelpFormatter,
        description="Run (or resume) configured active-learning sweeps; one result file per run.")
    parser.add_argument("--scale", choices=SCALE_NAMES, required=True)
    parser.add_argument("--dataset", action="append", required=True,
                        help=f"one of {', '.join(DATASETS)} (repeat the flag for several, or 'all')")
    parser.add_argument("--out", required=True, help="results folder; runs go to OUT/<dataset>/")
    parser.add_argument("--strategies", help="comma-separated names (default: the scale's list)")
    parser.add_argument("--seeds", help="comma-separated non-negative integers (default: the scale's seeds)")
    parser.add_argument("--rounds", type=non_negative_int, help="query rounds (default: the scale's)")
    parser.add_argument("--source", choices=SOURCES, default="auto")
    parser.add_argument("--data-root", help="folder holding the archives (default $ALKIT_DATA or ../shared/data)")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--weights", help="checkpoint file of the backbone (the paper's SimCLR / MoCo v2 weights)")
    parser.add_argument("--cache-dir", help="feature cache (default ~/.cache/alkit)")
    parser.add_argument("--no-extract", action="store_true",
                        help="fail instead of extracting features that are not cached yet")
    parser.add_argument("--show", action="store_true", help="print the configuration and exit")
    args = parser.parse_args(argv)
    try:
        if "all" in args.dataset and len(args.dataset) > 1:
            raise UsageError("--dataset: 'all' already means every data set of the scale; give it alone")
        datasets = list(SCALES[args.scale]) if args.dataset == ["all"] else args.dataset
        twice = [d for d in dict.fromkeys(datasets) if datasets.count(d) > 1]
        if twice:
            raise UsageError(f"--dataset: {twice[0]!r} is given twice; give each data set once")
        seeds = None if args.seeds is None else parse_seeds(args.seeds)
        strategies = None if args.strategies is None else parse_strategies(args.strategies)
        overrides = dict(seeds=seeds, strategies=strategies, rounds=args.rounds)
        configs = {}
        for dataset in datasets:   # every data set checked before the first one runs
            try:
                configs[dataset] = sweep_config(dataset, args.scale, **overrides)
            except ValueError as exc:
                raise UsageError(f"--dataset: {exc}") from None
        if args.data_root is not None and not Path(args.data_root).expanduser().exists():
            raise UsageError(f"--data-root: {args.data_root} does not exist; pass the folder holding the archives")
        if args.weights is not None and not Path(args.weights).expanduser().is_file():
            raise UsageError(f"--weights: file not found: {args.weights}")
        if not args.show:
            check_output_dir(args.out, "--out")
            if args.cache_dir is not None:
                check_output_dir(args.cache_dir, "--cache-dir")
        for dataset in datasets:
            config = configs[dataset]
            print(f"[{dataset} @ {args.scale}] {json.dumps(config.as_dict(), default=str)}", flush=True)
            if args.show:
                continue
            started = time.perf_counter()
            frame = run_configured_sweep(dataset, args.scale, args.out, source=args.source,
                                         data_root=args.data_root, backbone=args.backbone,
                                         cache_dir=args.cache_dir, extract=not args.no_extract,
                                         weights=args.weights, **overrides)
            print(f"[{dataset}] {frame[['strategy', 'seed']].drop_duplicates().shape[0]} runs, "
                  f"{time.perf_counter() - started:.0f} s -> {Path(args.out) / dataset}", flush=True)
    except (ValueError, OSError) as exc:
        print(f"{EXPERIMENT_PROG}: error: {_experiment_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{EXPERIMENT_PROG}: interrupted; finished runs are saved: run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


def _pool_schedule_checks(train_labels: np.ndarray, num_classes: int, args: argparse.Namespace,
                          seeds: list[int]) -> None:
    """Refuse, before any compute, a schedule the pool cannot serve: too few points for the
    initial set and the rounds, or a seed whose random initial set holds one class only."""
    from alkit.cli import UsageError
    from alkit.loop import first_round_split

    counts = np.bincount(train_labels, minlength=num_classes)
    n_val = int(np.minimum(args.val_per_class, counts // 2).sum())
    n_out = int(train_labels.size) - n_val
    val_note = f" ({n_val} held out by --val-per-class {args.val_per_class})" if n_val else ""
    if args.initial > n_out:
        raise UsageError(f"--initial: {args.initial} initial points, but the pool has only {n_out} outside "
                         f"validation{val_note}; lower --initial")
    need = args.initial + args.rounds * args.budget
    if need > n_out:
        raise UsageError(f"--budget: --initial {args.initial} + --rounds {args.rounds} × --budget {args.budget} = "
                         f"{need} points, but the pool has only {n_out} outside validation{val_note}: the last "
                         "rounds could not use their budget; lower --budget or --rounds")
    for seed in seeds:
        _, initial = first_round_split(train_labels, num_classes, args.val_per_class, args.initial, seed)
        present = np.unique(train_labels[initial])
        if present.size < 2:
            raise UsageError(f"--initial: the random initial set of seed {seed} ({args.initial} points) holds class "
                             f"{int(present[0])} only, and a head cannot be trained on one class; raise --initial")


def run_from_arrays(args: argparse.Namespace) -> int:
    """``python -m alkit run``: check everything, load arrays, run the sweep, write the CSV of all rows.

    Every check (lists, output path, arrays, classes, schedule) comes before the compute, so bad
    input never costs a sweep."""
    from alkit.cli import UsageError, _load_array, parse_seeds, parse_strategies, probe_config
    from alkit.io import check_output_file
    from alkit.pool import check_features

    strategies = parse_strategies(args.strategies)
    seeds = parse_seeds(args.seeds)
    probe = probe_config(args)
    check_output_file(args.out, "--out")
    if (args.test_features is None) != (args.test_labels is None):
        raise UsageError("--test-features and --test-labels must be given together")
    if args.test_features is None and not 0 < args.test_fraction < 1:
        raise UsageError(f"--test-fraction: must lie in (0, 1), got {args.test_fraction}")
    x = _load_array(args.features, "--features")
    if x.ndim != 2:
        raise UsageError(f"--features: must be a 2-D (N, D) array, got shape {x.shape}")
    check_features(x, "--features")
    y = np.asarray(_load_array(args.labels, "--labels"))
    if y.shape != (x.shape[0],):
        raise UsageError(f"--labels: must hold one label per row of --features ({x.shape[0]}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise UsageError(f"--labels: must hold integer classes, got dtype {y.dtype}")
    if (y == -1).any():
        raise UsageError(f"--labels: {int((y == -1).sum())} points are -1 (unlabelled), but `run` needs the true "
                         "class of every pool point: it simulates labelling by revealing them when queried; for a "
                         "partly labelled pool choose the next batch with `python -m alkit select`")
    if y.min() < 0:
        raise UsageError(f"--labels: classes must be ≥ 0, found {y.min()}")
    num_classes = args.num_classes or int(y.max()) + 1
    if y.max() >= num_classes:
        raise UsageError(f"--num-classes: {num_classes} is too small: --labels holds class {y.max()}; drop "
                         "--num-classes or raise it")
    if args.test_features is None:
        order = np.random.default_rng(12345).permutation(x.shape[0])
        n_test = int(round(args.test_fraction * x.shape[0]))
        if not 0 < n_test < x.shape[0]:
            raise UsageError(f"--test-fraction: {args.test_fraction} of {x.shape[0]} points leaves "
                             f"{n_test} for testing and {x.shape[0] - n_test} for the pool; both need some")
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        tx, ty, x, y = x[test], y[test], x[train], y[train]
        where = "the pool (after holding out --test-fraction)"
    else:
        tx = _load_array(args.test_features, "--test-features")
        if tx.ndim != 2 or tx.shape[1] != x.shape[1]:
            raise UsageError(f"--test-features: must be (M, {x.shape[1]}) like --features, got shape {tx.shape}")
        check_features(tx, "--test-features")
        ty = np.asarray(_load_array(args.test_labels, "--test-labels"))
        if ty.shape != (tx.shape[0],) or not np.issubdtype(ty.dtype, np.integer):
            raise UsageError(f"--test-labels: must hold one integer class per row of --test-features "
                             f"({tx.shape[0]}), got {ty.dtype} {ty.shape}")
        if ty.min() < 0 or ty.max() >= num_classes:
            raise UsageError(f"--test-labels: classes must lie in [0, {num_classes}), found [{ty.min()}, {ty.max()}]"
                             + (" (-1 is not a class: every test point needs its label)" if ty.min() == -1 else ""))
        where = "--labels"
    present = np.unique(y)
    if present.size < 2:
        raise UsageError(f"--labels: every point of {where} has class {int(present[0])}; active learning needs two "
                         "classes or more")
    missing = np.setdiff1d(np.arange(num_classes), present)
    if missing.size and not args.allow_missing_classes:
        shown = ", ".join(map(str, missing[:5])) + (", …" if missing.size > 5 else "")
        raise UsageError(f"--num-classes: {missing.size} of the {num_classes} classes have no point in {where}: "
                         f"class {shown}; they would enter the metrics as classes never predicted right. Give "
                         "--num-classes the classes the data has, or pass --allow-missing-classes if the pool "
                         "truly lacks them")
    _pool_schedule_checks(y, num_classes, args, seeds)

    # Every finished (strategy, seed) run is kept beside --out, so the same command run again (after an
    # interruption, or with more seeds) resumes: runs with the same settings and data are loaded.
    runs_dir = Path(args.out).with_name(Path(args.out).name + ".runs")
    data_meta = {"train_fingerprint": _fingerprint(x, y), "test_fingerprint": _fingerprint(tx, ty),
                 "num_classes": num_classes}
    frame = run_sweep(x, y, tx, ty, num_classes, strategies, seeds, initial_size=args.initial,
                      round_budget=args.budget, rounds=args.rounds, val_per_class=args.val_per_class,
                      probe=probe, dataset=Path(args.features).stem, progress=not getattr(args, "quiet", False),
                      out_dir=runs_dir, data_meta=data_meta)
    try:
        atomic_write(args.out, lambda tmp: frame.to_csv(tmp, index=False))
    except OSError as exc:   # checked before the sweep, yet the disk may fill: keep the rows somewhere
        import tempfile

        fd, rescue = tempfile.mkstemp(prefix="alkit-run-", suffix=".csv")
        os.close(fd)
        frame.to_csv(rescue, index=False)
        raise UsageError(f"--out: cannot write {args.out} ({exc.strerror or exc}); the {len(frame)} rows were "
                         f"saved to {rescue} instead") from None
    print(f"wrote {len(frame)} rows -> {args.out} (each run kept in {runs_dir}/: the same command resumes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
