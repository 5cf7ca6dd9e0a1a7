"""ProbCover (Yehuda, Dekel, Hacohen, Weinshall, NeurIPS 2022): greedy max coverage of δ-balls.

Beyond the paper reproduced here (Emam et al. 2021).  On L2-normalised features, the graph has
an edge x → y iff ‖z_x − z_y‖ < δ (self-loops included) over labelled ∪ eligible points
(validation points excluded).  Points within δ of a labelled point start covered.  Greedy step,
as in the authors' code (``deep-al/pycls/al/prob_cover.py``): pick the point with the most
uncovered out-neighbours, mark them covered; ties are broken uniformly at random (``ties="first"``:
the lowest index, as the authors' ``argmax``, which makes the picks depend on the order the pool is
stored in — see DEVIATIONS.md).  Once everything is covered
(maximum degree 0) the remaining picks are uniform among the eligible points left (the
authors' loop would then return index 0 repeatedly).

δ: pass ``delta``; by default it is estimated without labels by the paper's purity rule: with
k-means pseudo-labels (K = C clusters, Lloyd's k-means of :mod:`alkit.strategies._kmeans`), a
ball B(x, δ) is pure when all its points share x's pseudo-label, i.e. δ ≤ d_diff(x), the
distance from x to the nearest point of another cluster; δ is the largest value with purity ≥
α = 0.95, i.e. the 5 % quantile of d_diff, measured on at most ``purity_sample`` balls against
every point.  As in the authors' code, δ is a property of
the data set, not of the round: it is estimated once per feature matrix, over all its rows
(features only, no labels) with a fixed seed ``delta_seed``, and so is the δ-graph.  The graph of
labelled ∪ eligible points that a round needs is the subgraph of that one induced by its rows,
the same edges a graph built on those rows alone would have.  Both depend on the features alone:
when the pool carries a :class:`alkit.pool.StrategyCache` they are kept in its ``shared`` dict,
which the loop keeps for a run and a sweep passes to every run on the same features, so later
rounds and seeds skip the O(N²·D) build; a one-off call without a cache computes them afresh
(same picks).  Where labelled ∪ eligible is under half the rows, δ and the graph are computed on
those rows only (and kept under a digest of those row ids).

The graph is exact: x → y iff the float64 squared distance of the two (float32, unit) rows is below
float(δ)², so a pair at exactly δ is not an edge (:func:`delta_graph_reference` states it in a few
lines).  It is built by faiss's range search on a flat index, block by block over the upper
triangle (each pair measured once, then mirrored), in float32 with the radius widened by the
float32 error bound; the few pairs within that bound of δ are decided in float64
(:func:`alkit.strategies._exact_search.ball_graph`).  It is kept as CSR (int32 neighbour ids),
O(|E|); more than ``max_edges`` edges raises a ValueError asking for a smaller δ.  Cost: about half
an N × N × D product to build, O(|E|) for the greedy picks.
"""
from __future__ import annotations

import functools
import hashlib

import numpy as np
import scipy.sparse as sp
import torch

from alkit.checks import ParameterError, check_float, check_int
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.strategies._dense import DEFAULT_CACHE_BYTES, RowStore, as_device, gather_rows, sqdist64
from alkit.strategies._exact_search import ball_graph
from alkit.strategies._kmeans import lloyd_kmeans
from alkit.strategies.registry import register

PURITY_ALPHA = 0.95
PURITY_SAMPLE = 2000
MAX_EDGES = 50_000_000
DELTA_SEED = 0

#: Keys of δ and of the δ-graph in ``StrategyCache.shared``; one graph is kept at a time (it can be GBs).
DELTA_KEY, GRAPH_KEY = ("probcover", "delta"), ("probcover", "graph")


def rows_key(rows: np.ndarray | None) -> str:
    """``"all"`` for every row, else a digest of the row ids ``rows`` (not of their features)."""
    return "all" if rows is None else hashlib.blake2b(np.ascontiguousarray(rows, np.int64).data, digest_size=16).hexdigest()


