"""Exact neighbour searches for ProbCover and TypiClust: faiss's flat (brute-force) indexes, float32
candidates, float64 decisions where float32 cannot decide.

Three searches, each as named steps:

* :func:`ball_graph` — every pair of rows closer than δ, as a CSR graph (ProbCover).  Steps:
  :func:`_range_faiss` (faiss's range search on a flat L2 "index", the row block against the rows
  from that block on: each pair is measured once, the graph being symmetric), or
  :func:`_range_torch` on a GPU; the radius is widened by the float32 error bound, pairs within
  that bound of δ² are decided in float64 (:func:`_decide`), the rest by their float32 distance;
  then :func:`_symmetric_csr` mirrors them and adds the self-loops.
* :func:`kmeans_faiss` — seeded k-means: k-means++ seeds drawn from the caller's ``rng`` (the
  same draws as :func:`alkit.strategies._kmeans.lloyd_kmeans`), Lloyd iterations by
  ``faiss.Clustering``, then every row assigned to its nearest centroid by a flat index.
* :class:`ClusterKNN` — each point's nearest neighbours within one cluster (TypiClust): float32
  candidate lists from one symmetric product (on the CPU ``x @ x.T`` computes half of it), and
  :meth:`ClusterKNN.most_typical` decides in float64 among the points float32 cannot separate.
  faiss's ``knn`` was measured slower here (it computes both halves of the symmetric product):
  ``benchmarks/bench_faiss_paths.py``.

The decision rule ("exact"): a squared distance is the float64 Σ_d (x_d − y_d)² of the float32
rows (:func:`alkit.strategies._dense.sqdist64`, the numbers every reference uses); a float32 one
computed as ‖x‖² + ‖y‖² − 2⟨x, y⟩ is assumed within ``TIE_RTOL``·(‖x‖² + ‖y‖²) of it, the bound
coreset and balancing assume.

GPU: with ``device="cuda"``, k-means runs on faiss's GPU flat index when faiss-gpu is installed
(:func:`faiss_gpu`), else on the CPU; the graph's and the clusters' products run in torch on the
device (faiss has no range search on GPU flat indexes).  No GPU package is needed on the CPU path.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
import torch

from alkit.checks import ParameterError
from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import (
    DEFAULT_CACHE_BYTES, TIE_RTOL, RowStore, as_device, d2_draw, feature_store, row_sqnorms, sqdist64,
)



@functools.cache
def _faiss():
    import faiss   # faiss-cpu is a dependency; imported on first use (it takes a moment)

    return faiss


def faiss_gpu(device: str | torch.device | None) -> bool:
    """True when ``device`` is a CUDA device and the installed faiss has GPU support and sees a GPU."""
    if as_device(device).type != "cuda":
        return False
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.cache
def _gpu_resources():
    return _faiss().StandardGpuResources()


def flat_l2_index(dim: int, device: str | torch.device | None = None):
    """An exact (flat) L2 index: on the GPU when :func:`faiss_gpu`, else on the CPU."""
    faiss = _faiss()
    if faiss_gpu(device):
        dev = as_device(device)
        return faiss.GpuIndexFlatL2(_gpu_resources(), dim, faiss.GpuIndexFlatConfig() if dev.index is None else
                                    _gpu_config(dev.index))
    return faiss.IndexFlatL2(dim)


def _gpu_config(index: int):
    config = _faiss().GpuIndexFlatConfig()
    config.device = index
    return config


# ------------------------------------------------------------------------------ δ-ball graph
def ball_graph(store: RowStore, delta: float, max_edges: int, block_rows: int = 4096,
               search: str = "auto") -> sp.csr_matrix:
    """CSR adjacency (bool) of ‖x − y‖ < δ over the rows of ``store``, self-loops included, exact:
    a pair is an edge iff its float64 squared distance (:func:`sqdist64`) is below float(δ)²; a pair at
    exactly δ is not.  ``search``: "faiss" (range search), "torch" (products on the store's
    device), "auto" (faiss on the CPU, torch elsewhere).  More than ``max_edges`` edges: ValueError."""
    n = store.n
    radius2 = float(delta) ** 2
    if search == "auto":
        search = "faiss" if store.device.type == "cpu" else "torch"
    if search not in ("faiss", "torch"):
        raise ParameterError(f"search must be 'faiss', 'torch' or 'auto', got {search!r}", param="search")
    sq = row_sqnorms(store, torch.float64)
    sq_np = sq.cpu().numpy()
    slack = 2.0 * TIE_RTOL * float(sq_np.max(initial=0.0))
    found_r, found_c = [], []
    total = n   # the self-loops
    starts = range(0, n, block_rows)
    for a0 in starts:
        a1 = min(a0 + block_rows, n)
        rows = store.block(a0, a1)
        for b0 in range(a0, n, block_rows):   # the upper triangle of blocks
            b1 = min(b0 + block_rows, n)
            other = rows if b0 == a0 else store.block(b0, b1)
            if search == "faiss":
                r, c, d2 = _range_faiss(rows, other, radius2 + slack)
            else:
                r, c, d2 = _range_torch(rows, other, sq[a0:a1].float(), sq[b0:b1].float(), radius2 + slack)
            if b0 == a0:   # within the diagonal block each pair once, the self-pair not at all
                keep = c > r
                r, c, d2 = r[keep], c[keep], d2[keep]
            r, c = r + a0, c + b0
            edge = _decide(store, r, c, d2, sq_np, radius2)
            r, c = r[edge], c[edge]
            total += 2 * r.size
            if total > max_edges:
                raise ValueError(
                    f"delta={delta:g} gives more than max_edges={max_edges} edges on {n} points; "
                    "choose a smaller delta (or raise max_edges if memory allows)"
                )
            found_r.append(r)
            found_c.append(c)
    return _symmetric_csr(n, found_r, found_c)


def _range_faiss(rows: torch.Tensor, other: torch.Tensor, radius2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, float32 d²) of every pair with d² < ``radius2``: faiss's range search of ``rows``
    over a flat L2 index of ``other`` (run on the arrays in place, no index copy)."""
    faiss = _faiss()
    q = np.ascontiguousarray(rows.numpy(), np.float32)
    db = np.ascontiguousarray(other.numpy(), np.float32)
    result = faiss.RangeSearchResult(q.shape[0])
    faiss.range_search_L2sqr(faiss.swig_ptr(q), faiss.swig_ptr(db), q.shape[1], q.shape[0], db.shape[0],
                             float(radius2), result)
    lims = faiss.rev_swig_ptr(result.lims, q.shape[0] + 1).astype(np.int64)
    m = int(lims[-1])
    if m == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    cols = faiss.rev_swig_ptr(result.labels, m).copy().astype(np.int64)
    d2 = faiss.rev_swig_ptr(result.distances, m).copy()
    return np.repeat(np.arange(q.shape[0], dtype=np.int64), np.diff(lims)), cols, d2


