from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from alkit.data.synthetic import gaussian_mixture  # noqa: E402
from alkit.pool import PoolState  # noqa: E402
from alkit.probe import ProbeConfig, train_linear_probe  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    networks and batches are dominated by per-op threading overhead, which on a shared 2-core
    machine made the feature tests about 50× slower with two threads (measured)."""
    import torch   # only the modules that ask for this fixture need torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_pool(num_classes=6, n_max=60, dim=8, n_labeled=30, n_held=12, seed=0, dtype=np.float32, head=True):
    data = gaussian_mixture(num_classes, n_max, dim, separation=2.5, seed=seed)
    x = data.train_features.astype(dtype)
    y = data.train_labels
    rng = np.random.default_rng(seed + 100)
    order = rng.permutation(y.size)
    labeled = np.zeros(y.size, bool)
    labeled[order[:n_labeled]] = True
    held = np.zeros(y.size, bool)
    held[order[n_labeled:n_labeled + n_held]] = True
    weight = bias = None
    if head:
        fit = train_linear_probe(x[labeled].astype(np.float32), y[labeled], None, None, num_classes,
                                 ProbeConfig(), seed=seed)
        weight, bias = fit.weight, fit.bias
    pool = PoolState(features=x, labeled=labeled, held_out=held, labels=np.where(labeled, y, -1).astype(np.int64),
                     num_classes=num_classes, weight=weight, bias=bias)
    return pool, y


@pytest.fixture(scope="session")
def small_pool():
    return build_pool()
