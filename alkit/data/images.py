"""Images as tensors, for the loops and strategies that train on pixels (fine-tuning, VAAL).

:class:`PoolImages` is the ``images`` accessor of a :class:`alkit.pool.PoolState`: called with
row indices it returns their normalised (n, 3, R, R) float tensor.  Images are decoded and resized
once and kept as uint8 (CIFAR-10's 50,000 training images at 32 px: 150 MB), on the CPU or on the
GPU (``.to("cuda")``), so a training step only indexes, converts and normalises; a split too large
to keep (ImageNet) is decoded on demand by a thread pool instead.

:func:`random_crop_flip` is the training augmentation of the paper's recipes (pad, random crop,
random horizontal flip), drawn from an explicit generator so that runs repeat exactly.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

#: Largest pixel cache (uint8 bytes) that :meth:`PoolImages.from_dataset` keeps in memory.
DEFAULT_CACHE_BYTES = 8 * 1024**3


class PoolImages:
    """Rows of an image set as normalised float tensors: ``images(rows) -> (len(rows), 3, R, R)``.

    Exactly one of ``pixels`` ((N, 3, R, R) uint8 tensor, the decoded images) or ``dataset`` +
    ``preprocessing`` (an :class:`alkit.data.datasets.ImageDataset` decoded on demand) holds them.
    ``mean``/``std``: per-channel normalisation of 0–1 pixels (the backbone's).
    """

    def __init__(self, pixels: torch.Tensor | None = None, *, mean: Sequence[float] = (0.0, 0.0, 0.0),
                 std: Sequence[float] = (1.0, 1.0, 1.0), dataset=None, preprocessing=None, workers: int = 4) -> None:
        if (pixels is None) == (dataset is None):
            raise ValueError("PoolImages needs exactly one of pixels= (decoded uint8 images) or dataset= "
                             "(with preprocessing=, decoded on demand)")
        if pixels is not None:
            if not isinstance(pixels, torch.Tensor) or pixels.dtype != torch.uint8 or pixels.ndim != 4 \
                    or pixels.shape[1] != 3:
                raise ValueError("pixels must be a uint8 torch tensor of shape (N, 3, H, W), got "
                                 f"{getattr(pixels, 'dtype', type(pixels).__name__)} {tuple(getattr(pixels, 'shape', ()))}")
        elif preprocessing is None:
            raise ValueError("dataset= needs preprocessing= (an alkit.data.features.Preprocessing) to size its images")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must give 3 channels, std > 0; got mean={mean}, std={std}")
        self._pixels = pixels
        self.dataset, self.preprocessing, self.workers = dataset, preprocessing, max(1, int(workers))
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, arrays: np.ndarray, mean: Sequence[float] = (0.0, 0.0, 0.0),
                    std: Sequence[float] = (1.0, 1.0, 1.0)) -> "PoolImages":
        """From (N, H, W, 3) uint8 arrays (e.g. CIFAR-10's pickles)."""
        arrays = np.asarray(arrays)
        if arrays.dtype != np.uint8 or arrays.ndim != 4 or arrays.shape[3] != 3:
            raise ValueError(f"arrays must be uint8 of shape (N, H, W, 3), got {arrays.dtype} {arrays.shape}")
        return cls(torch.from_numpy(np.ascontiguousarray(arrays.transpose(0, 3, 1, 2))), mean=mean, std=std)

    @classmethod
    def from_dataset(cls, dataset, preprocessing, *, workers: int = 4,
                     cache_bytes: int = DEFAULT_CACHE_BYTES) -> "PoolImages":
        """Every image of ``dataset`` sized by ``preprocessing`` (an :class:`alkit.data.features.Preprocessing`,
        whose mean/std normalise), decoded once into memory when that takes at most ``cache_bytes``,
        else decoded on demand (``workers`` threads)."""
        r = int(preprocessing.resolution)
        lazy = cls(dataset=dataset, preprocessing=preprocessing, mean=preprocessing.mean, std=preprocessing.std,
                   workers=workers)
        if len(dataset) * 3 * r * r > cache_bytes:
            return lazy
        return cls(lazy.pixels(np.arange(len(dataset))), mean=preprocessing.mean, std=preprocessing.std)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self._pixels.shape[0]) if self._pixels is not None else len(self.dataset)

    @property
    def resolution(self) -> int:
        return int(self._pixels.shape[2]) if self._pixels is not None else int(self.preprocessing.resolution)

    @property
    def device(self) -> torch.device:
        return self._pixels.device if self._pixels is not None else torch.device("cpu")

    @property
    def in_memory(self) -> bool:
        return self._pixels is not None

    def to(self, device: str | torch.device) -> "PoolImages":
        """The same images with the decoded pixels on ``device`` (on-demand decoding stays on the CPU)."""
        if self._pixels is None or self._pixels.device == torch.device(device):
            return self
        return PoolImages(self._pixels.to(device), mean=self.mean, std=self.std)

    def pixels(self, rows: np.ndarray) -> torch.Tensor:
        """(n, 3, R, R) uint8 of ``rows``, on :attr:`device`."""
        rows = np.asarray(rows, np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= len(self))):
            raise ValueError(f"rows must be a 1-D array of image indices in [0, {len(self)})")
        if self._pixels is not None:
            return self._pixels[torch.from_numpy(rows).to(self._pixels.device)]

        def one(i: int) -> np.ndarray:
            return self.preprocessing.pixels(self.dataset.load_image(int(i)))

        with ThreadPoolExecutor(self.workers) as pool:
            decoded = list(pool.map(one, rows.tolist()))
        r = int(self.preprocessing.resolution)
        if not decoded:
            return torch.empty((0, 3, r, r), dtype=torch.uint8)
        return torch.from_numpy(np.stack(decoded).transpose(0, 3, 1, 2).copy())

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 3, R, R) → float32 normalised with :attr:`mean`/:attr:`std`."""
        mean = torch.tensor(self.mean, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, 3, 1, 1)
        return (pixels.float().div_(255.0) - mean).div_(std)

    def __call__(self, rows: np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
        """Normalised float32 (n, 3, R, R) images of ``rows`` (on ``device``, default :attr:`device`)."""
        pixels = self.pixels(rows)
        if device is not None:
            pixels = pixels.to(device, non_blocking=True)
        return self.normalize(pixels)

    def __repr__(self) -> str:
        where = f"in memory on {self.device}" if self.in_memory else f"decoded on demand ({self.workers} threads)"
        return f"PoolImages({len(self):,} images of {self.resolution} px, {where})"


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """Each image zero-padded by ``padding`` pixels, cropped back to its size at a random offset,
    and mirrored left–right with probability ½ (the CIFAR recipe).  Offsets and flips are drawn
    from ``generator`` on the CPU, so the same generator gives the same batch on any device."""
    n, _, h, w = images.shape
    if n == 0 or (padding <= 0 and not flip):
        return images
    out = images
    if padding > 0:
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).to(images.device)
        padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
        rows = (offsets[:, 0, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (offsets[:, 1, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, channel, rows, cols]
    if flip:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        out = torch.where(mirror[:, None, None, None], out.flip(3), out)
    return out


__all__ = ["DEFAULT_CACHE_BYTES", "PoolImages", "random_crop_flip"]
