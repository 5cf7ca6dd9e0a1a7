"""Image data sets behind one interface: lazily loaded images, int64 labels, class names.

Every loader returns an :class:`ImageDataset`, whatever the source: an ImageFolder directory, an
archive (extracted once into the cache), torchvision's CIFAR-10 pickles, the Tiny-ImageNet-200
layout or the ImageNet-LT split files.  Item order is deterministic (classes sorted, files sorted
within a class) so that row ``i`` of a feature matrix always means the same image.

Subsets (long-tailed profiles, ``limit`` slices) keep ``source_indices``: the rows of the full split
they were cut from, so features of a subset can be checked against those of the full split.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from alkit.checks import MissingPathError, ParameterError
from alkit.io import (CACHE_FIX, DiskFullError, check_free_space, current_umask, default_cache_dir,
                      disk_full_while_writing, is_disk_full, process_alive, write_text)

log = logging.getLogger(__name__)

#: Names accepted by :func:`load_dataset` (and ``python -m alkit features --dataset``).
DATASET_NAMES = ("cifar10", "cifar10-lt", "tiny-imagenet", "tiny-imagenet-lt", "imagenet", "imagenet-lt",
                 "imagefolder", "images")
#: Images whose longer side is at most this many pixels count as small (CIFAR-, Tiny-ImageNet-like):
#: they are stretched to the small-image input size instead of centre-cropped at the backbone's.
SMALL_IMAGE_MAX_SIDE = 96
SPLITS = ("train", "test", "val")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
#: Seconds to wait for a download server before declaring the machine offline.
ONLINE_CHECK_TIMEOUT_S = 8.0
EXTRACTION_MARKER = ".alkit-extracted.json"


# --------------------------------------------------------------------------------------------
# The data set object
# --------------------------------------------------------------------------------------------

class UnreadableImage(ParameterError):
    """An image file of a data set that cannot be decoded (corrupt, truncated, not an image, missing):
    a fault of the data under ``root``.  One message argument, so that a DataLoader worker can hand
    it back to the main process."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="root")