def normalised_store(features, indices, chunk_rows=DEFAULT_CHUNK_ROWS, cache_bytes=DEFAULT_CACHE_BYTES, device=None) -> RowStore:
    """Rows ``features[indices] / ‖·‖`` (zero rows stay zero) as a float32 :class:`RowStore`."""
    indices = np.asarray(indices, np.int64)

    def load(start, stop):
        x = gather_rows(features, indices[start:stop], chunk_rows)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norm > 0, norm, 1.0)

    return RowStore(indices.size, features.shape[1], load, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=device)


def row_cache_bytes(cache_bytes: int | None, device: str | torch.device | None) -> int:
    """The row cache for ``cache_bytes`` (None: :data:`DEFAULT_CACHE_BYTES` on the CPU; on a GPU, half
    of its free memory, since re-reading rows per block pair would leave it waiting on the host)."""
    if cache_bytes is not None:
        if cache_bytes < 0:
            raise ParameterError(f"cache_bytes must be >= 0 or None, got {cache_bytes}", param="cache_bytes")
        return int(cache_bytes)
    dev = as_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0] // 2)
    return DEFAULT_CACHE_BYTES


def delta_graph_reference(unit_rows: np.ndarray, delta: float) -> sp.csr_matrix:
    """The δ-graph by definition: ‖x − y‖² < δ² on every pair of ``unit_rows`` (float64 distances;
    dense, so for small sets): what :func:`delta_graph` builds, edge for edge."""
    return sp.csr_matrix(sqdist64(unit_rows, unit_rows) < float(delta) ** 2)


def delta_graph(store: RowStore, delta: float, max_edges: int = MAX_EDGES, block_rows: int = 4096,
                search: str = "auto") -> sp.csr_matrix:
    """CSR adjacency (bool) of ‖x − y‖ < δ over the rows of ``store`` (unit vectors), self-loops
    included: the edges of :func:`delta_graph_reference`, by faiss's range search ("torch": one
    float32 product per block pair on the store's device; "auto": faiss on the CPU, torch on a GPU)."""
    return ball_graph(store, delta, max_edges, block_rows, search)


def estimate_delta(
    store: RowStore,
    pseudo_labels: np.ndarray,
    rng: np.random.Generator,
    alpha: float = PURITY_ALPHA,
    sample: int = PURITY_SAMPLE,
) -> float:
    """Largest δ with ball purity ≥ ``alpha`` under ``pseudo_labels`` (ProbCover's rule), on ≤ ``sample`` balls.

    d_diff(x), the distance from a sampled centre x to the nearest point of another pseudo-class, is
    found in float32; δ is the float64 distance (:func:`sqdist64`) of the pair at the (1 − α)
    quantile, rounded down to the largest float whose square does not exceed it, so that under the
    graph's exact rule (an edge iff d² < δ²) that point stays outside the ball, as purity needs."""
    n = store.n
    centres = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    x = store.rows(centres)
    lab_c = torch.from_numpy(pseudo_labels[centres]).to(x.device)
    d_diff = torch.full((centres.size,), float("inf"), device=x.device)
    partner = torch.zeros(centres.size, dtype=torch.int64, device=x.device)
    for start, stop, other in store.chunks():
        d2 = (2.0 - 2.0 * (x @ other.T)).clamp(min=0)
        same = lab_c[:, None] == torch.from_numpy(pseudo_labels[start:stop]).to(x.device)[None, :]
        d2[same] = float("inf")
        nearest, where = d2.min(dim=1)
        closer = nearest < d_diff
        d_diff = torch.where(closer, nearest, d_diff)
        partner = torch.where(closer, where + start, partner)
    d = np.sqrt(d_diff.cpu().numpy())  # +inf where the sample sees one pseudo-class only
    at = np.argsort(d, kind="stable")[min(int(np.floor((1.0 - alpha) * d.size)), d.size - 1)]
    if not np.isfinite(d[at]):
        return 2.0  # every ball pure: the diameter of the unit sphere
    pair_d2 = float(sqdist64(store.rows(centres[at:at + 1]).cpu().numpy(),
                             store.rows(partner[at:at + 1].cpu().numpy()).cpu().numpy())[0, 0])
    delta = float(np.sqrt(pair_d2))
    while delta * delta > pair_d2:
        delta = float(np.nextafter(delta, 0.0))
    return delta


