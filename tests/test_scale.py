"""The ImageNet-shaped pool generator and the fast paths used at scale, against plain references."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from alkit.data import imagenet_pool as ip
from alkit.data.imagenet_pool import ImageNetPoolSpec, imagenet_class_sizes, load_imagenet_pool, make_imagenet_pool
from alkit.pool import linear_logits
from alkit.probe import probe_device
from alkit.scores import (
    auto_chunk_rows, boundary_distances, boundary_distances_, class_weight_distances, iter_logits, read_rows,
)
from alkit.strategies import select
from alkit.strategies._boundary_engine import PerClassTopK as _PerClassTopK
from alkit.strategies._boundary_engine import BoundaryStats, base_picks, mase_distances, mase_picks
from alkit.strategies.boundary import base, mase
from conftest import build_pool
from alkit.strategies.boundary import base_reference

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
def _random_head(rng, num_classes, dim, duplicate=False):
    weight = rng.normal(size=(num_classes, dim)).astype(np.float32)
    bias = rng.normal(size=num_classes).astype(np.float32)
    if duplicate:  # two classes that can never be told apart: 0/0 distances become inf
        weight[3], bias[3] = weight[1], bias[1]
    return weight, bias


@pytest.mark.parametrize("duplicate", [False, True])
def test_inplace_boundary_distances_equal_numpy(duplicate):
    rng = np.random.default_rng(0)
    weight, bias = _random_head(rng, 9, 5, duplicate)
    z = rng.normal(size=(200, 5)).astype(np.float32)
    z[:5] = 0  # logits = bias exactly: ties between the duplicated classes
    logits = linear_logits(z, weight, bias)
    wd = class_weight_distances(weight)
    r_ref, pred_ref = boundary_distances(logits.copy(), wd)
    work = torch.from_numpy(logits.copy())
    pred, d, top = boundary_distances_(work, torch.from_numpy(wd))
    np.testing.assert_array_equal(pred.numpy(), pred_ref)
    np.testing.assert_array_equal(work.numpy(), r_ref)
    np.testing.assert_array_equal(d.numpy(), r_ref.min(axis=1))
    np.testing.assert_array_equal(top.numpy(), logits.max(axis=1))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_per_class_topk_streaming_equals_sorting(chunk):
    rng = np.random.default_rng(chunk)
    n, c = 300, 6
    scores = rng.integers(0, 25, size=(n, c)).astype(np.float32)  # many exact ties
    scores[rng.random((n, c)) < 0.05] = np.inf
    keys = rng.random(n)
    keep = np.array([0, 1, 5, 40, 299, 400])
    top = _PerClassTopK(keep, keys)
    for start in range(0, n, chunk):
        top.add(torch.from_numpy(scores[start:start + chunk].copy()), start)
    top.compact()
    for k in range(c):
        expected = np.lexsort((keys, scores[:, k]))[: keep[k]]
        np.testing.assert_array_equal(top.ranked(k), expected)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("slack", [0, 1, None])
def test_base_with_refills_equals_reference(seed, slack):
    # slack 0 keeps only q_c candidates per class: every class whose best points were taken by
    # an earlier class needs the exact recomputation, and the picks must not change.
    pool, _ = build_pool(num_classes=9, n_max=50, dim=6, n_labeled=20, n_held=10, seed=seed)
    refills = 0
    for budget in (9, 40, 150):
        for chunk in (16, 10_000):
            reports = []
            fast = base_picks(pool, budget, np.random.default_rng(seed), chunk_rows=chunk, slack=slack,
                              report=reports.append)
            (stats,) = reports
            refills += stats.refills
            assert stats.passes == 1 + stats.refills and stats.logits_s <= stats.pass_s
            np.testing.assert_array_equal(fast, base_reference(pool, budget, np.random.default_rng(seed)))
    if slack == 0:
        assert refills > 0


@pytest.mark.parametrize("method", ["mase", "base"])
def test_boundary_engine_reports_once_at_the_end(method):
    pool, _ = build_pool(num_classes=6, n_max=40, dim=5, n_labeled=20, n_held=10, seed=3)
    picks_of = {"mase": mase_picks, "base": base_picks}[method]
    reports = []
    picks = picks_of(pool, 20, np.random.default_rng(0), 16, report=reports.append)
    np.testing.assert_array_equal(picks, picks_of(pool, 20, np.random.default_rng(0), 16))
    (stats,) = reports
    assert isinstance(stats, BoundaryStats) and stats.method == method
    assert stats.passes == 1 + stats.refills and (stats.refills == 0 or method == "base")
    assert 0 <= stats.logits_s <= stats.pass_s <= stats.total_s


def test_base_and_mase_with_precomputed_logits_equal_head():
    pool, _ = build_pool(num_classes=7, n_max=40, dim=5, n_labeled=20, n_held=10, seed=4)
    logits = linear_logits(pool.features, pool.weight, pool.bias)
    with_logits = replace(pool, logits=logits)
    for budget in (7, 30):
        np.testing.assert_array_equal(base(with_logits, budget, np.random.default_rng(0), slack=0),
                                      base(pool, budget, np.random.default_rng(0), slack=0))
        np.testing.assert_array_equal(mase(with_logits, budget, np.random.default_rng(0)),
                                      mase(pool, budget, np.random.default_rng(0)))


def test_boundary_strategies_on_float16_memmap_equal_float32(tmp_path):
    pool, _ = build_pool(num_classes=8, n_max=70, dim=12, n_labeled=40, n_held=15, seed=2)
    half = pool.features.astype(np.float16)
    np.save(tmp_path / "f.npy", half)
    mapped = replace(pool, features=np.load(tmp_path / "f.npy", mmap_mode="r"))
    in_memory = replace(pool, features=half.astype(np.float32))
    for name in ("base", "mase", "margin", "confidence", "entropy"):
        for budget in (5, 37):
            np.testing.assert_array_equal(select(mapped, name, budget, 3), select(in_memory, name, budget, 3))
    np.testing.assert_array_equal(mase_distances(mapped, 16)[1], mase_distances(in_memory, 16)[1])


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


def test_probe_device_defaults_to_cpu(monkeypatch):
    monkeypatch.delenv("ALKIT_PROBE_DEVICE", raising=False)
    assert probe_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            probe_device("cuda")