def _unreadable(path: Path, cause: BaseException) -> UnreadableImage:
    reason = "the file is missing" if isinstance(cause, FileNotFoundError) else \
        " ".join(str(cause).split()) or type(cause).__name__
    return UnreadableImage(f"cannot read image {path}: {reason}; replace or remove that file and run again")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """One split of an image data set.  Images are read from disk only when asked for.

    Exactly one of ``files`` (paths relative to ``root``) or ``arrays`` ((N, H, W, 3) uint8 in
    memory, e.g. torchvision's CIFAR-10 pickles) holds the images.
    """

    name: str                       # "cifar10", "tiny-imagenet", "imagenet", "imagenet-lt", "imagefolder", "images"
    split: str                      # "train" or "test" (the labelled evaluation split)
    labels: np.ndarray              # (N,) int64 in [0, C)
    class_names: tuple[str, ...]    # human-readable, index = label
    root: Path                      # directory the relative file paths start from
    files: tuple[str, ...] | None = None
    arrays: np.ndarray | None = None
    class_ids: tuple[str, ...] = ()  # folder names / WordNet ids; defaults to class_names
    native_size: int | None = None   # 32 (CIFAR), 64 (Tiny-ImageNet); None for photos of any size
    source_indices: np.ndarray | None = None  # rows of the full split these items are
    subset: dict = field(default_factory=dict)  # how it was cut from the full split ({} = full)
    source: dict = field(default_factory=dict)  # provenance: archive, sha256, root (not in the cache key)

    def __post_init__(self) -> None:
        if (self.files is None) == (self.arrays is None):
            raise ValueError("ImageDataset needs exactly one of files= or arrays=")
        n = len(self.files) if self.files is not None else int(self.arrays.shape[0])
        labels = np.asarray(self.labels)
        if labels.shape != (n,) or labels.dtype != np.int64:
            raise ValueError(f"labels must be int64 of shape ({n},), got {labels.dtype} {labels.shape}")
        if not self.class_names:   # unlabelled images (name "images"): every label is -1
            if n and (labels != -1).any():
                raise ValueError("labels must all be -1 for a data set without classes")
        elif n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}) (one per class name)")
        if not self.class_ids:
            object.__setattr__(self, "class_ids", tuple(self.class_names))
        if self.source_indices is None:
            object.__setattr__(self, "source_indices", np.arange(n, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def display_name(self) -> str:
        """``cifar10-lt`` for a long-tailed cut of ``cifar10``, else the name."""
        return f"{self.name}-lt" if "lt" in self.subset else self.name

    def load_image(self, index: int) -> Image.Image:
        """The image at ``index`` as an RGB PIL image."""
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index]).convert("RGB")
        path = self.root / self.files[index]
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            # PIL says "cannot identify image file" (not an image), "image file is truncated", … without
            # the file when it is loaded lazily: name it, so that it can be replaced or removed.
            raise _unreadable(path, exc) from None

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        return self.load_image(index), int(self.labels[index])

    @property
    def labelled(self) -> bool:
        """False for a folder of unlabelled images (no classes, every label -1)."""
        return bool(self.class_names)

    def class_counts(self) -> np.ndarray:
        if not self.labelled:
            return np.zeros(0, dtype=np.int64)
        return np.bincount(self.labels, minlength=self.num_classes)

    def take(self, indices: np.ndarray, subset: dict) -> "ImageDataset":
        """The items at ``indices`` (kept in the given order), recording how they were chosen."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.ndim != 1 or (indices.size and (indices.min() < 0 or indices.max() >= len(self))):
            raise ValueError(f"indices must be a 1-d array of rows in [0, {len(self)})")
        return replace(
            self,
            labels=self.labels[indices],
            files=None if self.files is None else tuple(self.files[i] for i in indices),
            arrays=None if self.arrays is None else self.arrays[indices],
            source_indices=self.source_indices[indices],
            subset={**self.subset, **subset},
        )

    @cached_property
    def content_fingerprint(self) -> str:
        """sha256 over what the images are: relative path, label and the sha256 of the bytes of every
        file (or the raw pixel bytes of in-memory arrays).  Independent of where the data lives, so a
        moved copy keeps its feature cache; two folders with the same file names and sizes but other
        pixels, or a file edited in place, never share one (:func:`file_digests` hashes each file once
        and rehashes it when its size, time or inode change)."""
        digest = hashlib.sha256()
        digest.update(json.dumps(list(self.class_ids)).encode())
        if self.arrays is not None:
            digest.update(np.ascontiguousarray(self.arrays).data)
            digest.update(self.labels.tobytes())
            return digest.hexdigest()
        try:
            digests = file_digests(self.root, self.files)
        except FileNotFoundError as exc:
            raise MissingPathError(f"image {exc.filename} listed by the {self.name} {self.split} split is missing; "
                                   f"check root={self.root}", param="root") from None
        for rel, label, file_digest in zip(self.files, self.labels.tolist(), digests):
            digest.update(f"{rel}\t{label}\t{file_digest}\n".encode())
        return digest.hexdigest()

    def identity(self) -> dict:
        """Everything about the items that changes extracted features (used in cache keys)."""
        return {
            "dataset": self.name,
            "split": self.split,
            "n": len(self),
            "num_classes": self.num_classes,
            "content_sha256": self.content_fingerprint,
            "subset": self.subset,
        }


def _digest_memo_path(root: Path) -> Path:
    """Where the file digests of the folder ``root`` are remembered (one file per resolved folder)."""
    return default_cache_dir() / "file-digests" / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
                                                   + ".tsv")


def file_digests(root: str | Path, files: Sequence[str], progress: bool = True) -> list[str]:
    """sha256 of the bytes of each of ``files`` (paths relative to ``root``).

    A digest is remembered with the file's size, modification time (ns) and inode under
    ``<cache>/file-digests/`` and reused while all three are unchanged, so the bytes are read once
    (a first call on ImageNet reads its 140 GB, with a progress bar; later calls only stat the
    files); a file written in place gets a new time and is hashed again.  Raises FileNotFoundError
    (``filename`` set) for a missing file."""
    root = Path(root)
    memo_path = _digest_memo_path(root)
    memo: dict[str, tuple[str, str]] = {}
    try:
        for line in memo_path.read_text().splitlines():
            rel, signature, file_digest = line.rsplit("\t", 2)
            memo[rel] = (signature, file_digest)
    except (OSError, ValueError):
        memo = {}
    digests, fresh = [], 0
    todo = []
    for rel in files:
        try:
            st = os.stat(root / rel)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "missing image", str(root / rel)) from None
        signature = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        known = memo.get(rel)
        digests.append(known[1] if known is not None and known[0] == signature else None)
        if digests[-1] is None:
            todo.append((len(digests) - 1, rel, signature))
    bar = tqdm(todo, desc=f"hashing {len(todo):,} images of {root.name} (once; their digests key the feature "
                          "cache)", unit="img", disable=not progress or len(todo) < 5000, leave=False)
    for position, rel, signature in bar:
        file_hash = hashlib.sha256()
        with open(root / rel, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                file_hash.update(block)
        digests[position] = file_hash.hexdigest()
        memo[rel] = (signature, digests[position])
        fresh += 1
    if fresh:   # remembered for the next call; a read-only cache only costs the rehash next time
        text = "".join(f"{rel}\t{sig}\t{d}\n" for rel, (sig, d) in memo.items())
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            write_text(memo_path, text)
        except OSError:
            pass
    return digests


# --------------------------------------------------------------------------------------------
# Long-tailed profiles and class-stratified slices
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LongTailSpec:
    """A long-tailed cut of a balanced split (Cao et al. 2019, used by the paper for CIFAR-10).

    ``exp``: n_c = ⌊n_max · ρ^(c/(C−1))⌋ for class c = 0 … C−1 (the paper's imbalanced CIFAR-10:
    ρ = 0.1 gives 20,431 of the 50,000 training images).  ``step``: the first ⌊C/2⌋ classes keep
    n_max, the others ⌊n_max · ρ⌋.  ``n_max`` defaults to the smallest class size of the split, so the
    profile is exact.  Which images of a class are kept is a seeded random choice.
    """

    imbalance_ratio: float
    profile: str = "exp"
    seed: int = 0
    n_max: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < float(self.imbalance_ratio) <= 1.0:
            raise ParameterError(f"imbalance_ratio must be in (0, 1] (e.g. 0.1 or 0.01), got {self.imbalance_ratio}",
                                 param="imbalance_ratio")
        if self.profile not in ("exp", "step"):
            raise ParameterError(f"profile must be 'exp' or 'step', got {self.profile!r}", param="profile")
        if self.n_max is not None and self.n_max < 1:
            raise ParameterError(f"n_max must be a positive number of images per class, got {self.n_max}",
                                 param="n_max")

    def as_dict(self) -> dict:
        return {"imbalance_ratio": float(self.imbalance_ratio), "profile": self.profile, "seed": int(self.seed),
                "n_max": self.n_max}


def long_tailed_class_counts(num_classes: int, n_max: int, imbalance_ratio: float, profile: str = "exp") -> np.ndarray:
    """Images kept per class, class 0 the largest (the convention of Cao et al. and the paper)."""
    LongTailSpec(imbalance_ratio, profile)  # validates the arguments
    if profile == "exp":
        if num_classes == 1:
            return np.array([n_max], dtype=np.int64)
        # int() on a positive float is the floor, written exactly as the reference code does, so
        # the counts agree to the image (5000·0.1^(c/9) → 20,431 in total).
        return np.array([int(n_max * imbalance_ratio ** (c / (num_classes - 1))) for c in range(num_classes)],
                        dtype=np.int64)
    head = num_classes // 2
    return np.array([n_max] * head + [int(n_max * imbalance_ratio)] * (num_classes - head), dtype=np.int64)


def rows_per_class(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows holding ``counts[c]`` random items of every class c: the first items of one
    permutation of each class's rows, classes in order (one ``rng.permutation`` per class, drawn
    even for a count of 0, so that a class's picks do not depend on the other classes' counts)."""
    labels = np.asarray(labels, dtype=np.int64)
    kept = [rng.permutation(np.flatnonzero(labels == c))[: int(counts[c])] for c in range(len(counts))]
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.empty(0, np.int64)


