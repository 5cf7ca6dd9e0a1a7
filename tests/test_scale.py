"""The ImageNet-shaped pool generator and the fast row and logit reads used at scale, against plain
references.  The boundary engine's own fast paths (MASE and BASE at scale) are tested in
tests/strategies/test_boundary.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alkit.data import imagenet_pool as ip
from alkit.data.imagenet_pool import ImageNetPoolSpec, imagenet_class_sizes, load_imagenet_pool, make_imagenet_pool
from alkit.pool import linear_logits
from alkit.probe import probe_device
from alkit.rows import gather_rows
from alkit.scores import auto_chunk_rows, iter_logits, read_rows
from conftest import build_pool

TINY = dict(n_total=900, num_classes=12, dim=24, n_test_per_class=4, latent_dim=6, chunk_rows=64)


# ------------------------------------------------------------------ the generator
def test_imagenet_class_sizes_full_size():
    sizes = imagenet_class_sizes()
    assert sizes.sum() == 1_281_167 and sizes.size == 1000
    assert sizes.min() == 732 and sizes.max() == 1300
    assert 50 <= (sizes < 1300).sum() <= 200  # a tail, most classes full
    np.testing.assert_array_equal(sizes, imagenet_class_sizes(seed=0))
    assert not np.array_equal(sizes, imagenet_class_sizes(seed=1))


@pytest.mark.parametrize("n_total,num_classes", [(10_000, 1000), (100_000, 1000), (5_000, 10), (900, 12),
                                                 (1_000, 1000), (77, 7), (5, 1)])
def test_imagenet_class_sizes_scaled(n_total, num_classes):
    sizes = imagenet_class_sizes(n_total, num_classes, seed=3)
    assert sizes.sum() == n_total and sizes.size == num_classes
    scale = (n_total / num_classes) / (1_281_167 / 1000)
    hi = max(round(1300 * scale), -(-n_total // num_classes))
    assert sizes.max() <= hi and sizes.min() >= min(max(1, round(732 * scale)), hi - 1, sizes.max())
    assert sizes.min() >= 1


def test_generator_is_seeded_float16_and_consistent(tmp_path):
    a = make_imagenet_pool(tmp_path / "a", progress=False, **TINY)
    b = make_imagenet_pool(tmp_path / "b", progress=False, **TINY)
    c = make_imagenet_pool(tmp_path / "c", progress=False, **{**TINY, "seed": 1})
    assert isinstance(a.features, np.memmap) and a.features.dtype == np.float16
    assert a.features.shape == (900, 24) and a.test_features.shape == (48, 24)
    np.testing.assert_array_equal(np.asarray(a.features), np.asarray(b.features))
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(np.asarray(a.test_features), np.asarray(b.test_features))
    assert not np.array_equal(np.asarray(a.features), np.asarray(c.features))
    sizes = np.asarray(a.meta["class_sizes"])
    np.testing.assert_array_equal(np.bincount(a.labels, minlength=12), sizes)
    np.testing.assert_array_equal(np.bincount(a.test_labels, minlength=12), np.full(12, 4))
    assert np.isfinite(np.asarray(a.features, np.float32)).all()
    share = (a.ambiguous_partner >= 0).mean()
    assert 0.03 < share < 0.2 and (a.ambiguous_partner != a.labels).all()
    # Classes are learnable but not trivially: the class means are separated.
    x = np.asarray(a.features, np.float32)
    means = np.stack([x[a.labels == k].mean(0) for k in range(12)])
    pred = np.argmin(((x[:, None] - means[None]) ** 2).sum(2), 1)
    assert (pred == a.labels).mean() > 1 / 12 + 0.1


def test_generator_skips_finished_and_resumes_interrupted(tmp_path, monkeypatch):
    spec = ImageNetPoolSpec(**TINY)
    fresh = make_imagenet_pool(tmp_path / "fresh", spec, progress=False)
    stamp = (tmp_path / "fresh" / "features.npy").stat().st_mtime_ns
    again = make_imagenet_pool(tmp_path / "fresh", spec, progress=False)  # finished: not regenerated
    assert (tmp_path / "fresh" / "features.npy").stat().st_mtime_ns == stamp
    assert again.meta["key"] == fresh.meta["key"] == spec.key()

    calls = {"n": 0}
    original = ip._Structure.sample

    def failing(self, labels, rng):
        calls["n"] += 1
        if calls["n"] == 9:  # after 8 chunks (one progress checkpoint) of the train split
            raise KeyboardInterrupt
        return original(self, labels, rng)

    monkeypatch.setattr(ip._Structure, "sample", failing)
    with pytest.raises(KeyboardInterrupt):
        make_imagenet_pool(tmp_path / "resumed", spec, progress=False)
    assert not (tmp_path / "resumed" / "meta.json").exists()
    assert (tmp_path / "resumed" / "features.npy.partial").exists()
    state = json.loads((tmp_path / "resumed" / "features.npy.progress.json").read_text())
    assert state["chunks_done"] == 8
    monkeypatch.setattr(ip._Structure, "sample", original)
    resumed = make_imagenet_pool(tmp_path / "resumed", spec, progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.features), np.asarray(fresh.features))
    np.testing.assert_array_equal(resumed.ambiguous_partner, fresh.ambiguous_partner)
    np.testing.assert_array_equal(np.asarray(load_imagenet_pool(tmp_path / "resumed").test_features),
                                  np.asarray(fresh.test_features))
    with pytest.raises(ValueError, match="meta.json"):
        load_imagenet_pool(tmp_path / "nothing")


# --------------------------------------------------------------- fast paths, exactly
def test_read_rows_and_iter_logits_equal_plain_indexing(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    buffer = torch.empty(500 * 6)
    for idx in (np.arange(10, 90), np.arange(0, 200, 2), np.array([3, 250, 499]), np.empty(0, np.int64),
                np.array([40, 7, 41]), np.array([5, 5, 6])):
        expected = x[idx].astype(np.float32)
        np.testing.assert_array_equal(read_rows(mapped, idx).numpy(), expected)
        np.testing.assert_array_equal(read_rows(mapped, idx, buffer).numpy(), expected)
    pool, _ = build_pool(num_classes=6, n_max=40, dim=6, seed=1)
    idx = pool.eligible_indices()
    got = np.concatenate([logits.numpy().copy() for _, _, logits in iter_logits(pool, idx, 17)])
    np.testing.assert_allclose(got, linear_logits(pool.features[idx], pool.weight, pool.bias), rtol=1e-5, atol=1e-5)
    assert auto_chunk_rows(1000, 2048) == 4096 and auto_chunk_rows(5) == 16_384 and auto_chunk_rows(10**6) == 256


def test_gather_rows_equals_plain_indexing_and_never_aliases(tmp_path):
    """Every path of gather_rows (in memory and in order: one np.take; any order, chunked, float16
    memory maps, float64 out) gives features[idx] as a fresh array the caller may write to."""
    rng = np.random.default_rng(1)
    x32 = rng.normal(size=(300, 5)).astype(np.float32)
    np.save(tmp_path / "x16.npy", x32.astype(np.float16))
    sources = {"float32": x32, "float16 map": np.load(tmp_path / "x16.npy", mmap_mode="r")}
    for name, x in sources.items():
        for idx in (np.arange(0, 300, 3), np.array([250, 3, 3, 17]), np.array([7]), np.empty(0, np.int64),
                    np.sort(rng.choice(300, 120, replace=False))):
            for chunk in (1000, 7):
                for dtype in (np.float32, np.float64):
                    got = gather_rows(x, idx, chunk, dtype)
                    assert got.dtype == dtype and got.flags.writeable, (name, idx, chunk)
                    np.testing.assert_array_equal(got, np.asarray(x)[idx].astype(dtype))
    before = x32.copy()
    gather_rows(x32, np.arange(10, 60))[:] = 0.0   # a copy: writing it leaves the features alone
    np.testing.assert_array_equal(x32, before)


def test_probe_device_defaults_to_cpu(monkeypatch):
    monkeypatch.delenv("ALKIT_PROBE_DEVICE", raising=False)
    assert probe_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            probe_device("cuda")
