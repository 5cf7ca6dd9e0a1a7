"""Seeded synthetic pools: Gaussian mixtures with a chosen class-size profile and difficulty."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def class_sizes(num_classes: int, n_max: int, profile: str = "balanced", imbalance_ratio: float = 1.0) -> np.ndarray:
    """Per-class counts: ``balanced`` (all n_max), ``exp`` (n_c = ⌊n_max·ρ^(c/(C−1))⌋, the
    paper's long tail) or ``step`` (first half n_max, second half ⌊n_max·ρ⌋)."""
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"num_classes and n_max must be ≥ 1, got {num_classes} and {n_max}")
    if not 0 < imbalance_ratio <= 1:
        raise ValueError(f"imbalance_ratio must lie in (0, 1], got {imbalance_ratio}")
    c = np.arange(num_classes)
    if profile == "balanced":
        sizes = np.full(num_classes, n_max)
    elif profile == "exp":
        exponent = c / (num_classes - 1) if num_classes > 1 else np.zeros(1)
        sizes = np.floor(n_max * imbalance_ratio ** exponent)
    elif profile == "step":
        sizes = np.where(c < (num_classes + 1) // 2, n_max, np.floor(n_max * imbalance_ratio))
    else:
        raise ValueError(f"profile must be 'balanced', 'exp' or 'step', got {profile!r}")
    return np.maximum(sizes, 1).astype(np.int64)


@dataclass(frozen=True)
class SyntheticData:
    train_features: np.ndarray
    train_labels: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    description: str


def gaussian_mixture(
    num_classes: int = 10,
    n_max: int = 200,
    dim: int = 32,
    *,
    profile: str = "balanced",
    imbalance_ratio: float = 1.0,
    separation: float = 3.0,
    n_test_per_class: int = 50,
    seed: int = 0,
) -> SyntheticData:
    """A Gaussian mixture: class means ~ N(0, (separation²/dim)·I)·… with unit isotropic noise.

    ``separation`` is the expected distance between two class means in units of the noise
    standard deviation: ≈ 1 is hard (classes overlap), ≥ 4 is easy.  Class sizes follow
    :func:`class_sizes`; the test split is balanced.  Everything comes from ``seed``.
    """
    if dim < 1:
        raise ValueError(f"dim must be ≥ 1, got {dim}")
    if separation <= 0:
        raise ValueError(f"separation must be > 0, got {separation}")
    rng = np.random.default_rng(seed)
    # E‖μ_i − μ_j‖ = separation when each coordinate has variance separation² / (2·dim).
    means = rng.normal(0.0, separation / np.sqrt(2.0 * dim), size=(num_classes, dim))
    sizes = class_sizes(num_classes, n_max, profile, imbalance_ratio)

    def draw(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes), counts)
        feats = means[labels] + rng.normal(size=(labels.size, dim))
        order = rng.permutation(labels.size)
        return feats[order].astype(np.float32), labels[order].astype(np.int64)

    train_x, train_y = draw(sizes)
    test_x, test_y = draw(np.full(num_classes, n_test_per_class))
    desc = (f"gaussian_mixture(C={num_classes}, n_max={n_max}, dim={dim}, profile={profile}, "
            f"rho={imbalance_ratio}, separation={separation}, seed={seed})")
    return SyntheticData(train_x, train_y, test_x, test_y, num_classes, desc)


def colour_images(num_classes: int = 10, n_per_class: int = 60, size: int = 32, *, noise: float = 70.0,
                  n_test_per_class: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labelled stand-in images (no data set needed): class c is a noisy image of one colour μ_c
    (drawn from ``seed``) with a bright square in a class-dependent corner; pixels are μ_c plus
    Gaussian noise of standard deviation ``noise``, clipped to 0–255.  Returns ``(train (N, size,
    size, 3) uint8, train labels, test images, test labels)``, classes interleaved."""
    if num_classes < 2 or n_per_class < 1 or n_test_per_class < 1 or size < 8:
        raise ValueError("colour_images needs ≥ 2 classes, ≥ 1 image per class and size ≥ 8, got "
                         f"{num_classes}, {n_per_class}, {n_test_per_class}, {size}")
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, (num_classes, 3))
    corner = size // 4

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.tile(np.arange(num_classes), per_class)
        x = colours[labels][:, None, None, :] + rng.normal(0.0, noise, (labels.size, size, size, 3))
        for c in range(num_classes):
            rows, (top, left) = labels == c, divmod(c % 4, 2)
            x[rows, top * (size - corner):top * (size - corner) + corner,
              left * (size - corner):left * (size - corner) + corner] += 60.0
        return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = draw(n_per_class)
    test_x, test_y = draw(n_test_per_class)
    return train_x, train_y, test_x, test_y
