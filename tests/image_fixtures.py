"""Small generated image trees for the data set / feature tests (no downloads, no shared data)."""
from __future__ import annotations

import atexit
import fnmatch
import functools
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(os.environ.get("ALKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CIFAR_ARCHIVE = SHARED_DATA / "cifar10-jpeg.tar.gz"
TINY_ARCHIVE = SHARED_DATA / "tiny-imagenet-200.tar.gz"


def write_image(path: Path, rng: np.random.Generator, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_imagefolder(root: Path, counts: dict[str, dict[str, int]], seed: int = 0, size: int = 16,
                     suffix: str = ".png") -> Path:
    """``root/<split>/<class>/<k>.png`` with ``counts[split][class]`` random images each."""
    rng = np.random.default_rng(seed)
    for split, per_class in counts.items():
        for class_name, n in per_class.items():
            for k in range(n):
                write_image(root / split / class_name / f"{k:04d}{suffix}", rng, size)
    return root


def make_tiny_imagenet(root: Path, wnids: list[str], train_per_class: int = 3, val_per_class: int = 2,
                       seed: int = 0) -> Path:
    """The official Tiny-ImageNet-200 layout with a few classes."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\tname of {w}, synonym\n" for w in wnids) + "n99999999\tunused\n")
    for w in wnids:
        for k in range(train_per_class):
            write_image(root / "train" / w / "images" / f"{w}_{k}.JPEG", rng)
    lines = []
    for k in range(val_per_class * len(wnids)):
        w = wnids[(k * 7) % len(wnids)]  # interleaved, like the real annotation file
        write_image(root / "val" / "images" / f"val_{k}.JPEG", rng)
        lines.append(f"val_{k}.JPEG\t{w}\t0\t0\t15\t15")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def make_tar_gz(source: Path, archive: Path, top: str) -> Path:
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source, arcname=top)
    return archive


def make_zip(source: Path, archive: Path, top: str) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                zf.write(path, f"{top}/{path.relative_to(source).as_posix()}")
    return archive


# ------------------------------------------------------------------ ~200-image slices of the shared archives
# Pulled out of the archives into a per-process temporary folder by GNU tar (a few seconds; Python's
# tarfile takes ~4× longer over 110k members), so the tests neither extract 60k / 110k files nor
# write to the user's cache.

def _slice_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="alkit-shared-slices-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


def _untar(archive: Path, dest: Path, patterns: list[str]) -> None:
    """Extract the members matching shell ``patterns`` (GNU tar if present, else tarfile)."""
    if shutil.which("tar"):
        subprocess.run(["tar", "-xzf", str(archive), "-C", str(dest), "--wildcards", *patterns], check=True)
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile() and any(fnmatch.fnmatch(member.name, p) for p in patterns):
                tf.extract(member, dest, filter="data")


@functools.lru_cache(maxsize=None)
def cifar_slice() -> Path:
    """``cifar10-jpeg/{train,test}/<class>/`` with the first 20 images of each class (400 images)."""
    dest = _slice_root()
    _untar(CIFAR_ARCHIVE, dest, ["cifar10-jpeg/*/*/00[01]?.jpg"])
    return dest / "cifar10-jpeg"


@functools.lru_cache(maxsize=None)
def cifar_train_labels() -> np.ndarray:
    """Labels of the whole CIFAR-10 training split, from the archive's member names."""
    if shutil.which("tar"):
        names = subprocess.run(["tar", "-tzf", str(CIFAR_ARCHIVE)], check=True, capture_output=True,
                               text=True).stdout.split()
    else:
        names = tarfile.open(CIFAR_ARCHIVE).getnames()
    train = sorted(tuple(n.split("/")[2:4]) for n in names if n.count("/") == 3 and n.split("/")[1] == "train")
    classes = sorted({c for c, _ in train})
    return np.array([classes.index(c) for c, _ in train], dtype=np.int64)


@functools.lru_cache(maxsize=None)
def tiny_slice() -> Path:
    """Official Tiny-ImageNet layout with one train and one val image per class (400 images)."""
    dest = _slice_root()
    _untar(TINY_ARCHIVE, dest, ["tiny-imagenet-200/*.txt", "tiny-imagenet-200/val/*",
                                "tiny-imagenet-200/train/*/images/*_0.JPEG"])
    root = dest / "tiny-imagenet-200"
    annotations = root / "val" / "val_annotations.txt"
    kept, seen = [], set()
    for line in annotations.read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        if wnid in seen:
            (root / "val" / "images" / name).unlink()
        else:
            seen.add(wnid)
            kept.append(line)
    annotations.write_text("\n".join(kept) + "\n")
    return root
