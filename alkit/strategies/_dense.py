"""Dense kernels shared by the diversity strategies (coreset, BADGE, balancing, ...).

Rows of a feature matrix (possibly a float16 memory map) are gathered once, in sorted
order, and streamed as float32 torch chunks.  They are kept in memory as float32 when that
fits ``cache_bytes``; else in their source dtype (float16 stays float16) when that fits; else
re-read from the source on every pass.  Extra memory is therefore bounded by ``cache_bytes``
plus one chunk, whatever N is.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterator

import numpy as np
import torch
from scipy.spatial.distance import cdist

from alkit.checks import ParameterError
from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.rows import as_tensor, gather_rows, read_rows

#: Default memory budget (bytes) for rows cached by a strategy (features, or p − e_ŷ).
DEFAULT_CACHE_BYTES = 2 * 1024**3
#: Relative tolerance of a float32 squared distance ‖x‖² + ‖y‖² − 2⟨x, y⟩ against the exact one, in
#: units of ‖x‖² + ‖y‖²: candidates that close to a decision are re-ranked in float64 (coreset,
#: balancing, TypiClust's neighbours).
TIE_RTOL = 1e-5
#: Column block when comparing many rows against many centres (rows × block float32 temp).
DEFAULT_CENTER_BLOCK = 1024


def check_indices(candidate_indices: np.ndarray, center_indices: np.ndarray | None, n_rows: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The index contract of the diversity engines and their references: both sets as int64
    vectors within ``[0, n_rows)``, no repeats, disjoint (``center_indices`` None stays None)."""
    cand = np.asarray(candidate_indices, np.int64).ravel()
    cent = None if center_indices is None else np.asarray(center_indices, np.int64).ravel()
    marks = {}   # per set, a mask over the rows: repeats and overlaps in O(n_rows), without sorting
    for name, idx in (("candidate_indices", cand), ("center_indices", cent)):
        if idx is None or not idx.size:
            continue
        if idx.min() < 0 or idx.max() >= n_rows:
            raise ParameterError(f"{name} must lie in [0, {n_rows}) (rows of features)", param=name)
        mark = np.zeros(n_rows, bool)
        mark[idx] = True
        if np.count_nonzero(mark) != idx.size:
            raise ParameterError(f"{name} must not repeat an index", param=name)
        marks[name] = mark
    if len(marks) == 2 and np.count_nonzero(marks["candidate_indices"][cent]):
        raise ParameterError("candidate_indices and center_indices must be disjoint", param="candidate_indices")
    return cand, cent


def d2_draw(d2: np.ndarray, chosen: np.ndarray, u: float) -> int:
    """Inverse-CDF draw of a position with probability ∝ D² (chosen points weigh 0).

    ``u`` is one uniform number in [0, 1): the position is the first j with
    Σ_{i≤j} w_i > u·Σ w.  If every weight is 0 (all points coincide with a centre, or the model
    is certain everywhere so every g = 0), the draw is uniform over the points not yet chosen.
    """
    w = np.where(chosen, 0.0, np.nan_to_num(np.maximum(d2, 0.0), nan=0.0, posinf=0.0))
    cdf = np.cumsum(w)
    total = cdf[-1] if cdf.size else 0.0
    if not total > 0.0:
        free = np.flatnonzero(~chosen)
        return int(free[min(int(u * free.size), free.size - 1)])
    j = int(np.searchsorted(cdf, u * total, side="right"))
    if j >= w.size or w[j] == 0.0:  # u·total rounded onto the end: the last positive weight
        j = int(np.flatnonzero(w > 0)[-1])
    return j


