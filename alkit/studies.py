"""The study's data sets and scales, and loading a data set's pool and test set.

Data sets and scales are plain dictionaries (:data:`DATASETS`, :data:`SCALES`) so that every
setting of every committed result is in one place: ``sweep_config("cifar10", "cpu")`` is the
schedule the committed CIFAR-10 runs used, ``load_study_data("cifar10", "cpu")`` their pool and
test set.  ``smoke`` runs in seconds on slices of the real data when ``../shared/data`` (or
``$ALKIT_DATA``) holds it, and on clearly labelled synthetic stand-ins when it does not (CI);
``cpu`` is the offline reproduction on EfficientNet-Lite0 features; ``paper`` is the authors'
schedule for users with a GPU, ImageNet and the paper's self-supervised checkpoints.

Running a configured sweep and storing its runs: :mod:`alkit.runs`.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from alkit.backbones import load_backbone
from alkit.datasets import LongTailSpec, load_dataset, long_tailed_indices, stratified_limit_indices
from alkit.features import FeaturesNotCached, cache_entry_dir, default_preprocessing, get_features, load_feature_set
from alkit.imagenet_pool import ImageNetPoolSpec, make_imagenet_pool
from alkit.probe import ProbeConfig
from alkit.strategies.registry import strategy_names
from alkit.synthetic import gaussian_mixture

SCALE_NAMES = ("smoke", "cpu", "paper")


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


def data_root_for(dataset: str, data_root: str | Path | None = None) -> Path | None:
    """Where ``dataset``'s images are: ``data_root`` (default :func:`default_data_root`) plus the
    data set's archive name when that archive is there (``../shared/data/cifar10-jpeg.tar.gz``),
    else ``data_root`` itself; None when no root is known.  It may not exist: callers check."""
    spec = data_spec(dataset)
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    if spec.archive is not None and root is not None and (root / spec.archive).exists():
        root = root / spec.archive
    return root


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
    strategies: tuple[str, ...] | None = None   # None: every registered strategy but the controlled variants
    probe: ProbeConfig = ProbeConfig()
    train_limit: int | None = None   # class-stratified slice of the real training split (smoke)
    test_limit: int | None = None
    pool_spec: dict | None = None    # imagenet-synthetic: alkit.imagenet_pool.ImageNetPoolSpec fields
    note: str = ""

    def strategy_list(self) -> list[str]:
        return list(self.strategies) if self.strategies is not None else strategy_names(variants=False)

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


# The order of each scale's sweep
#: Data sets of each scale's sweep, in priority order (what runs first when time is short).
SWEEP_DATASETS = {"smoke": ("cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"),
                  "cpu": ("cifar10", "tiny-imagenet", "cifar10-lt", "imagenet-synthetic"),
                  "paper": ("imagenet",)}
#: The cpu sweep in priority order, so that a sweep cut short holds the most useful runs: the
#: strategies with one chunked pass per round (and the baselines) on the toy and the many-class
#: data, then on the long tail (3-37 s per run); then the paper's two diversity
#: methods, BADGE and coreset, on the whole pool and as the authors ran them (partitioned); then the
#: later methods — first the two the claims judge (margin-clustering, class balancing), then the
#: two only reported (TypiClust, ProbCover); the synthetic ImageNet-shaped pool.  Every phase runs
#: seed by seed and skips finished runs.  Per-run times: results/benchmarks/rerun_comparison.md;
#: :func:`alkit.launch.run_phases` runs them.
CPU_TIER1 = ("random", "balanced_random", "confidence", "margin", "entropy", "mase", "base")
CPU_PAPER_DIVERSITY = ("coreset", "badge", "partitioned_coreset", "partitioned_badge")
CPU_LATER_JUDGED = ("margin_clustering", "balancing")
CPU_LATER_REPORTED = ("typiclust", "probcover")
#: On Tiny-ImageNet a run costs minutes (200-class probe on up to 22 k points): the strategies the
#: claims turn on (random, BASE, margin, confidence) get all their seeds before the others.
TINY_FIRST = ("random", "base", "margin", "confidence")
CPU_PHASES = (
    ("cifar10", CPU_TIER1),
    ("tiny-imagenet", TINY_FIRST), ("tiny-imagenet", tuple(s for s in CPU_TIER1 if s not in TINY_FIRST)),
    ("cifar10-lt", CPU_TIER1),
    # Cheapest runs first (one-thread worker, idle machine; results/benchmarks/rerun_comparison.md):
    # lazy BADGE and the partitioned variants take under a minute per CIFAR-10 run; BADGE 1 min per
    # Tiny-ImageNet run; the long-tailed pool 10-40 s; full-pool coreset 40 s per CIFAR-10 run; the
    # partitioned variants on Tiny-ImageNet 1.2-1.6 min; full-pool coreset on Tiny-ImageNet (90 k
    # candidates, up to 20 k centres) 1.8 min last.
    ("cifar10", ("badge", "partitioned_coreset", "partitioned_badge")), ("tiny-imagenet", ("badge",)),
    ("cifar10-lt", CPU_PAPER_DIVERSITY), ("cifar10", ("coreset",)),
    ("tiny-imagenet", ("partitioned_coreset", "partitioned_badge")), ("tiny-imagenet", ("coreset",)),
    ("cifar10", CPU_LATER_JUDGED), ("tiny-imagenet", CPU_LATER_JUDGED), ("cifar10-lt", CPU_LATER_JUDGED),
    ("cifar10", CPU_LATER_REPORTED), ("tiny-imagenet", CPU_LATER_REPORTED), ("cifar10-lt", CPU_LATER_REPORTED),
    ("imagenet-synthetic", None),
    # Five more seeds on Tiny-ImageNet for the score-based strategies and the baselines, whose
    # differences from random there are fractions of a point.
    ("tiny-imagenet", CPU_TIER1, (5, 6, 7, 8, 9)),
)


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

    A ``limit`` slice is class-stratified (the rows :func:`alkit.datasets.load_dataset` would
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
    cached by :mod:`alkit.features`); ``"synthetic"``: the labelled stand-in used in CI;
    ``"auto"``: real features when the data set's archive is under ``data_root`` (default
    :func:`default_data_root`), else — at smoke scale only — the stand-in.  ``extract=False``
    refuses to extract features that are not cached yet (:class:`alkit.features.FeaturesNotCached`)
    instead of extracting them.
    """
    spec = data_spec(dataset)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    config = config or sweep_config(dataset, scale)
    if spec.loader == "imagenet-synthetic":
        return _imagenet_synthetic(spec, config)
    root = data_root_for(dataset, data_root)
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