def _range_torch(rows, other, sq_rows, sq_other, radius2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same pairs as :func:`_range_faiss`, from one float32 product on the tensors' device."""
    d2 = torch.addmm(sq_rows[:, None] + sq_other[None, :], rows, other.T, alpha=-2.0)
    r, c = torch.nonzero(d2 < radius2, as_tuple=True)
    return r.cpu().numpy(), c.cpu().numpy(), d2[r, c].cpu().numpy()


def _decide(store: RowStore, r: np.ndarray, c: np.ndarray, d2: np.ndarray, sq: np.ndarray,
            radius2: float) -> np.ndarray:
    """Which candidate pairs are edges: by their float32 d² where it is more than the error bound
    from δ², else by the float64 d² (few pairs: those within about 1e-5 of δ²)."""
    tol = TIE_RTOL * (sq[r] + sq[c])
    d2 = d2.astype(np.float64)
    edge = d2 < radius2 - tol
    unsure = np.flatnonzero(~edge & (d2 <= radius2 + tol))
    if unsure.size:
        edge[unsure] = pair_sqdist64(store, r[unsure], c[unsure]) < radius2
    return edge


def pair_sqdist64(store: RowStore, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """:func:`sqdist64` of the pairs (r[i], c[i]) of rows of ``store``: the very numbers the full
    float64 matrix has for them."""
    out = np.empty(r.size)
    order = np.argsort(r, kind="stable")
    firsts = np.flatnonzero(np.r_[True, r[order][1:] != r[order][:-1]])
    for start, stop in zip(firsts, np.r_[firsts[1:], r.size]):
        sel = order[start:stop]
        a = store.rows(r[sel[:1]]).cpu().numpy()
        b = store.rows(c[sel]).cpu().numpy()
        out[sel] = sqdist64(a, b)[0]
    return out


def _symmetric_csr(n: int, found_r: list[np.ndarray], found_c: list[np.ndarray]) -> sp.csr_matrix:
    """The pairs (r < c) in both directions plus every self-loop, as a CSR matrix with sorted rows."""
    r = np.concatenate(found_r) if found_r else np.empty(0, np.int64)
    c = np.concatenate(found_c) if found_c else np.empty(0, np.int64)
    diag = np.arange(n, dtype=np.int64)
    rows = np.concatenate([r, c, diag])
    cols = np.concatenate([c, r, diag])
    order = np.argsort(rows * n + cols)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((np.ones(rows.size, bool), cols[order].astype(np.int32), indptr), shape=(n, n))


# ------------------------------------------------------------------------------ k-means
#: The rows k-means is fitted on (both k-means here): this many per cluster, as faiss samples them,
#: and at most this many in all.
POINTS_PER_CENTROID = 256
MAX_FIT_POINTS = 131_072


def fit_positions(n: int, k: int, rng: np.random.Generator, points_per_centroid: int, max_fit_points: int) -> np.ndarray:
    """Sorted positions of the rows k-means is fitted on: min(``points_per_centroid``·k,
    ``max_fit_points``) drawn with ``rng`` (at least k), or all n if that is fewer."""
    n_fit = max(k, min(points_per_centroid * k, max_fit_points))
    return np.sort(rng.choice(n, size=n_fit, replace=False)) if n > n_fit else np.arange(n)


def centred_fit_rows(features: np.ndarray, rows: np.ndarray, normalize: bool,
                     chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fit rows as float32 (L2-normalised first if ``normalize``) minus their mean, that mean, and
    their squared norms (float64 sums rounded to float32).  Centred rows give smaller float32
    errors in ‖x‖² + ‖c‖² − 2⟨x, c⟩."""
    x = feature_store(features, rows, normalize=normalize, chunk_rows=chunk_rows, cache_bytes=0).block(0, rows.size)
    mu = x.double().mean(0).float()
    x = x - mu
    # Row by row the same sums as over the whole matrix at once, without its two float64 copies (4 GB
    # at 128 k × 2048).
    step = 16384
    sq = torch.cat([(x[s:s + step].double() ** 2).sum(1).float() for s in range(0, x.shape[0], step)])
    return x, mu, sq


def kmeans_pp_seeds(x: np.ndarray, sq: np.ndarray, k: int, rng: np.random.Generator) -> list[int]:
    """k-means++ seeding: positions of k rows of ``x`` (squared norms ``sq``, float64), the first
    uniform, each next one drawn ∝ D² (squared distance to the nearest seed so far) by inverse CDF
    with one ``rng.random()``; uniform among the rows not chosen once every D² is 0."""
    m = x.shape[0]
    first = int(rng.integers(m))
    chosen = [first]
    taken = np.zeros(m, bool)
    taken[first] = True
    d2 = np.maximum(sq + sq[first] - 2.0 * (x @ x[first]), 0.0)
    d2[first] = 0.0
    for _ in range(1, k):
        if not d2.sum() > 0:
            free = np.flatnonzero(~taken)
            j = int(free[rng.integers(free.size)])
        else:   # the D² draw BADGE uses (one uniform number, inverse CDF)
            j = d2_draw(d2, taken, rng.random())
        chosen.append(j)
        taken[j] = True
        np.minimum(d2, np.maximum(sq + sq[j] - 2.0 * (x @ x[j]), 0.0), out=d2)
        d2[chosen] = 0.0
    return chosen


def kmeans_faiss(
    features: np.ndarray,
    indices: np.ndarray,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    max_iter: int = 20,
    points_per_centroid: int = POINTS_PER_CENTROID,
    max_fit_points: int = MAX_FIT_POINTS,
    normalize: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | None = None,
    return_centroids: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Seeded k-means of ``features[indices]`` (TypiClust's): the fit rows and the k-means++ seeds
    drawn from ``rng`` exactly as :func:`alkit.strategies._kmeans.lloyd_kmeans` draws them, then
    up to ``max_iter`` Lloyd iterations by ``faiss.Clustering`` (float32 means; an emptied cluster is
    re-seeded by splitting a large one, faiss's rule, seeded from ``rng``), then every row assigned
    to its nearest centroid by a flat L2 index (on the GPU when :func:`faiss_gpu`).
    ``return_centroids``: also return the (K, D) float32 centroids, in the features' coordinates."""
    faiss = _faiss()
    indices = np.asarray(indices, np.int64)
    n = indices.size
    k = max(1, min(int(n_clusters), n))
    fit = fit_positions(n, k, rng, points_per_centroid, max_fit_points)
    x, mu, sq = centred_fit_rows(features, indices[fit], normalize, chunk_rows)
    x, mu = np.ascontiguousarray(x.numpy()), mu.numpy()
    seeds = kmeans_pp_seeds(x, sq.numpy().astype(np.float64), k, rng)
    params = faiss.ClusteringParameters()
    params.niter = int(max_iter)
    params.seed = int(rng.integers(2**31 - 1))
    params.max_points_per_centroid = max(1, -(-fit.size // k))   # no subsampling inside faiss: it is done above
    params.min_points_per_centroid = 1
    clustering = faiss.Clustering(x.shape[1], k, params)
    faiss.copy_array_to_vector(np.ascontiguousarray(x[seeds]).ravel(), clustering.centroids)
    clustering.train(x, flat_l2_index(x.shape[1], device))
    centroids = faiss.vector_to_array(clustering.centroids).reshape(k, x.shape[1])
    index = flat_l2_index(x.shape[1], device)
    index.add(centroids)
    if fit.size == n:
        ids = index.search(x, 1)[1].ravel().astype(np.int64)
    else:
        store = feature_store(features, indices, center=mu, normalize=normalize, chunk_rows=chunk_rows, cache_bytes=0)
        ids = np.empty(n, np.int64)
        for start, stop, block in store.chunks():
            ids[start:stop] = index.search(np.ascontiguousarray(block.numpy()), 1)[1].ravel()
    return (ids, centroids + mu) if return_centroids else ids


# ------------------------------------------------------------------------------ kNN in a cluster
class ClusterKNN:
    """The ``width`` nearest neighbours (sorted) of each of a cluster's points within the cluster.

    Candidates in float32 from the centred rows' product with themselves, each pair once (blocks
    of ``block_rows`` rows over the upper triangle, the diagonal ones by BLAS's symmetric product,
    each row keeping its ``width`` nearest so far; ``product="torch"``: row blocks on ``device``,
    for a GPU).  :meth:`most_typical` ranks by those float32
    distances and decides in float64 among the points they cannot separate, so it returns the
    point the float64 distances rank first.

    Memory O(s·width) plus a few blocks: the lists are kept as float32 distances and int32
    positions, and the rows themselves are not kept when ``rows`` is given (a function from
    positions to those float32 rows, called for the few float64 decisions): TypiClust builds one
    of these per cluster, and keeping every cluster's rows would hold a float32 copy of the pool
    (10 GB at ImageNet's 1.28 M × 2048)."""

    def __init__(self, x: np.ndarray, width: int, *, block_rows: int = 4096, product: str = "auto",
                 device: str | torch.device | None = None, rows=None) -> None:
        x = np.ascontiguousarray(x, np.float32)
        s = self.n = x.shape[0]
        self._rows = x.__getitem__ if rows is None else rows   # the bound method keeps x only when asked to
        xc = x - x.astype(np.float64).mean(0).astype(np.float32)
        sq = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
        self.width = width = min(width, s)
        dev = as_device(device)
        if product == "auto":
            product = "numpy" if dev.type == "cpu" else "torch"
        if product == "torch":
            vals, nbrs = _lists_torch(xc, sq, width, block_rows, dev)
        else:
            vals, nbrs = _lists_numpy(xc, sq, width, block_rows)
        del xc
        # float32 distances (√ of the float32 d²): read back as float64 they are the same numbers.
        self.dist, self.nbr = np.sqrt(np.maximum(vals, 0.0)), nbrs.astype(np.int32)
        # Bound on |float32 − float64| of any distance from each row: |√a − √b| ≤ |a − b| / (√a + √b)
        # and ≤ √|a − b|, with |a − b| ≤ tol; the nearest distance gives the largest bound.
        tol = TIE_RTOL * (sq + sq.max(initial=0.0))
        d1 = self.dist[:, 0].astype(np.float64) if width else np.zeros(s)
        with np.errstate(divide="ignore", invalid="ignore"):
            by_ratio = tol / (d1 + np.sqrt(np.maximum(d1 * d1 - tol, 0.0)))
        self.err = np.where(np.isfinite(by_ratio), np.minimum(by_ratio, np.sqrt(tol)), np.sqrt(tol))

    def mean_knn(self, avail: np.ndarray, k: int) -> np.ndarray | None:
        """Mean float32 distance to the k nearest available neighbours of every point (None: widen)."""
        ok = avail[self.nbr] & np.isfinite(self.dist)
        take = ok & (np.cumsum(ok, axis=1) <= k)
        if (take.sum(1)[avail] < k).any():
            return None
        return np.where(take, self.dist, np.float64(0.0)).sum(1) / k   # summed in float64

    def most_typical(self, free: np.ndarray, k: int) -> int | None:
        """Position of the free point of highest typicality 1 / (mean distance to its k nearest free
        neighbours + 1e-5), by float64 distances (ties: the lowest position); None: widen the lists."""
        mean = self.mean_knn(free, k)
        if mean is None:
            return None
        mean = np.where(free, mean, np.inf)
        ceiling = np.min(mean + self.err)   # the best float64 mean is at most this
        near = np.flatnonzero(free & (mean - self.err <= ceiling))
        if near.size == 1:
            return int(near[0])
        typ = np.array([1.0 / (self._exact_mean(p, free, k) + 1e-5) for p in near])
        return int(near[np.argmax(typ)])

    def _exact_mean(self, p: int, free: np.ndarray, k: int) -> float:
        """Mean float64 distance from point p to its k nearest free points.  A point off p's float32
        list is farther than its last entry; when that entry lies beyond the k-th free one by more
        than twice the error bound, no such point can be among the k nearest, so the list's free
        points suffice (s·D work becomes width·D)."""
        nbr, d32 = self.nbr[p].astype(np.int64), self.dist[p].astype(np.float64)
        ok = free[nbr] & np.isfinite(d32)
        listed = nbr[ok]
        complete = np.isfinite(d32).sum() == self.n - 1   # the list holds every other point
        if not complete and not d32[-1] > d32[ok][k - 1] + 2.0 * self.err[p]:
            listed = np.flatnonzero(free)
            listed = listed[listed != p]
        rows = self._rows(np.r_[p, listed])
        d = np.sqrt(sqdist64(rows[:1], rows[1:])[0])
        return float(np.sort(d)[:k].sum() / k)


def _lists_numpy(xc: np.ndarray, sq: np.ndarray, width: int, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``width`` smallest float32 d² to the other rows (sorted; +inf pads), and their
    positions: block pairs of the upper triangle, each merged into both its rows' and its columns' lists."""
    s = xc.shape[0]
    sq32 = sq.astype(np.float32)
    best_d = np.full((s, width), np.inf, np.float32)
    best_i = np.zeros((s, width), np.int64)
    side = min(block_rows, s)
    norms = np.empty((side, side), np.float32)   # reused: fresh large blocks page-fault
    # A pool per call, not one kept by the module: a kept pool's threads do not exist in a forked
    # child, whose map would then wait forever.
    n_threads = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(n_threads, thread_name_prefix="alkit-knn") as threads:
        for a0 in range(0, s, block_rows):
            a1 = min(a0 + block_rows, s)
            for b0 in range(a0, s, block_rows):
                b1 = min(b0 + block_rows, s)
                rows = xc[a0:a1]
                d2 = rows @ rows.T if b0 == a0 else rows @ xc[b0:b1].T   # the diagonal block: BLAS's symmetric product
                pair = np.add(sq32[a0:a1, None], sq32[None, b0:b1], out=norms[:a1 - a0, :b1 - b0])
                d2 *= -2.0
                d2 += pair   # ‖a‖² + ‖b‖² − 2⟨a, b⟩, the same float32 numbers as written that way
                if b0 == a0:
                    np.fill_diagonal(d2, np.inf)
                _keep_nearest(best_d, best_i, a0, d2, b0, threads, n_threads)
                if b0 != a0:
                    _keep_nearest(best_d, best_i, b0, np.ascontiguousarray(d2.T), a0, threads, n_threads)
    order = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_d, order, axis=1), np.take_along_axis(best_i, order, axis=1)


def _keep_nearest(best_d: np.ndarray, best_i: np.ndarray, r0: int, d2: np.ndarray, c0: int,
                  threads: ThreadPoolExecutor | None = None, n_threads: int = 1) -> None:
    """Merge the block ``d2`` (rows r0…, columns c0…) into those rows' lists of the smallest d².

    Rows are independent, so the block's rows are split among the ``n_threads`` of ``threads``
    (numpy's partition releases the GIL; single-threaded it took a sixth of TypiClust's time at
    1.28 M)."""
    parts = 1 if threads is None else max(1, min(n_threads, d2.shape[0] // 256))
    if parts == 1:
        return _keep_nearest_rows(best_d, best_i, r0, d2, c0)
    cuts = np.linspace(0, d2.shape[0], parts + 1).astype(int)
    list(threads.map(lambda a, b: _keep_nearest_rows(best_d, best_i, r0 + a, d2[a:b], c0), cuts[:-1], cuts[1:]))


def _keep_nearest_rows(best_d: np.ndarray, best_i: np.ndarray, r0: int, d2: np.ndarray, c0: int) -> None:
    width = best_d.shape[1]
    r1 = r0 + d2.shape[0]
    m = min(width, d2.shape[1])
    cand = np.argpartition(d2, m - 1, axis=1)[:, :m] if m < d2.shape[1] else np.broadcast_to(
        np.arange(d2.shape[1]), d2.shape)
    all_d = np.concatenate([best_d[r0:r1], np.take_along_axis(d2, cand, axis=1)], axis=1)
    all_i = np.concatenate([best_i[r0:r1], cand + c0], axis=1)
    keep = np.argpartition(all_d, width - 1, axis=1)[:, :width]
    best_d[r0:r1] = np.take_along_axis(all_d, keep, axis=1)
    best_i[r0:r1] = np.take_along_axis(all_i, keep, axis=1)


def _lists_torch(xc: np.ndarray, sq: np.ndarray, width: int, block_rows: int,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """The lists of :func:`_lists_numpy` from row blocks × all rows on ``device`` (a GPU)."""
    s = xc.shape[0]
    xt, sq_t = torch.from_numpy(xc).to(device), torch.from_numpy(sq).to(device).float()
    vals, nbrs = np.empty((s, width), np.float32), np.empty((s, width), np.int64)
    for start in range(0, s, block_rows):
        stop = min(start + block_rows, s)
        d2 = torch.addmm(sq_t[start:stop, None] + sq_t[None, :], xt[start:stop], xt.T, alpha=-2.0)
        d2[torch.arange(stop - start), torch.arange(start, stop)] = float("inf")
        v, i = torch.topk(d2, width, dim=1, largest=False, sorted=True)
        vals[start:stop], nbrs[start:stop] = v.cpu().numpy(), i.cpu().numpy()
    return vals, nbrs
