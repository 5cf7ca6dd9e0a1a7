"""A synthetic pool of ImageNet's shape, written as a float16 memory map in bounded memory.

``make_imagenet_pool()`` builds N = 1,281,167 points × D = 2048 features × C = 1000 classes
(ImageNet-1k's train split and a MoCo v2 ResNet-50's feature width), with class sizes spread as
in ImageNet-1k: most classes at 1,300 images and a seeded tail down to 732.  Features are
written chunk by chunk into ``features.npy`` (float16, 5.2 GB at full size), so the memory used
does not grow with N; a 50-per-class test split comes with it.

Structure, so that strategies behave differently (all in a ``latent_dim``-dimensional class
space embedded in D dimensions by a random orthonormal map, plus isotropic noise in all D):

* classes come in superclasses (about ten classes each, like ImageNet's dog breeds); the
  spread of class means inside a superclass varies (log-uniform), so some groups of classes are
  very confusable and others are easy — uncertainty sampling concentrates on the former;
* each class has its own within-class spread;
* a share of points (``ambiguous_fraction``) lies between its class mean and the nearest other
  class mean, so that there is real mass near the decision boundaries.

Everything is seeded: each chunk draws from its own ``SeedSequence([seed, split, chunk])``,
so an interrupted generation resumes where it stopped and gives identical bytes, and a
finished pool with the same parameters is never generated twice.

Command line: ``python -m alkit imagenet-pool [--out DIR] [--n-total N --num-classes C --dim D]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from alkit.io import default_cache_dir, save_npy, write_json

#: ImageNet-1k (ILSVRC-2012) training split: 1,281,167 images in 1000 classes of 732 to 1,300.
IMAGENET_TRAIN_SIZE = 1_281_167
IMAGENET_CLASSES = 1000
IMAGENET_MAX_PER_CLASS = 1300
IMAGENET_MIN_PER_CLASS = 732
#: Width of MoCo v2 ResNet-50 features (the paper's frozen backbone).
IMAGENET_FEATURE_DIM = 2048
#: Bump when the generator's output changes for the same parameters.
GENERATOR_VERSION = 1
#: Rows generated per chunk; part of the output's definition (each chunk has its own seed).
CHUNK_ROWS = 16_384

_SPLIT_TRAIN, _SPLIT_TEST, _SPLIT_STRUCTURE, _SPLIT_ORDER = 0, 1, 2, 3


def pools_dir() -> Path:
    """Where the pools are kept: ``<cache>/imagenet_like`` (:func:`alkit.io.default_cache_dir`)."""
    return default_cache_dir() / "imagenet_like"


def imagenet_class_sizes(
    n_total: int = IMAGENET_TRAIN_SIZE,
    num_classes: int = IMAGENET_CLASSES,
    seed: int = 0,
    tail_fraction: float = 0.1,
) -> np.ndarray:
    """Per-class sizes summing exactly to ``n_total``, shaped like ImageNet-1k's.

    At full size: most classes hold 1,300 points and a seeded tail of about ``tail_fraction``
    of the classes holds fewer, the smallest exactly 732 (sum 1,281,167).  For other sizes the
    maximum and minimum scale with the mean class size (n_total / C relative to ImageNet's):
    max = round(1300·s), min = round(732·s); the tail grows if the deficit needs more classes.
    """
    if num_classes < 1 or n_total < num_classes:
        raise ValueError(f"need n_total ≥ num_classes ≥ 1, got n_total={n_total}, num_classes={num_classes}")
    if not 0 < tail_fraction <= 1:
        raise ValueError(f"tail_fraction must lie in (0, 1], got {tail_fraction}")
    scale = (n_total / num_classes) / (IMAGENET_TRAIN_SIZE / IMAGENET_CLASSES)
    hi = max(int(round(IMAGENET_MAX_PER_CLASS * scale)), -(-n_total // num_classes))
    lo = max(1, min(hi, int(round(IMAGENET_MIN_PER_CLASS * scale))))
    deficit = hi * num_classes - n_total  # points the tail classes are missing below `hi`
    sizes = np.full(num_classes, hi, np.int64)
    if deficit == 0:
        return sizes
    span = hi - lo  # the most one tail class can miss
    if span == 0:
        lo, span = max(1, hi - 1), hi - max(1, hi - 1)
    tail = min(num_classes, max(1, int(round(tail_fraction * num_classes)), -(-deficit // span)))
    tail = min(tail, deficit)  # each tail class misses at least one point
    if tail * span < deficit:
        raise ValueError(f"cannot spread {n_total} points over {num_classes} classes of {lo}..{hi}")
    rng = np.random.default_rng([seed, _SPLIT_STRUCTURE, 7])
    missing = np.ones(tail, np.int64)
    if tail > 1 and deficit >= span + tail - 1:
        missing[0] = span  # the smallest class sits exactly at `lo`
    rest = deficit - missing.sum()
    free = span - missing  # room left in each tail class
    while rest > 0:  # proportional to random weights, capped by the room left
        weights = rng.gamma(2.0, size=tail) * (free > 0)
        share = np.minimum(np.floor(rest * weights / weights.sum()).astype(np.int64), free)
        if share.sum() == 0:
            share[np.flatnonzero(free > 0)[: rest]] = 1
        missing += share
        free -= share
        rest -= int(share.sum())
    classes = rng.permutation(num_classes)[:tail]
    sizes[classes] -= missing
    return sizes


@dataclass(frozen=True)
class ImageNetPoolSpec:
    """Every parameter that defines the generated bytes (its hash names the folder)."""

    n_total: int = IMAGENET_TRAIN_SIZE
    num_classes: int = IMAGENET_CLASSES
    dim: int = IMAGENET_FEATURE_DIM
    n_test_per_class: int = 50
    seed: int = 0
    tail_fraction: float = 0.1
    latent_dim: int = 64          # dimension of the class-mean structure
    classes_per_super: int = 10   # superclass size (confusable groups)
    super_spread: float = 4.0     # std of superclass centres (latent units)
    class_spread: tuple = (0.6, 2.0)  # log-uniform range of per-superclass spread of class means
    within_spread: tuple = (0.8, 1.25)  # log-uniform range of per-class within-class std (latent)
    ambiguous_fraction: float = 0.1
    ambiguous_mix: tuple = (0.25, 0.5)  # how far an ambiguous point moves towards the other mean
    latent_gain: float = 0.25     # scale of the latent part in feature space
    noise_std: float = 0.5        # isotropic noise in all D feature dimensions
    generator_version: int = GENERATOR_VERSION
    chunk_rows: int = CHUNK_ROWS

    def __post_init__(self) -> None:
        for name in ("n_total", "num_classes", "dim", "latent_dim", "classes_per_super", "chunk_rows"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.n_test_per_class < 0:
            raise ValueError(f"n_test_per_class must be ≥ 0, got {self.n_test_per_class}")
        if not 0 <= self.ambiguous_fraction <= 1:
            raise ValueError(f"ambiguous_fraction must lie in [0, 1], got {self.ambiguous_fraction}")

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def folder_name(self) -> str:
        return f"n{self.n_total}_c{self.num_classes}_d{self.dim}_s{self.seed}_{self.key()}"


@dataclass
class ImageNetPool:
    """A generated pool: features are a read-only float16 memory map."""

    features: np.ndarray        # (N, D) float16 memmap
    labels: np.ndarray          # (N,) int64
    test_features: np.ndarray   # (C·n_test, D) float16 memmap
    test_labels: np.ndarray     # (C·n_test,) int64
    ambiguous_partner: np.ndarray  # (N,) int16: the class an ambiguous point leans towards, else -1
    num_classes: int
    meta: dict
    path: Path


class _Structure:
    """Class means and spreads in latent space, and the map into feature space."""

    def __init__(self, spec: ImageNetPoolSpec) -> None:
        rng = np.random.default_rng([spec.seed, _SPLIT_STRUCTURE, 0])
        c, k = spec.num_classes, spec.latent_dim
        n_super = max(1, -(-c // spec.classes_per_super))
        super_of = rng.permutation(np.arange(c) % n_super)
        centres = rng.normal(0.0, spec.super_spread, size=(n_super, k))
        log_lo, log_hi = np.log(spec.class_spread)
        spread = np.exp(rng.uniform(log_lo, log_hi, size=n_super))
        self.means = centres[super_of] + spread[super_of, None] * rng.normal(size=(c, k))
        log_lo, log_hi = np.log(spec.within_spread)
        self.within = np.exp(rng.uniform(log_lo, log_hi, size=c))
        # The ambiguous partner of each class: its nearest other class mean.
        sq = (self.means ** 2).sum(1)
        dist2 = sq[:, None] + sq[None, :] - 2 * self.means @ self.means.T
        np.fill_diagonal(dist2, np.inf)
        self.partner = dist2.argmin(1) if c > 1 else np.zeros(1, np.int64)
        basis, _ = np.linalg.qr(rng.normal(size=(spec.dim, min(k, spec.dim))))
        self.embed = (spec.latent_gain * basis.T).astype(np.float32)  # (k, D)
        if k > spec.dim:
            extra = rng.normal(size=(k - spec.dim, spec.dim)) / np.sqrt(spec.dim)
            self.embed = np.vstack([self.embed, spec.latent_gain * extra.astype(np.float32)])
        self.super_of = super_of
        self.super_spread = spread
        self.spec = spec

    def sample(self, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Float32 features of points with ``labels`` and their ambiguous partner (or -1)."""
        spec = self.spec
        n = labels.size
        latent = self.means[labels] + self.within[labels, None] * rng.normal(size=(n, spec.latent_dim))
        ambiguous = rng.random(n) < spec.ambiguous_fraction
        partner = np.where(ambiguous, self.partner[labels], -1).astype(np.int16)
        if spec.num_classes > 1 and ambiguous.any():
            t = rng.uniform(*spec.ambiguous_mix, size=int(ambiguous.sum()))[:, None]
            rows = np.flatnonzero(ambiguous)
            latent[rows] += t * (self.means[partner[rows]] - self.means[labels[rows]])
        out = rng.standard_normal(size=(n, spec.dim), dtype=np.float32)
        out *= spec.noise_std
        out += latent.astype(np.float32) @ self.embed
        return out, partner


def _write_split(path: Path, labels: np.ndarray, structure: _Structure, split: int, spec: ImageNetPoolSpec,
                 progress: bool, desc: str) -> np.ndarray:
    """Write the features of ``labels`` into ``path`` (float16 .npy), resuming from a partial file."""
    n = labels.size
    n_chunks = -(-n // spec.chunk_rows)
    partial = path.with_name(path.name + ".partial")
    state_file = path.with_name(path.name + ".progress.json")
    done = 0
    if partial.exists() and state_file.exists():
        try:
            state = json.loads(state_file.read_text())
            if state.get("key") == spec.key() and state.get("split") == split:
                done = int(state["chunks_done"])
        except (OSError, ValueError, KeyError):
            done = 0
    if done:
        out = np.load(partial, mmap_mode="r+")
        if out.shape != (n, spec.dim) or out.dtype != np.float16:
            done = 0
    if not done:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(n, spec.dim))
    partners = np.full(n, -1, np.int16)
    bar = tqdm(total=n, desc=desc, unit="row", unit_scale=True, disable=not progress, initial=0)
    for chunk in range(n_chunks):
        lo, hi = chunk * spec.chunk_rows, min(n, (chunk + 1) * spec.chunk_rows)
        rng = np.random.default_rng([spec.seed, split, chunk])
        if chunk < done:  # already on disk; redraw only the cheap partner flags
            _, partners[lo:hi] = _partners_only(structure, labels[lo:hi], rng)
        else:
            feats, partners[lo:hi] = structure.sample(labels[lo:hi], rng)
            out[lo:hi] = feats
            if (chunk + 1) % 8 == 0 or chunk + 1 == n_chunks:
                out.flush()
                state_file.write_text(json.dumps({"key": spec.key(), "split": split, "chunks_done": chunk + 1}))
        bar.update(hi - lo)
    bar.close()
    out.flush()
    del out
    os.replace(partial, path)
    state_file.unlink(missing_ok=True)
    return partners


def _partners_only(structure: _Structure, labels: np.ndarray, rng: np.random.Generator) -> tuple[None, np.ndarray]:
    """The partner flags of a chunk, consuming the random stream exactly as ``sample`` does."""
    spec = structure.spec
    rng.normal(size=(labels.size, spec.latent_dim))
    ambiguous = rng.random(labels.size) < spec.ambiguous_fraction
    return None, np.where(ambiguous, structure.partner[labels], -1).astype(np.int16)


def make_imagenet_pool(
    out_dir: str | Path | None = None,
    spec: ImageNetPoolSpec | None = None,
    *,
    progress: bool = True,
    **params,
) -> ImageNetPool:
    """Generate (or reuse) the pool described by ``spec`` (or by keyword ``params``).

    Files go to ``out_dir`` (default ``pools_dir() / spec.folder_name()``):
    ``features.npy`` (N×D float16), ``labels.npy``, ``test_features.npy``, ``test_labels.npy``,
    ``ambiguous_partner.npy`` and, written last, ``meta.json``.  A folder whose ``meta.json``
    has the same spec is returned as is; an interrupted run resumes chunk by chunk.
    """
    if spec is None:
        spec = ImageNetPoolSpec(**params)
    elif params:
        raise ValueError("give either spec or keyword parameters, not both")
    out = Path(out_dir) if out_dir is not None else pools_dir() / spec.folder_name()
    if _finished(out, spec):
        return load_imagenet_pool(out)
    started = time.perf_counter()
    sizes = imagenet_class_sizes(spec.n_total, spec.num_classes, spec.seed, spec.tail_fraction)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    labels = np.random.default_rng([spec.seed, _SPLIT_ORDER, 0]).permutation(
        np.repeat(np.arange(spec.num_classes), sizes)).astype(np.int64)
    test_labels = np.random.default_rng([spec.seed, _SPLIT_ORDER, 1]).permutation(
        np.repeat(np.arange(spec.num_classes), spec.n_test_per_class)).astype(np.int64)
    structure = _Structure(spec)
    partners = _write_split(out / "features.npy", labels, structure, _SPLIT_TRAIN, spec, progress, "train features")
    _write_split(out / "test_features.npy", test_labels, structure, _SPLIT_TEST, spec, progress, "test features")
    save_npy(out / "labels.npy", labels)
    save_npy(out / "test_labels.npy", test_labels)
    save_npy(out / "ambiguous_partner.npy", partners)
    meta = {
        "spec": spec.as_dict(), "key": spec.key(), "class_sizes": sizes.tolist(),
        "n_total": int(sizes.sum()), "ambiguous_points": int((partners >= 0).sum()),
        "superclass_of_class": structure.super_of.tolist(),
        "feature_bytes": int(spec.n_total) * int(spec.dim) * 2,
        "generation_seconds": round(time.perf_counter() - started, 1),
        "description": "synthetic pool of ImageNet-1k's shape (alkit.data.imagenet_pool); not ImageNet data",
    }
    write_json(out / "meta.json", meta)  # last: marks the folder complete
    return load_imagenet_pool(out)


def _finished(out: Path, spec: ImageNetPoolSpec) -> bool:
    meta = out / "meta.json"
    needed = ("features.npy", "labels.npy", "test_features.npy", "test_labels.npy", "ambiguous_partner.npy")
    if not meta.exists() or not all((out / f).exists() for f in needed):
        return False
    try:
        return json.loads(meta.read_text()).get("key") == spec.key()
    except (OSError, ValueError):
        return False


def load_imagenet_pool(path: str | Path) -> ImageNetPool:
    """Open a generated pool (features as read-only memory maps)."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.exists():
        raise ValueError(f"path {path} holds no finished pool (meta.json missing): generate it first")
    meta = json.loads(meta_file.read_text())
    return ImageNetPool(
        features=np.load(path / "features.npy", mmap_mode="r"),
        labels=np.load(path / "labels.npy"),
        test_features=np.load(path / "test_features.npy", mmap_mode="r"),
        test_labels=np.load(path / "test_labels.npy"),
        ambiguous_partner=np.load(path / "ambiguous_partner.npy"),
        num_classes=int(meta["spec"]["num_classes"]),
        meta=meta,
        path=path,
    )


def remove_pool(path: str | Path) -> None:
    """Delete a generated pool folder (it is a cache: it can always be regenerated)."""
    shutil.rmtree(path, ignore_errors=True)
