"""The study's data sets and scales: a catalog that loads nothing.

Data sets and scales are plain dictionaries (:data:`DATASETS`, :data:`SCALES`) so that every
setting of every committed result is in one place: ``sweep_config("cifar10", "cpu")`` is the
schedule the committed CIFAR-10 runs used, and :func:`alkit.experiments.loading.load_study_data`
loads their pool and test set.  ``smoke`` runs in seconds on slices of the real data when ``../shared/data`` (or
``$ALKIT_DATA``) holds it, and on clearly labelled synthetic stand-ins when it does not (CI);
``cpu`` is the offline reproduction on EfficientNet-Lite0 features; ``paper`` is the authors'
schedule for users with a GPU, ImageNet and the paper's self-supervised checkpoints.

Running a configured sweep and storing its runs: :mod:`alkit.experiments.runs`.  This module imports
no loader, so reports and tables can read a data set's title without torch or the feature cache.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from alkit.checks import ParameterError
from alkit.probe import ProbeConfig
from alkit.strategies.registry import strategy_names

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
    loader: str               # name for alkit.data.datasets / alkit.data.features (or "imagenet-synthetic")
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
        caveat="SYNTHETIC pool of ImageNet's shape (alkit.data.imagenet_pool), not ImageNet data"),
}


def data_spec(name: str) -> DataSpec:
    if name not in DATASETS:
        raise ParameterError(f"dataset must be one of {', '.join(DATASETS)}, got {name!r}", param="dataset")
    return DATASETS[name]


def default_data_root() -> Path | None:
    """``$ALKIT_DATA``, else ``../shared/data`` beside the repository when it exists, else None."""
    env = os.environ.get("ALKIT_DATA")
    if env:
        return Path(env).expanduser()
    beside_repo = Path(__file__).resolve().parents[3] / "shared" / "data"
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
    pool_spec: dict | None = None    # imagenet-synthetic: alkit.data.imagenet_pool.ImageNetPoolSpec fields
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
        raise ParameterError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}", param="scale")
    data_spec(dataset)
    if dataset not in SCALES[scale]:
        raise ParameterError(f"dataset {dataset!r} has no {scale}-scale configuration; choose one of "
                             f"{', '.join(SCALES[scale])}", param="dataset")
    config = SCALES[scale][dataset]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key in ("seeds", "strategies"):
        if key in overrides:
            overrides[key] = tuple(overrides[key])
    unknown = set(overrides) - set(SweepConfig.__dataclass_fields__)
    if unknown:
        raise ParameterError(f"unknown sweep setting(s): {', '.join(sorted(unknown))}", param="overrides")
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
#: :func:`alkit.experiments.launch.run_phases` runs them.
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