def long_tailed_indices(labels: np.ndarray, num_classes: int, spec: LongTailSpec) -> np.ndarray:
    """Sorted rows of a split kept by the long-tailed profile ``spec`` (seeded per-class choice)."""
    labels = np.asarray(labels, dtype=np.int64)
    available = np.bincount(labels, minlength=num_classes)
    n_max = int(available.min()) if spec.n_max is None else int(spec.n_max)
    counts = long_tailed_class_counts(num_classes, n_max, spec.imbalance_ratio, spec.profile)
    short = np.flatnonzero(counts > available)
    if short.size:
        raise ParameterError(f"n_max={n_max} asks for {counts[short[0]]} images of class {short[0]}, which has "
                             f"{available[short[0]]}; pass a smaller n_max", param="n_max")
    return rows_per_class(labels, counts, np.random.default_rng(spec.seed))


def stratified_limit_indices(labels: np.ndarray, num_classes: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of a class-stratified slice of ``limit`` items: ⌊limit/C⌋ per class, one more
    for the first ``limit mod C`` classes, what a small class cannot give spread over the others;
    within a class the first items of a seeded permutation."""
    labels = np.asarray(labels, dtype=np.int64)
    if int(limit) < 1:
        raise ParameterError(f"limit must be a positive number of images, got {limit}", param="limit")
    available = np.bincount(labels, minlength=num_classes)
    limit = min(int(limit), int(available.sum()))
    quota = np.zeros(num_classes, dtype=np.int64)
    remaining = limit
    while remaining > 0:  # water-filling: equal shares, capped at what each class has
        open_classes = np.flatnonzero(quota < available)
        share, extra = divmod(remaining, open_classes.size)
        add = np.full(open_classes.size, share, dtype=np.int64)
        add[:extra] += 1
        add = np.minimum(add, available[open_classes] - quota[open_classes])
        quota[open_classes] += add
        remaining -= int(add.sum())
    return rows_per_class(labels, quota, np.random.default_rng(seed))


def make_long_tailed(dataset: ImageDataset, spec: LongTailSpec) -> ImageDataset:
    """The long-tailed cut of a (balanced) split."""
    rows = long_tailed_indices(dataset.labels, dataset.num_classes, spec)
    return dataset.take(rows, {"lt": spec.as_dict()})


def limit_dataset(dataset: ImageDataset, limit: int, seed: int = 0) -> ImageDataset:
    """A deterministic class-stratified slice of ``limit`` items (for quick checks); of unlabelled
    images, a seeded random slice, in their order."""
    if not dataset.labelled:
        if int(limit) < 1:
            raise ParameterError(f"limit must be a positive number of images, got {limit}", param="limit")
        rows = np.sort(np.random.default_rng(seed).permutation(len(dataset))[: int(limit)])
        return dataset.take(rows, {"limit": {"n": int(limit), "seed": int(seed)}})
    rows = stratified_limit_indices(dataset.labels, dataset.num_classes, limit, seed)
    return dataset.take(rows, {"limit": {"n": int(limit), "seed": int(seed)}})


def class_balanced_holdout(labels: np.ndarray, num_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held-out rows): ``round(fraction · n_c)`` seeded picks of every class held out
    (at least one per class with ≥ 2 items), e.g. the 10 % validation split for early stopping."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    labels = np.asarray(labels, dtype=np.int64)
    sizes = np.bincount(labels, minlength=num_classes)
    counts = np.rint(fraction * sizes).astype(np.int64)
    several = sizes >= 2
    counts[several] = np.clip(counts[several], 1, sizes[several] - 1)
    held_rows = rows_per_class(labels, counts, np.random.default_rng(seed))
    mask = np.ones(labels.size, dtype=bool)
    mask[held_rows] = False
    return np.flatnonzero(mask).astype(np.int64), held_rows


# --------------------------------------------------------------------------------------------
# Archives: extracted once into the cache, verified, reused
# --------------------------------------------------------------------------------------------

def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_file_sha256(path: Path, cache_dir: Path) -> str:
    """sha256 of a (large, read-only) file, remembered per (path, size, mtime) so that loading a
    data set does not re-hash a 150 MB archive every time."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_path = Path(cache_dir) / "datasets" / "sha256-memo.json"
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    sha = file_sha256(path)
    memo[key] = sha
    write_text(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    return sha


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _count_files(directory: Path) -> int:
    total = 0
    for _, _, names in os.walk(directory):
        total += sum(1 for n in names if n != EXTRACTION_MARKER)
    return total


def _extraction_is_complete(target: Path, sha: str) -> bool:
    marker = target / EXTRACTION_MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("archive_sha256") == sha and _count_files(target) == info.get("n_files")


def _check_room(archive: Path, destination: Path, sizes: list[int]) -> None:
    """Refuse, before unpacking, when the cache's disk has less room than the files' sizes add up to
    (a lower bound: each file also takes part of a disk block)."""
    check_free_space(destination.parent, sum(sizes), f"unpacking {archive} ({len(sizes):,} files)", CACHE_FIX)


def _unpack(archive: Path, destination: Path) -> int:
    """Unpack into ``destination``; the number of regular files the archive holds."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            for m in members:  # refuse paths that would escape the destination
                if Path(m.filename).is_absolute() or ".." in Path(m.filename).parts:
                    raise ParameterError(f"archive {archive} holds an unsafe path {m.filename!r}", param="root")
            _check_room(archive, destination, [m.file_size for m in members])
            zf.extractall(destination)
            return len(members)
    with tarfile.open(archive) as tf:
        members = tf.getmembers()   # read through the archive once (a .tar.gz has no index)
        _check_room(archive, destination, [m.size for m in members if m.isfile()])
        try:
            tf.extractall(destination, filter="data")  # rejects absolute paths and links leading out
        except TypeError:  # Python without extraction filters (< 3.10.12 / 3.11.4): check by hand
            for m in members:
                if Path(m.name).is_absolute() or ".." in Path(m.name).parts or m.issym() or m.islnk():
                    raise ParameterError(f"archive {archive} holds an unsafe member {m.name!r}", param="root") from None
            tf.extractall(destination)
        return sum(1 for m in members if m.isfile())


def extract_archive(archive: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Extract ``archive`` (.tar.gz/.tgz/.tar/.zip) once into ``<cache>/datasets/<name>-<sha12>/``.

    The archive is unpacked into a temporary directory, its file count checked, a marker written,
    and only then renamed into place, so an interrupted extraction is never mistaken for a
    complete one.  A directory that fails the check is removed and extracted again (with a warning).
    """
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise MissingPathError(f"archive {archive} does not exist", param="root")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    sha = cached_file_sha256(archive, cache_dir)
    parent = cache_dir / "datasets"
    target = parent / f"{_archive_stem(archive)}-{sha[:12]}"
    if target.exists():
        if _extraction_is_complete(target, sha):
            return target
        log.warning("removing incomplete or modified extraction %s; extracting %s again", target, archive)
        shutil.rmtree(target)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary(parent, f".tmp-{target.name}-")
    # The pid in the name tells a later run whether the extraction that made it is still going.
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=parent))
    try:
        log.info("extracting %s into %s", archive, target)
        try:
            n_files = _unpack(archive, tmp)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as exc:
            detail = " ".join(str(exc).split()) or "unexpected end"
            if "could not be opened successfully" in detail:   # tarfile lists every method it tried
                detail = "not a readable tar archive"
            raise ParameterError(f"archive {archive} is corrupt or truncated ({detail}); download or copy it "
                                 "again", param="root") from None
        except OSError as exc:
            if isinstance(exc, DiskFullError):
                raise
            if is_disk_full(exc):   # the cache's disk, not the archive
                raise (disk_full_while_writing(exc.filename, exc, CACHE_FIX) if exc.filename else
                       disk_full_while_writing(tmp, exc, CACHE_FIX, folder=True)) from exc
            if exc.errno in (errno.EACCES, errno.EROFS):
                raise   # the cache's disk, not the archive
            raise ParameterError(f"archive {archive} cannot be unpacked ({exc.strerror or exc}); it may be corrupt or "
                                 "truncated: download or copy it again", param="root") from None
        found = _count_files(tmp)
        if found != n_files:
            raise ParameterError(f"archive {archive}: extracted {found} files, expected {n_files}", param="root")
        marker = {"archive": str(archive.resolve()), "archive_sha256": sha, "n_files": n_files}
        (tmp / EXTRACTION_MARKER).write_text(json.dumps(marker, indent=1))
        os.chmod(tmp, 0o777 & ~current_umask())   # mkdtemp makes it owner-only; the cache is the user's
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished the same extraction first: use it if it is complete.
            if not _extraction_is_complete(target, sha):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def remove_stale_temporary(parent: Path, prefix: str) -> list[Path]:
    """Remove ``parent/<prefix><pid>-*`` folders whose process is gone: what a killed extraction
    left behind (an extraction still running elsewhere keeps its folder)."""
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        pid = folder.name[len(prefix):].split("-", 1)[0]
        if folder.is_dir() and (not pid.isdigit() or not process_alive(int(pid))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def resolve_root(root: str | Path, cache_dir: str | Path | None = None, argument: str = "root") -> tuple[Path, dict]:
    """A data directory for ``root``: the directory itself, or an archive's cached extraction.
    Also returns provenance (archive path and sha256) for the meta data."""
    path = Path(root).expanduser()
    if not path.exists():
        raise MissingPathError(f"{argument}={root} does not exist; pass the data directory or its archive "
                               f"({', '.join(ARCHIVE_SUFFIXES)})", param=argument)
    if path.is_dir():
        return path.resolve(), {"root": str(path.resolve())}
    if is_archive(path):
        try:
            extracted = extract_archive(path, cache_dir)
        except ValueError as exc:   # corrupt or truncated: name the argument it came from
            raise ParameterError(f"{argument}={root}: {exc}", param=argument) from None
        sha = cached_file_sha256(path, Path(cache_dir) if cache_dir is not None else default_cache_dir())
        return extracted, {"archive": str(path.resolve()), "archive_sha256": sha, "extracted_to": str(extracted)}
    raise ParameterError(f"{argument}={root} is a file but not an archive ({', '.join(ARCHIVE_SUFFIXES)})",
                         param=argument)


def find_data_dir(base: Path, looks_right: Callable[[Path], bool], what: str, argument: str = "root",
                  max_depth: int = 2) -> Path:
    """``base`` or the first directory below it (sorted, breadth first, ≤ ``max_depth`` levels)
    that ``looks_right`` — archives usually wrap the data in one top-level folder."""
    level = [base]
    for _ in range(max_depth + 1):
        for directory in level:
            if looks_right(directory):
                return directory
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    raise MissingPathError(f"{argument}={base} does not contain {what}", param=argument)


# --------------------------------------------------------------------------------------------
# ImageFolder
# --------------------------------------------------------------------------------------------

def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _sorted_images_below(directory: Path) -> list[Path]:
    """Image files below ``directory`` in torchvision ImageFolder order (sorted walk).  Symbolic
    links to folders are followed, each real folder once: a link back up the tree (a loop) or a
    second link to one folder adds no image twice."""
    found, seen = [], set()
    for current, dirs, names in os.walk(directory, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(current) / n for n in sorted(names) if _is_image(n))
    return found


def imagefolder_split(split_dir: Path, *, name: str, split: str, root: Path, native_size: int | None = None,
                      class_names: dict[str, str] | None = None, source: dict | None = None) -> ImageDataset:
    """``split_dir/<class>/**/<image>``: labels are the sorted class folders (torchvision's rule)."""
    class_ids = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_ids:
        raise MissingPathError(f"{split_dir} has no class folders (expected <split>/<class>/<image>)", param="root")
    files, labels = [], []
    for label, class_id in enumerate(class_ids):
        for path in _sorted_images_below(split_dir / class_id):
            files.append(path.relative_to(root).as_posix())
            labels.append(label)
    if not files:
        raise MissingPathError(f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})", param="root")
    readable = tuple((class_names or {}).get(c, c) for c in class_ids)
    return ImageDataset(name=name, split=split, labels=np.asarray(labels, np.int64), class_names=readable,
                        class_ids=tuple(class_ids), root=root, files=tuple(files), native_size=native_size,
                        source=dict(source or {}))