def d2_probabilities(d2: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The k-means++ sampling distribution P(j) = D²_j / Σ D² (chosen points 0; uniform if all 0)."""
    w = np.where(chosen, 0.0, np.maximum(d2, 0.0))
    total = w.sum()
    if not total > 0:
        return (~chosen) / max((~chosen).sum(), 1)
    return w / total


def sqdist64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact-as-possible squared Euclidean distances in float64: Σ_d (a_d − b_d)², pair by pair.

    Used by every *reference* implementation and by the fast paths' near-tie refinement, so
    both see the very same float64 numbers for the same pair of points.
    """
    return cdist(np.asarray(a, np.float64), np.asarray(b, np.float64), "sqeuclidean")


def as_device(device: str | torch.device | None) -> torch.device:
    return torch.device("cpu" if device is None else device)


class RowStore:
    """Rows of a matrix, streamed as float32 torch chunks of at most ``chunk_rows`` rows.

    ``load(start, stop)`` returns rows ``start:stop`` as a float32 numpy array (this is where a
    transform, e.g. centring or p − e_ŷ, happens).  The result is cached in float32 when
    ``n × width × 4 ≤ cache_bytes``; else, if ``native`` (a (n, width) array in a smaller dtype
    plus a float32 transform of its chunks) fits, that is cached; else every pass re-loads.
    """

    def __init__(
        self,
        n: int,
        width: int,
        load: Callable[[int, int], np.ndarray],
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        device: torch.device | str | None = None,
        native: tuple[Callable[[int, int], np.ndarray], Callable[[torch.Tensor], torch.Tensor], int] | None = None,
        take: Callable[[np.ndarray], np.ndarray] | None = None,
        load_into: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> None:
        self.n, self.width = int(n), int(width)
        self.chunk_rows = max(1, int(chunk_rows))
        self.device = as_device(device)
        self._load = load
        self._take = take
        self._load_into = load_into if self.device.type == "cpu" else None
        self._f32: torch.Tensor | None = None
        self._native: torch.Tensor | None = None
        self._native_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        if self.n * self.width * 4 <= cache_bytes:
            self._f32 = torch.empty((self.n, self.width), dtype=torch.float32, device=self.device)
            for start in range(0, self.n, self.chunk_rows):
                stop = min(start + self.chunk_rows, self.n)
                self._f32[start:stop] = torch.from_numpy(np.ascontiguousarray(load(start, stop))).to(self.device)
            self.mode = "float32 cache"
        elif native is not None and self.n * self.width * native[2] <= cache_bytes:
            native_load, self._native_fn, _ = native
            first = np.asarray(native_load(0, min(self.chunk_rows, self.n)))
            self._native = torch.empty((self.n, self.width), dtype=torch.from_numpy(first[:0]).dtype, device=self.device)
            for start in range(0, self.n, self.chunk_rows):
                stop = min(start + self.chunk_rows, self.n)
                self._native[start:stop] = torch.from_numpy(np.ascontiguousarray(native_load(start, stop))).to(self.device)
            self.mode = "native-dtype cache"
        else:
            self.mode = "streamed"

    @property
    def nbytes(self) -> int:
        if self._f32 is not None:
            return self._f32.numel() * 4
        if self._native is not None:
            return self._native.numel() * self._native.element_size()
        return 0

    def block(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` as a float32 tensor on the device."""
        if self._f32 is not None:
            return self._f32[start:stop]
        if self._native is not None:
            return self._native_fn(self._native[start:stop])
        return torch.from_numpy(np.ascontiguousarray(self._load(start, stop), dtype=np.float32)).to(self.device)

    def rows(self, positions: np.ndarray) -> torch.Tensor:
        """Arbitrary rows (by position) as a float32 tensor."""
        positions = np.asarray(positions, np.int64)
        if self._f32 is not None:
            return self._f32[torch.from_numpy(positions).to(self.device)]
        if self._native is not None:
            return self._native_fn(self._native[torch.from_numpy(positions).to(self.device)])
        if self._take is not None:   # one sorted read of the rows, not one read per row
            return torch.from_numpy(np.ascontiguousarray(self._take(positions), dtype=np.float32)).to(self.device)
        return torch.cat([self.block(int(p), int(p) + 1) for p in positions]) if positions.size else torch.empty(
            (0, self.width), dtype=torch.float32, device=self.device
        )

    def chunks(self, chunk_rows: int | None = None) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(start, stop, rows)`` over the store, ``chunk_rows`` rows at a time (default: the store's);
        outside the float32 cache a chunk is a fresh float32 copy, so never more than the store's
        ``chunk_rows`` (balancing once asked for 2²⁴ rows: a 10 GB copy per pass at 1.28 M)."""
        step = self.chunk_rows if chunk_rows is None else max(1, int(chunk_rows))
        if self._f32 is None:
            step = min(step, self.chunk_rows)
        if self.mode == "streamed" and self._load_into is not None:
            # Streamed (given ``load_into``): the chunks of one pass share one float32 buffer, each
            # valid until the next is drawn; a fresh 100 MB array per chunk cost more in page faults
            # than the read itself.
            buffer = torch.empty((min(step, self.n), self.width), dtype=torch.float32)
            for start in range(0, self.n, step):
                stop = min(start + step, self.n)
                self._load_into(start, stop, buffer[: stop - start])
                yield start, stop, buffer[: stop - start]
            return
        for start in range(0, self.n, step):
            stop = min(start + step, self.n)
            yield start, stop, self.block(start, stop)


def feature_store(
    features: np.ndarray,
    indices: np.ndarray,
    *,
    center: np.ndarray | None = None,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: torch.device | str | None = None,
) -> RowStore:
    """A :class:`RowStore` over ``features[indices] − center`` (float32; centring optional).

    ``normalize`` divides each row by its L2 norm first (zero rows stay zero)."""
    indices = np.asarray(indices, np.int64)
    shift = None if center is None else np.asarray(center, np.float32)
    dev = as_device(device)
    shift_cpu = None if shift is None else torch.from_numpy(shift)
    shift_t = None if shift is None else shift_cpu.to(dev)

    def load(start: int, stop: int) -> np.ndarray:
        return take(indices[start:stop])

    def take(rows: np.ndarray) -> np.ndarray:
        block = gather_rows(features, rows, chunk_rows)
        transform_(torch.from_numpy(block))
        return block

    def transform_(rows: torch.Tensor) -> None:
        """Normalise (if asked), then centre, float32 CPU rows in place."""
        if normalize:
            block = rows.numpy()
            norm = np.linalg.norm(block, axis=1, keepdims=True)
            block /= np.where(norm > 0, norm, 1.0)
        if shift_cpu is not None:
            rows.sub_(shift_cpu)   # one rounding per element, as numpy's subtraction: the same numbers

    def native_load(start: int, stop: int) -> np.ndarray:
        return gather_rows(features, indices[start:stop], chunk_rows, dtype=features.dtype)

    def native_fn(t: torch.Tensor) -> torch.Tensor:
        t = t.to(torch.float32)
        return t - shift_t if shift_t is not None else t

    def load_into(start: int, stop: int, out: torch.Tensor) -> None:
        """``load(start, stop)`` written into ``out``: the same float32 numbers, no new array."""
        wanted = indices[start:stop]
        runs = _contiguous_runs(wanted)
        if runs is not None:   # sorted rows with few gaps (a pool less its labelled points): each run
            span = as_tensor(features[int(wanted[0]):int(wanted[-1]) + 1])   # is read and converted once
            base = int(wanted[0])
            for a, b in runs:
                out[a:b].copy_(span[int(wanted[a]) - base:int(wanted[b - 1]) - base + 1])
        else:
            rows = read_rows(features, wanted, out)
            if rows.data_ptr() != out.data_ptr():   # float32 features come back as a view or a copy
                out.copy_(rows)
        transform_(out)

    itemsize = np.dtype(features.dtype).itemsize
    native = (native_load, native_fn, itemsize) if itemsize < 4 and not normalize else None
    return RowStore(indices.size, features.shape[1], load, chunk_rows=chunk_rows, cache_bytes=cache_bytes,
                    device=dev, native=native, take=lambda positions: take(indices[positions]), load_into=load_into)


def _contiguous_runs(rows: np.ndarray, max_runs_share: float = 1 / 32) -> list[tuple[int, int]] | None:
    """``[(a, b), ...]``: positions of the runs of consecutive ids in the ascending ``rows``; None
    when they are not ascending or there are too many runs (then gathering is cheaper)."""
    if rows.size == 0:
        return None
    steps = np.diff(rows)
    if (steps <= 0).any():
        return None
    breaks = np.flatnonzero(steps != 1) + 1
    if breaks.size + 1 > max(1, int(rows.size * max_runs_share)):
        return None
    edges = np.concatenate(([0], breaks, [rows.size]))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


#: Rows squared at a time by :func:`row_sqnorms`: their float64 copy (4 MB at D = 2048) stays in cache.
_SQNORM_ROWS = 256


def row_sqnorms(store: RowStore, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """‖row‖² of every row of ``store`` (float64 accumulation, result in ``dtype``)."""
    out = torch.empty(store.n, dtype=dtype, device=store.device)
    for start, stop, block in store.chunks():
        # In cache-sized blocks: 15x faster than squaring a whole chunk's float64 copy, and each
        # row's sum is the same either way.
        for b0 in range(0, stop - start, _SQNORM_ROWS):
            part = block[b0:b0 + _SQNORM_ROWS].double()
            out[start + b0:start + b0 + part.shape[0]] = (part ** 2).sum(1).to(dtype)
    return out


#: Rows a centring mean is taken over (:func:`mean_rows`): evenly spaced, when there are more.
CENTRE_SAMPLE_ROWS = 1 << 16


def mean_rows(features: np.ndarray, indices: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS,
              max_rows: int | None = None) -> np.ndarray:
    """Float64 mean of ``features[indices]`` in one chunked pass (zeros if no index).

    ``max_rows``: average every ⌈n / max_rows⌉-th row only.  Engines that centre their rows for
    float32 arithmetic need a point near the middle, not the exact mean: distances do not depend
    on it.  At 1.28 M × 2048 float16 rows the full mean costs 7.6 s, 65,536 rows 0.3 s."""
    indices = np.asarray(indices, np.int64)
    if max_rows is not None and indices.size > max_rows:
        indices = indices[::-(-indices.size // max_rows)]
    total = np.zeros(features.shape[1], np.float64)
    for start in range(0, indices.size, chunk_rows):
        total += gather_rows(features, indices[start:start + chunk_rows], chunk_rows, np.float64).sum(0)
    return total / max(indices.size, 1)


#: Below this many multiply-adds per pass, torch runs single-threaded: intra-op threading of
#: tiny matrix-vector products costs milliseconds per call on a busy CPU (measured: 5.6 ms vs
#: 0.03 ms for a 1900×10 product with 2 threads on a loaded 2-core machine).
SMALL_WORK = 1 << 22


class torch_threads:
    """Context: run torch on one thread when a call is small (``work`` < :data:`SMALL_WORK`), or
    when asked (``one``).

    The previous thread count is restored on exit; nothing changes for large calls or GPUs.
    Used by :func:`alkit.strategies.registry.select` around the strategy call (a strategy
    itself never changes the process-wide thread count).
    """

    def __init__(self, work: int, device: str | torch.device | None = None, one: bool = False) -> None:
        self.small = as_device(device).type == "cpu" and (work < SMALL_WORK or one)
        self.saved = None

    def __enter__(self) -> "torch_threads":
        if self.small:
            self.saved = torch.get_num_threads()
            if self.saved != 1:
                torch.set_num_threads(1)
        return self

    def __exit__(self, *exc) -> None:
        if self.saved is not None and self.saved != 1:
            torch.set_num_threads(self.saved)


#: Distance strategies square feature differences in float32: beyond about 2⁶⁰ they overflow (coreset
#: returned duplicate picks, faiss's k-means aborted the process), below about 2⁻⁶⁰ they vanish.
#: Features whose largest |value| lies outside [2⁻³⁰, 2³⁰] are scaled by a power of two first, which
#: is exact in floating point and changes no distance ranking.
WELL_SCALED = (2.0 ** -30, 2.0 ** 30)


def power_of_two_scale(features: np.ndarray, chunk_rows: int = 65_536) -> float:
    """1.0 for features of ordinary scale, else the power of two that brings their largest |value|
    into [1, 2)."""
    largest = 0.0
    for start in range(0, features.shape[0], chunk_rows):
        block = np.asarray(features[start:start + chunk_rows])
        if block.size:
            largest = max(largest, float(np.abs(block).max()))
    if largest == 0.0 or WELL_SCALED[0] <= largest <= WELL_SCALED[1]:
        return 1.0
    return float(2.0 ** -np.floor(np.log2(largest)))


def with_well_scaled_features(pool, chunk_rows: int = 65_536):
    """``pool``, or (features of extreme scale) a copy of it whose features are scaled by
    :func:`power_of_two_scale`: the same picks for any strategy whose picks depend on distance
    rankings only.  The copy has no run cache (the cache is bound to the original features)."""
    scale = power_of_two_scale(pool.features, chunk_rows)
    if scale == 1.0:
        return pool
    features = np.asarray(pool.features)
    return replace(pool, features=(features * np.asarray(scale, features.dtype)).astype(features.dtype, copy=False),
                   cache=None)