def check_ties(ties: str) -> None:
    if ties not in ("random", "first"):
        raise ParameterError(f"ties must be 'random' or 'first', got {ties!r}", param="ties")


def purity_delta(
    features,
    rows: np.ndarray,
    num_classes: int,
    *,
    alpha: float = PURITY_ALPHA,
    sample: int = PURITY_SAMPLE,
    seed: int = DELTA_SEED,
    store: RowStore | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    device: str | None = None,
) -> float:
    """ProbCover's default δ for ``features[rows]``: k-means pseudo-labels (:func:`lloyd_kmeans`,
    K = ``num_classes``, normalised rows), then :func:`estimate_delta`, both drawn from
    ``default_rng(seed)``.  ``store``: the normalised rows if already built (else built here)."""
    seeded = np.random.default_rng(seed)
    # Lloyd's k-means with float64 means, not TypiClust's faiss one, so that δ (and hence the graph)
    # stays what it has been; this k-means is not where the time goes (O(N·K·D) against the
    # graph's O(N²·D)).
    pseudo = lloyd_kmeans(features, rows, num_classes, seeded, normalize=True, chunk_rows=chunk_rows, device=device)
    if store is None:
        store = normalised_store(features, rows, chunk_rows, device=as_device(device))
    return estimate_delta(store, pseudo, seeded, alpha, sample)


def max_coverage_greedy(
    graph: sp.csr_matrix, covered_by: np.ndarray, eligible: np.ndarray, k: int, rng: np.random.Generator,
    ties: str = "random",
) -> np.ndarray:
    """Greedy max coverage: positions of ``k`` eligible points, each covering the most uncovered
    out-neighbours; ``covered_by`` are the positions whose balls start covered.  Ties for the most:
    ``"random"`` (uniform, rng) or ``"first"`` (lowest position, the authors' argmax)."""
    check_ties(ties)
    n = graph.shape[0]
    graph_t = graph.T.tocsr()  # in-neighbours: who covers y
    covered = np.zeros(n, bool)
    start_rows = graph[np.asarray(covered_by, np.int64)]
    covered[start_rows.indices] = True
    degrees = graph @ (~covered).astype(np.int64)
    degrees = np.asarray(degrees).ravel()
    degrees[~eligible] = -1
    taken = np.zeros(n, bool)
    picks: list[int] = []
    for _ in range(min(k, int(eligible.sum()))):
        j = int(np.argmax(degrees))
        if ties == "random" and degrees[j] > 0:
            tied = np.flatnonzero(degrees == degrees[j])
            if tied.size > 1:
                j = int(tied[rng.integers(tied.size)])
        if degrees[j] <= 0:  # all covered: uniform among the eligible points left
            free = np.flatnonzero(eligible & ~taken)
            j = int(free[rng.integers(free.size)])
        else:
            nbrs = graph.indices[graph.indptr[j]:graph.indptr[j + 1]]
            new = nbrs[~covered[nbrs]]
            covered[new] = True
            if new.size:
                who = np.concatenate([graph_t.indices[graph_t.indptr[y]:graph_t.indptr[y + 1]] for y in new])
                degrees -= np.bincount(who, minlength=n)
        taken[j] = True
        degrees[j] = -1
        picks.append(j)
    return np.asarray(picks, np.int64)