def guess_native_size(root: Path, files: Sequence[str], sample: int = 8) -> int | None:
    """The common size of small square-ish images (longer side ≤ :data:`SMALL_IMAGE_MAX_SIDE`, the
    same for the first ``sample`` files), so that they are stretched to the small-image input size
    as ``--resolution``'s help says; None for photos (centre-cropped at the backbone's own size)."""
    sides = set()
    for name in list(files)[:sample]:
        try:
            with Image.open(root / name) as img:
                sides.add(max(img.size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            return None   # unreadable files are reported, by name, when they are loaded
    if len(sides) == 1 and next(iter(sides)) <= SMALL_IMAGE_MAX_SIDE:
        return next(iter(sides))
    return None


def load_images(root: str | Path, *, cache_dir: str | Path | None = None) -> ImageDataset:
    """Every image below ``root`` (a folder, or an archive of one), unlabelled, in sorted order:
    the pool of a labelling project.  Labels, when there are some, come later, with the selection
    (``python -m alkit select --labels labels.csv``: lines ``path,label``)."""
    base, source = resolve_root(root, cache_dir)
    paths = _sorted_images_below(base)
    if not paths:
        raise MissingPathError(f"root={root} holds no images ({', '.join(IMAGE_SUFFIXES)})", param="root")
    files = tuple(p.relative_to(base).as_posix() for p in paths)
    return ImageDataset(name="images", split="train", labels=np.full(len(files), -1, np.int64), class_names=(),
                        root=base, files=files, native_size=guess_native_size(base, files),
                        source=dict(source))


def _split_folder_names(split: str) -> tuple[str, ...]:
    """Folder names that hold ``split`` (a test split is often called val)."""
    return {"train": ("train",), "test": ("test", "val"), "val": ("val", "test")}[split]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {', '.join(SPLITS)}, got {split!r}", param="split")
    return split


def load_imagefolder(root: str | Path, split: str, *, name: str = "imagefolder", native_size: int | None = None,
                     cache_dir: str | Path | None = None) -> ImageDataset:
    """Any ImageFolder tree ``root/<split>/<class>/<image>`` (or an archive of one); ``test`` falls
    back to ``val/``."""
    _check_split(split)
    base, source = resolve_root(root, cache_dir)
    names = _split_folder_names(split)
    data_dir = find_data_dir(base, lambda d: any((d / n).is_dir() for n in names),
                             f"a {' or '.join(n + '/' for n in names)} folder of class folders")
    split_dir = next(data_dir / n for n in names if (data_dir / n).is_dir())
    dataset = imagefolder_split(split_dir, name=name, split=split, root=data_dir, native_size=native_size,
                                source=source)
    if native_size is None and dataset.files:   # small images are stretched, as --resolution's help says
        dataset = replace(dataset, native_size=guess_native_size(data_dir, dataset.files))
    return dataset


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------

def check_online(url: str, timeout: float = ONLINE_CHECK_TIMEOUT_S) -> str | None:
    """None if ``url``'s server answers within ``timeout`` seconds, else why not (a short text)."""
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        # 405: the server is there but refuses HEAD.  Anything else (e.g. a 404 from an intercepting
        # proxy) means the file cannot be fetched from here.
        return None if exc.code == 405 else f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {reason}"


def _cifar_pickles_dir(directory: Path) -> Path | None:
    candidate = directory / "cifar-10-batches-py"
    return directory if (candidate / "data_batch_1").is_file() and (candidate / "test_batch").is_file() else None


def _cifar_from_torchvision(directory: Path, split: str, download: bool) -> ImageDataset:
    from torchvision.datasets import CIFAR10   # torchvision's loader serves only this download path

    dataset = CIFAR10(str(directory), train=(split == "train"), download=download)
    return ImageDataset(name="cifar10", split=split, labels=np.asarray(dataset.targets, np.int64),
                        class_names=tuple(dataset.classes), root=directory, arrays=np.asarray(dataset.data),
                        native_size=32, source={"torchvision_root": str(directory)})


def _cifar_missing_message(where: Path, reason: str) -> str:
    return (f"CIFAR-10 is not at {where} and cannot be downloaded ({CIFAR10_URL} unreachable: {reason}). "
            f"Either put torchvision's cifar-10-python.tar.gz unpacked as {where}/cifar-10-batches-py/, or pass "
            f"root= (--root) pointing to an ImageFolder directory or .tar.gz with train/<class>/ and test/<class>/ "
            f"(e.g. cifar10-jpeg.tar.gz).")


def load_cifar10(root: str | Path | None, split: str, *, cache_dir: str | Path | None = None,
                 download: bool = True) -> ImageDataset:
    """CIFAR-10 from an ImageFolder directory or archive (train/, test/ with the 10 class folders),
    torchvision's pickles, or — when ``root`` is None and the machine is online — torchvision's
    official download into ``<cache>/torchvision``.  Offline it fails within seconds, saying where
    to put the data."""
    if _check_split(split) == "val":
        raise ParameterError("split: CIFAR-10 has 'train' and 'test' splits, not 'val' (the active-learning loop "
                             "holds its validation split out of 'train' itself)", param="split")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if root is None:
        download_dir = cache_dir / "torchvision"
        if _cifar_pickles_dir(download_dir):
            return _cifar_from_torchvision(download_dir, split, download=False)
        if not download:
            raise MissingPathError(_cifar_missing_message(download_dir, "download=False"), param="root")
        reason = check_online(CIFAR10_URL)
        if reason is not None:
            raise MissingPathError(_cifar_missing_message(download_dir, reason), param="root")
        download_dir.mkdir(parents=True, exist_ok=True)
        return _cifar_from_torchvision(download_dir, split, download=True)

    base, source = resolve_root(root, cache_dir)
    pickles = _cifar_pickles_dir(base)
    if pickles is not None:
        return _cifar_from_torchvision(pickles, split, download=False)
    data_dir = find_data_dir(base, lambda d: (d / "train").is_dir() and (d / "test").is_dir(),
                             "CIFAR-10 (train/ and test/ class folders, or cifar-10-batches-py/)")
    dataset = imagefolder_split(data_dir / split, name="cifar10", split=split, root=data_dir, native_size=32,
                                source=source)
    if dataset.num_classes != 10:
        raise ParameterError(f"root={root}: CIFAR-10 needs 10 class folders in {data_dir / split}, "
                             f"found {dataset.num_classes}", param="root")
    return dataset


# --------------------------------------------------------------------------------------------
# Tiny-ImageNet-200
# --------------------------------------------------------------------------------------------

def _read_words(path: Path) -> dict[str, str]:
    """wnid → first name in words.txt ("n01443537\tgoldfish, Carassius auratus" → "goldfish")."""
    if not path.is_file():
        return {}
    words = {}
    for line in path.read_text().splitlines():
        if "\t" in line:
            wnid, names = line.split("\t", 1)
            words[wnid.strip()] = names.split(",")[0].strip()
    return words


def load_tiny_imagenet(root: str | Path, split: str, *, cache_dir: str | Path | None = None) -> ImageDataset:
    """Tiny-ImageNet-200 in its official layout (folder or .tar.gz/.zip).  Labels are the sorted
    WordNet ids of ``wnids.txt``.  ``test`` (and ``val``) is the labelled 10,000-image val set (the
    official test split has no labels); its labels come from ``val/val_annotations.txt``."""
    split = "test" if _check_split(split) == "val" else split
    base, source = resolve_root(root, cache_dir)
    data_dir = find_data_dir(base, lambda d: (d / "wnids.txt").is_file(), "Tiny-ImageNet-200 (wnids.txt)")
    wnids = sorted(w.strip() for w in (data_dir / "wnids.txt").read_text().split() if w.strip())
    index = {w: i for i, w in enumerate(wnids)}
    words = _read_words(data_dir / "words.txt")
    class_names = tuple(words.get(w, w) for w in wnids)
    files: list[str] = []
    labels: list[int] = []
    if split == "train":
        for wnid in wnids:
            image_dir = data_dir / "train" / wnid / "images"
            if not image_dir.is_dir():
                raise MissingPathError(f"root={root}: missing Tiny-ImageNet folder {image_dir}", param="root")
            names = sorted(n for n in os.listdir(image_dir) if _is_image(n))
            files.extend(f"train/{wnid}/images/{n}" for n in names)
            labels.extend([index[wnid]] * len(names))
    else:
        annotations = data_dir / "val" / "val_annotations.txt"
        if not annotations.is_file():
            raise MissingPathError(f"root={root}: missing {annotations} (labels of the val split)", param="root")
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise ParameterError(f"{annotations}: class {parts[1]!r} is not in wnids.txt", param="root")
            files.append(f"val/images/{parts[0]}")
            labels.append(index[parts[1]])
    return ImageDataset(name="tiny-imagenet", split=split, labels=np.asarray(labels, np.int64),
                        class_names=class_names, class_ids=tuple(wnids), root=data_dir, files=tuple(files),
                        native_size=64, source=source)


# --------------------------------------------------------------------------------------------
# ImageNet-1k and ImageNet-LT
# --------------------------------------------------------------------------------------------

def _imagenet_names(data_dir: Path) -> dict[str, str]:
    """wnid → name from LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca") if present."""
    for candidate in (data_dir / "LOC_synset_mapping.txt", data_dir.parent / "LOC_synset_mapping.txt"):
        if candidate.is_file():
            mapping = {}
            for line in candidate.read_text().splitlines():
                wnid, _, names = line.partition(" ")
                mapping[wnid] = names.split(",")[0].strip()
            return mapping
    return {}


def load_imagenet(root: str | Path, split: str, *, cache_dir: str | Path | None = None) -> ImageDataset:
    """ImageNet-1k as torchvision's ImageFolder expects: ``root/train/<wnid>/*.JPEG`` and
    ``root/val/<wnid>/*.JPEG``; ``test`` is the val set (the usual ImageNet evaluation split)."""
    split = _check_split(split)
    base, source = resolve_root(root, cache_dir)
    folder = "train" if split == "train" else "val"
    data_dir = find_data_dir(base, lambda d: (d / folder).is_dir(), f"ImageNet ({folder}/<wnid>/ folders)")
    return imagefolder_split(data_dir / folder, name="imagenet", split="train" if split == "train" else "test",
                             root=data_dir, class_names=_imagenet_names(data_dir), source=source)


def imagenet_lt_split_file(split_file: str | Path, split: str) -> Path:
    """The split file itself, or ``ImageNet_LT_<split>.txt`` inside a directory."""
    path = Path(split_file).expanduser()
    if path.is_dir():
        path = path / f"ImageNet_LT_{split}.txt"
    if not path.is_file():
        raise MissingPathError(f"split_file={split_file}: {path} does not exist; pass the ImageNet_LT_{split}.txt "
                               f"of Liu et al. 2019 (or the folder holding it)", param="split_file")
    return path


def load_imagenet_lt(root: str | Path, split: str, split_file: str | Path | None, *,
                     cache_dir: str | Path | None = None) -> ImageDataset:
    """ImageNet-LT (Liu et al. 2019): the images listed in a split file, lines ``<path> <label>``
    with paths relative to the ImageNet ``root``.  ``split`` picks ImageNet_LT_{train,val,test}.txt
    when ``split_file`` is a directory."""
    _check_split(split)
    if split_file is None:
        raise ParameterError("split_file is needed for imagenet-lt: ImageNet_LT_<split>.txt or its folder",
                             param="split_file")
    path = imagenet_lt_split_file(split_file, split)
    base, source = resolve_root(root, cache_dir)
    files, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ParameterError(f"{path}:{number}: expected '<path> <label>', got {line!r}", param="split_file")
        files.append(parts[0])
        labels.append(int(parts[1]))
    if not files:
        raise ParameterError(f"split_file {path} lists no images", param="split_file")
    labels_arr = np.asarray(labels, np.int64)
    num_classes = int(labels_arr.max()) + 1
    if not (base / files[0]).is_file():
        raise MissingPathError(f"root={root}: {base / files[0]} (first image of {path.name}) does not exist; "
                               f"root must be the ImageNet folder the split file's paths start from", param="root")
    wnid_of = {}
    for rel, label in zip(files, labels):  # the folder a class's images sit in is its WordNet id
        wnid_of.setdefault(label, Path(rel).parent.name)
    class_ids = tuple(wnid_of.get(c, str(c)) for c in range(num_classes))
    names = _imagenet_names(base)
    return ImageDataset(name="imagenet-lt", split=split, labels=labels_arr,
                        class_names=tuple(names.get(c, c) for c in class_ids), class_ids=class_ids, root=base,
                        files=tuple(files), source={**source, "split_file": str(path.resolve())},
                        subset={"split_file": path.name})


# --------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------

def load_dataset(name: str, root: str | Path | None, split: str, *, lt: LongTailSpec | None = None,
                 limit: int | None = None, limit_seed: int = 0, split_file: str | Path | None = None,
                 cache_dir: str | Path | None = None, download: bool = True) -> ImageDataset:
    """The ``split`` of data set ``name`` (see :data:`DATASET_NAMES`).

    ``*-lt`` names (or ``lt=``) cut the *training* split with a long-tailed profile (default
    ρ = 0.1, exponential, seed 0); their test split stays the balanced test set, as in the paper.
    ``limit`` then takes a class-stratified slice.
    """
    if name not in DATASET_NAMES:
        raise ParameterError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {name!r}", param="dataset")
    _check_split(split)
    if root is None and name != "cifar10" and name != "cifar10-lt":
        raise ParameterError(f"root is needed for dataset {name!r}: its folder or archive", param="root")
    if name in ("cifar10", "cifar10-lt"):
        dataset = load_cifar10(root, split, cache_dir=cache_dir, download=download)
    elif name in ("tiny-imagenet", "tiny-imagenet-lt"):
        dataset = load_tiny_imagenet(root, split, cache_dir=cache_dir)
    elif name == "imagenet":
        dataset = load_imagenet(root, split, cache_dir=cache_dir)
    elif name == "imagenet-lt":
        dataset = load_imagenet_lt(root, split, split_file, cache_dir=cache_dir)
    elif name == "images":
        if split != "train":
            raise ParameterError(f"split: a folder of unlabelled images is one pool, split 'train'; got {split!r}",
                                 param="split")
        dataset = load_images(root, cache_dir=cache_dir)
    else:
        dataset = load_imagefolder(root, split, cache_dir=cache_dir)
    if name.endswith("-lt") and name != "imagenet-lt" and lt is None:
        lt = LongTailSpec(0.1)
    if lt is not None:
        if dataset.split == "train":
            dataset = make_long_tailed(dataset, lt)
        else:
            log.info("%s %s: the long-tailed profile applies to the training split; the test split stays "
                     "balanced", name, split)
    if limit is not None:
        dataset = limit_dataset(dataset, limit, limit_seed)
    return dataset


__all__ = [
    "DATASET_NAMES", "ImageDataset", "LongTailSpec", "class_balanced_holdout", "default_cache_dir",
    "extract_archive", "guess_native_size", "limit_dataset", "load_cifar10", "load_dataset", "load_imagefolder",
    "load_images", "load_imagenet",
    "load_imagenet_lt", "load_tiny_imagenet", "long_tailed_class_counts", "long_tailed_indices",
    "make_long_tailed", "rows_per_class", "stratified_limit_indices",
]
