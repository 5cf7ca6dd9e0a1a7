"""Small pools and feature matrices the strategy tests share (tests/strategies/, test_contract.py).

hand_pool: a pool with a given linear head and nothing labelled, for hand-made cases.
as_memmap / random_features: features as given, or as a float16 memory map (the large-pool path).
gaussian_pool: a labelled Gaussian-blob pool with a random head, through the public make_pool.
unit_rows: the normalised row store ProbCover and its faiss paths work on, and its rows as an array.
"""
from __future__ import annotations

import numpy as np

from alkit import make_pool
from alkit.pool import PoolState
from alkit.strategies.probcover import normalised_store


def hand_pool(features, weight, bias, labeled=None):
    n = features.shape[0]
    labeled = np.zeros(n, bool) if labeled is None else labeled
    return PoolState(features=features.astype(np.float32), labeled=labeled, held_out=np.zeros(n, bool),
                     labels=np.full(n, -1, np.int64), num_classes=weight.shape[0],
                     weight=weight.astype(np.float32), bias=bias.astype(np.float32))


def as_memmap(x: np.ndarray, tmp_path, name="f.npy") -> np.ndarray:
    path = tmp_path / name
    np.save(path, x)
    return np.load(path, mmap_mode="r")


def random_features(rng, n, d, dtype, tmp_path=None, offset=2.0):
    x = (rng.standard_normal((n, d)) + offset).astype(dtype)
    return as_memmap(x, tmp_path) if (tmp_path is not None and dtype == np.float16) else x


def gaussian_pool(seed=0, n=400, d=8, c=5, n_labeled=30, **kw):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = (rng.standard_normal((c, d))[y] * 3 + rng.standard_normal((n, d))).astype(np.float32)
    labels = np.full(n, -1)
    lab = rng.choice(n, n_labeled, replace=False)
    labels[lab] = y[lab]
    w = rng.standard_normal((c, d)).astype(np.float32) * 0.5
    return make_pool(x, labels, c, weight=w, bias=np.zeros(c, np.float32), **kw), y


def unit_rows(x: np.ndarray, chunk_rows: int = 64):
    store = normalised_store(x, np.arange(x.shape[0]), chunk_rows=chunk_rows)
    return store, store.block(0, store.n).numpy()