@register("probcover", reference="Yehuda, Dekel, Hacohen, Weinshall 2022 (NeurIPS), ProbCover")
def probcover(
    pool: PoolState,
    budget: int,
    rng: np.random.Generator,
    *,
    delta: float | None = None,
    alpha: float = PURITY_ALPHA,
    purity_sample: int = PURITY_SAMPLE,
    max_edges: int = MAX_EDGES,
    delta_seed: int = DELTA_SEED,
    ties: str = "random",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    cache_bytes: int | None = None,
    device: str | None = None,
) -> np.ndarray:
    """ProbCover: on the graph ‖z_x − z_y‖ < δ (unit-normalised features), greedily take the point covering the most uncovered points.

    Yehuda, Dekel, Hacohen, Weinshall, "Active Learning Through a Covering Lens", NeurIPS 2022.
    Maximises |∪_{x∈L∪S} B(x, δ)| greedily: x* = argmax_x |B(x, δ) \\ covered|.  δ defaults to
    the largest radius whose balls are ≥ 95 % pure under k-means pseudo-labels (K = C), estimated
    once per feature matrix with the seed ``delta_seed`` (``rng`` only breaks ties).
    ``ties``: how ties for the largest gain are broken, ``"random"`` (rng) or ``"first"``
    (the authors' lowest index).  δ and the graph are kept in ``pool.cache.shared`` when the pool
    has a cache (see the module docstring).  ``cache_bytes``: the normalised float32 rows are kept
    in memory (on ``device``) when they fit, else every block pair of the graph re-reads and
    re-normalises its rows from the features; None: 2 GiB on the CPU, half the free memory of a
    GPU (:func:`row_cache_bytes`).  At ImageNet's 1.28 M × 2048 the rows take 10.5 GB: on the CPU
    pass ``cache_bytes=11 * 2**30`` where RAM allows.  The picks do not depend on it.
    """
    check_float(delta, "delta", low=0, low_open=True, none=True)
    check_float(alpha, "alpha", low=0, high=1, low_open=True)
    check_int(purity_sample, "purity_sample", low=1)
    check_int(max_edges, "max_edges", low=1)
    check_int(delta_seed, "delta_seed", low=0)
    check_int(chunk_rows, "chunk_rows", low=1)
    check_int(cache_bytes, "cache_bytes", low=0, none=True)
    check_ties(ties)   # before the graph build, which can take minutes
    row_cache = row_cache_bytes(cache_bytes, device)
    relevant = np.flatnonzero(pool.labeled & ~pool.held_out | pool.eligible).astype(np.int64)
    eligible = pool.eligible[relevant]
    on_all_rows = 2 * relevant.size >= pool.size   # share δ and the graph with every round and seed
    rows = np.arange(pool.size, dtype=np.int64) if on_all_rows else relevant
    kept = None if pool.cache is None else pool.cache.shared
    key = rows_key(None if on_all_rows else rows)

    @functools.cache
    def store() -> RowStore:   # built only when δ or the graph is not kept already
        return normalised_store(pool.features, rows, chunk_rows, cache_bytes=row_cache, device=as_device(device))

    if delta is None:
        delta_key = (*DELTA_KEY, key, pool.num_classes, float(alpha), int(purity_sample), int(delta_seed))
        if kept is not None and delta_key in kept:
            delta = kept[delta_key]
        else:
            delta = purity_delta(pool.features, rows, pool.num_classes, alpha=alpha, sample=purity_sample,
                                 seed=delta_seed, store=store(), chunk_rows=chunk_rows, device=device)
            if kept is not None:
                kept[delta_key] = delta
    if not delta > 0:
        raise ParameterError(f"delta must be positive, got {delta}", param="delta")
    graph_key = (*GRAPH_KEY, key, float(delta), int(max_edges))
    if kept is not None and graph_key in kept:
        graph = kept[graph_key]
    else:
        graph = delta_graph(store(), float(delta), max_edges)
        if kept is not None:
            for old in [k for k in kept if isinstance(k, tuple) and k[:2] == GRAPH_KEY]:
                del kept[old]
            kept[graph_key] = graph
    if on_all_rows:
        graph = graph[relevant][:, relevant]   # induced subgraph, in the order of relevant
    picks = max_coverage_greedy(graph, np.flatnonzero(~eligible), eligible, budget, rng, ties)
    return relevant[picks]
