"""The shared row store of the distance engines (alkit/strategies/_dense.py): streamed chunks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alkit.strategies._dense import RowStore, _contiguous_runs, feature_store, mean_rows


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("rows", ["few gaps", "many gaps", "unsorted"])
@pytest.mark.parametrize("transform", ["none", "center", "normalize"])
def test_streamed_chunks_equal_the_cached_rows(tmp_path, dtype, rows, transform):
    # A streamed pass writes each chunk into one reused buffer (runs of consecutive rows read and
    # converted in place, else a gather); every number must equal the float32 cache's.
    rng = np.random.default_rng(0)
    n, d = 3000, 7
    path = tmp_path / "x.npy"
    np.save(path, (rng.standard_normal((n, d)) * 3).astype(dtype))
    features = np.load(path, mmap_mode="r")
    if rows == "few gaps":
        indices = np.setdiff1d(np.arange(n), rng.choice(n, 40, replace=False))
    elif rows == "many gaps":
        indices = np.sort(rng.choice(n, 900, replace=False))
    else:
        indices = rng.permutation(n)[:1200]
    options = {"center": rng.standard_normal(d).astype(np.float32)} if transform == "center" else \
        {"normalize": True} if transform == "normalize" else {}
    cached = feature_store(features, indices, chunk_rows=256, cache_bytes=1 << 30, **options)
    streamed = feature_store(features, indices, chunk_rows=256, cache_bytes=0, **options)
    assert cached.mode == "float32 cache" and streamed.mode == "streamed"
    whole = torch.cat([block.clone() for _, _, block in cached.chunks()])
    pieces = [(start, stop, block.clone()) for start, stop, block in streamed.chunks()]
    assert all(stop - start <= 256 for start, stop, _ in pieces)
    assert torch.equal(torch.cat([block for _, _, block in pieces]), whole)
    assert torch.equal(streamed.block(5, 300), whole[5:300])


def test_contiguous_runs():
    assert _contiguous_runs(np.array([3, 4, 5, 9, 10, 12]), max_runs_share=1.0) == [(0, 3), (3, 5), (5, 6)]
    assert _contiguous_runs(np.array([3, 5, 4]), max_runs_share=1.0) is None   # not ascending
    assert _contiguous_runs(np.arange(0, 200, 2)) is None                       # too many runs: gather
    assert _contiguous_runs(np.arange(100, 164)) == [(0, 64)]


def test_a_row_store_without_load_into_still_streams_fresh_chunks():
    data = np.arange(60, dtype=np.float32).reshape(20, 3)
    store = RowStore(20, 3, lambda a, b: data[a:b], chunk_rows=6, cache_bytes=0)
    assert store.mode == "streamed"
    got = [(a, b, block.clone()) for a, b, block in store.chunks(100)]
    assert [(a, b) for a, b, _ in got] == [(0, 6), (6, 12), (12, 18), (18, 20)]
    assert torch.equal(torch.cat([block for *_, block in got]), torch.from_numpy(data))


@pytest.mark.parametrize("dim", [3, 64, 2048])
def test_row_sqnorms_are_each_rows_float64_sum(dim):
    # Squared in cache-sized blocks of rows: every row's norm must be the one its own float64 sum
    # gives (BADGE's draws follow these bits), at any number of rows and threads.
    from alkit.strategies._dense import row_sqnorms

    rng = np.random.default_rng(dim)
    x = (rng.standard_normal((1000, dim)) * 5).astype(np.float32)
    store = feature_store(x, np.arange(1000), chunk_rows=700, cache_bytes=1 << 30)
    expected = torch.stack([(torch.from_numpy(row).double() ** 2).sum() for row in x])
    assert torch.equal(row_sqnorms(store, torch.float64), expected)
    assert torch.equal(row_sqnorms(store), expected.float())


def test_check_indices_refuses_out_of_range_repeated_and_shared_rows():
    from alkit.checks import ParameterError
    from alkit.strategies._dense import check_indices

    cand, cent = check_indices([4, 0, 2], [1, 3], 5)
    assert cand.dtype == np.int64 and cand.tolist() == [4, 0, 2] and cent.tolist() == [1, 3]
    assert check_indices(np.arange(3), None, 3)[1] is None
    assert check_indices([], [], 3)[0].size == 0
    cases = [(([0, 5], None), "candidate_indices", "lie in"), (([0], [-1]), "center_indices", "lie in"),
             (([0, 2, 0], None), "candidate_indices", "repeat"), (([0], [1, 2, 1]), "center_indices", "repeat"),
             (([0, 3], [2, 3]), "candidate_indices", "disjoint")]
    for (cand_idx, cent_idx), param, words in cases:
        with pytest.raises(ParameterError, match=words) as err:
            check_indices(cand_idx, cent_idx, 5)
        assert err.value.param == param


def test_mean_rows_whole_or_evenly_sampled():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float16)
    idx = rng.permutation(50)[:23]
    exact = x[idx].astype(np.float64).mean(0)
    np.testing.assert_array_equal(mean_rows(x, idx, 5), exact)             # chunked: the same numbers
    np.testing.assert_array_equal(mean_rows(x, idx, 5, max_rows=23), exact)  # enough rows: all of them
    # more rows than max_rows: every ⌈23/6⌉ = 4th index, so 6 rows (idx[0], idx[4], …, idx[20])
    np.testing.assert_allclose(mean_rows(x, idx, 5, max_rows=6), x[idx[::4]].astype(np.float64).mean(0), rtol=1e-12)
    assert not mean_rows(x, np.empty(0, np.int64)).any()
