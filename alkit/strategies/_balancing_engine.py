"""The fast exact engine of greedy balancing (the method, its fixes and the plain reference are in
:mod:`alkit.strategies.balancing`).

On rows z = x − μ̄ centred by the pool mean (float32), a balancing step needs two things:
  * The numerator ‖z − μ_r‖² of every row, kept per (rarest class r, its count).  When r or its
    count changes it is recomputed: from G = Z·Sᵀ, the products of every row with every class's
    centred sum S_c = Σ_{i∈c} z_i (C × n float64, kept when it fits ``cache_bytes`` and C ≤ k;
    built in the pass that computes ‖z‖²; a pick counted to class c makes row c stale, and stale
    rows are recomputed together, in one GEMM, when the numerator needs one of them), or else by
    a pass over the features.  At 1.28 M the rarest class stays the rarest for tens of steps:
    its near points are predicted as other classes.
  * The denominator min_{c∈M} ‖z − μ_c‖², lazily.  Per row the engine keeps an upper bound on
    the distance to its nearest majority centre: the distance to the centre of its class a when
    the row was last scored, plus how far a's centre has moved since (the sum of its per-pick
    moves, triangle inequality; ∞ once a leaves M; a class joining M only lowers the minimum).
    An upper bound on the denominator is a lower bound on the score, kept per row from step to
    step and renewed only for the rows of classes that moved.  A step then brings up to date,
    lowest bound first, only the rows whose bound reaches the highest possible score of the best
    exact row: first by the distance to their own class's centre now (one product per row),
    then, for those still below, against the whole majority.  At 1.28 M most picks are
    predicted as a majority class and move its centre: refolding that centre into every row
    cost a pass over the file per step, where the bounds cost a few vector operations and a few
    hundred rows.  A step that would rescore more than a quarter of the rows makes one pass.
  A random step costs O(k).  The float32 / G-based num and den carry rounding of order
  ε₃₂·(‖z‖² + ‖μ_c‖²), far below the tolerance (ε₃₂ ≈ 6·10⁻⁸ against ``tie_rtol`` = 10⁻⁵); every
  point whose score interval, num and den widened by ``tie_rtol``·(max‖z‖² + max‖μ_c‖²),
  reaches the best point's is re-ranked with float64 scores computed as
  :func:`~alkit.strategies.balancing.balancing_reference` computes them, so the picks equal the
  reference's.

The file reads top-down: :func:`balancing_greedy` (the algorithm), then its steps — a balancing
step (:func:`_balanced_pick`: the numerator, the lazy denominator, the lowest score, near ties), a
random step (:func:`_random_pick`), taking a point (:func:`_take`) — then the distance kernels
they share, then the small helpers.  Every step reads and updates one :class:`_State`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import (
    CENTRE_SAMPLE_ROWS,
    DEFAULT_CACHE_BYTES,
    DEFAULT_CENTER_BLOCK,
    TIE_RTOL,
    RowStore,
    as_device,
    feature_store,
    gather_rows,
    mean_rows,
    sqdist64,
)

#: Predicted class of rows: an (N,) int array, or ``f(global_indices) -> classes``; None: unknown.
Predictor = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]

#: Near ties are re-ranked in float64 this many rows at a time (bounds the float64 copy of the rows).
_RERANK_ROWS = 4096
#: The lazy denominator first rescores this many rows of lowest score bound (then every row that may beat them).
_SEED_ROWS = 16
#: The denominator's bounds are padded by at least this × (max ‖z‖² + max ‖μ_c‖²) (float32 rounding).
_MIN_BOUND_RTOL = 1e-6
#: More classes than this moved since the last step: every row's score bound is renewed at once.
_MAX_CHANGED_CLASSES = 16
#: The lazy denominator tightens and rescores rows this many at a time, lowest score bound first.
_BATCH_ROWS = 256


@dataclass(frozen=True)
class BalancingStats:
    """What one call of :func:`balancing_greedy` did: its steps and its passes over the features."""

    balancing_steps: int = 0  # steps that took the lowest score
    random_steps: int = 0     # steps that took a uniformly random point
    full_passes: int = 0      # passes over every candidate row: the set-up pass and, streamed path, each distance pass
    gram_flushes: int = 0     # batched recomputations of the stale rows of G
    gram_rows: int = 0        # rows of G computed in all (the set-up's included)
    rows_rescored: int = 0    # rows whose nearest majority centre was recomputed one by one (the lazy denominator)


@dataclass
class _Geometry:
    """The centred candidates and what balancing steps carry between them (built at the first one)."""

    mu: np.ndarray             # pool mean μ̄, float32: every row is stored as z = x − μ̄
    mu64: np.ndarray           # μ̄ in float64
    store: RowStore            # the rows z, float32
    sq: torch.Tensor           # ‖z‖², float64
    sq32: torch.Tensor         # ‖z‖², float32 (the streamed path's distances)
    max_sq: float              # max ‖z‖², for the rounding bound
    gram: torch.Tensor | None  # G = Z·Sᵀ, one class per row; None: the streamed path
    inf: torch.Tensor          # float64 ∞ on the device: the score of a taken row
    stale: set[int] = field(default_factory=set)  # classes whose sums changed since their row of G
    max_csq: float = 0.0       # max ‖μ_c − μ̄‖² met so far, for the rounding bound
    # The lazy denominator, per row: `bound` ≥ the distance (not squared) to the centre of class
    # `arg` when the row was last scored, and `ref` the class's cumulative move (`_State.moved`)
    # then.  While arg is a majority class, bound + moved[arg] − ref ≥ the distance to its centre
    # now ≥ the distance to the nearest majority centre.
    bound: torch.Tensor | None = None   # float64
    arg: torch.Tensor | None = None     # int64
    ref: torch.Tensor | None = None     # float64
    # Per row a lower bound on its score, from the bounds above (∞ once taken), valid for `low_key`
    # (the numerator's key and tol) and the counts and majority of the last step (`seen`).
    low: torch.Tensor | None = None
    low_key: tuple | None = None
    seen_counts: np.ndarray | None = None
    seen_major: np.ndarray | None = None
    # The centred float32 centres of the classes met so far, and the counts they were computed at.
    centres: torch.Tensor | None = None
    centre_sq: torch.Tensor | None = None
    centre_counts: np.ndarray | None = None
    # The numerator: distance² to the rarest class's centre, valid for `num_key` (class, its count).
    num: torch.Tensor | None = None
    num_key: tuple[int, int] | None = None


@dataclass
class _State:
    """One call's inputs and settings, and the batch so far: what every step reads or updates."""

    features: np.ndarray
    cand: np.ndarray           # global row of each candidate position
    counts: np.ndarray         # per class: labelled points, plus picks counted under their prediction (int64)
    sums: np.ndarray           # per class: Σ of those points' raw rows (float64)
    moved: np.ndarray          # per class: Σ over picks of how far each moved its centre (float64)
    avail: torch.Tensor        # per candidate position: not taken yet
    use_gram: bool
    chunk_rows: int
    center_block: int
    cache_bytes: int
    device: torch.device
    tie_rtol: float
    picks: list[int] = field(default_factory=list)         # taken positions, in order
    taken_sorted: list[int] = field(default_factory=list)  # the same, ascending (for random steps)
    geo: _Geometry | None = None  # None until a balancing step: random steps never read the features
    balancing_steps: int = 0
    full_passes: int = 0
    gram_flushes: int = 0
    gram_rows: int = 0
    rows_rescored: int = 0

    @property
    def n(self) -> int:
        return self.cand.size


def balancing_greedy(
    features: np.ndarray,
    labeled_indices: np.ndarray,
    labeled_classes: np.ndarray,
    candidate_indices: np.ndarray,
    num_classes: int,
    k: int,
    rng: np.random.Generator,
    predicted: Predictor = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    center_block: int = DEFAULT_CENTER_BLOCK,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | torch.device | None = None,
    tie_rtol: float = TIE_RTOL,
    gram: bool | None = None,
    report: Callable[[BalancingStats], None] | None = None,
) -> np.ndarray:
    """Fast, exact greedy balancing (same picks as ``balancing_reference``); global row ids.

    ``gram``: keep the products G = Z·Sᵀ (see the module docstring); None: when its
    n × num_classes float64 fit ``cache_bytes`` and there are at least as many picks as classes.
    ``report``, if given, is called once at the end with the call's :class:`BalancingStats`."""
    cand = np.asarray(candidate_indices, np.int64)
    k = min(int(k), cand.size)
    if k <= 0:
        if report is not None:
            report(BalancingStats())
        return np.empty(0, np.int64)
    use_gram = _keeps_products(cand.size, num_classes, k, cache_bytes, gram)
    s = _start(features, labeled_indices, labeled_classes, cand, num_classes, use_gram=use_gram,
               chunk_rows=chunk_rows, center_block=center_block, cache_bytes=cache_bytes, device=device,
               tie_rtol=tie_rtol)
    for step in range(k):
        if _is_balancing_step(s.counts, k - step):
            j = _balanced_pick(s)
        else:
            j = _random_pick(s, rng)
        _take(s, j, predicted)
    if report is not None:
        report(BalancingStats(balancing_steps=s.balancing_steps, random_steps=k - s.balancing_steps,
                              full_passes=s.full_passes, gram_flushes=s.gram_flushes, gram_rows=s.gram_rows,
                              rows_rescored=s.rows_rescored))
    return cand[np.asarray(s.picks, np.int64)]


def _start(features, labeled_indices, labeled_classes, cand, num_classes, *, use_gram, chunk_rows, center_block,
           cache_bytes, device, tie_rtol) -> _State:
    """The state before the first pick: the labelled class sums and counts, nothing taken."""
    lab = np.asarray(labeled_indices, np.int64)
    counts, sums = _class_sums(features, lab, np.asarray(labeled_classes, np.int64), num_classes, chunk_rows)
    dev = as_device(device)
    return _State(features=features, cand=cand, counts=counts, sums=sums, moved=np.zeros(num_classes),
                  avail=torch.ones(cand.size, dtype=torch.bool, device=dev), use_gram=use_gram,
                  chunk_rows=chunk_rows, center_block=center_block, cache_bytes=cache_bytes, device=dev,
                  tie_rtol=tie_rtol)


def _keeps_products(n: int, num_classes: int, k: int, cache_bytes: int, gram: bool | None) -> bool:
    """Whether to keep G = Z·Sᵀ: as ``gram`` says, or by default when it fits and picks ≥ classes."""
    if gram is not None:
        return bool(gram)
    # G costs about one pass per class to build and saves about one pass per balancing step (at
    # most k of them): with more classes than picks (1000 classes, a few hundred picks) the
    # streamed path is the cheaper one.
    return n * num_classes * 8 <= cache_bytes and num_classes <= k


# ----------------------------------------------------------------------------- the steps
def _balanced_pick(s: _State) -> int:
    """The available position of lowest ‖z − μ_rarest‖² / min_{c∈M} ‖z − μ_c‖² (the reference's)."""
    s.balancing_steps += 1
    if s.geo is None:
        s.geo = _geometry(s)
    major = s.counts > s.counts.mean()
    rarest = int(np.argmin(s.counts))
    num = _numerator(s, s.geo, rarest)
    rows, den = _denominator(s, s.geo, num, np.flatnonzero(major), rarest)
    j = _lowest_score(s, rows, num[rows], den)
    if s.tie_rtol > 0:
        j = _rerank_near_ties(s, s.geo, rows, num[rows], den, j, rarest, major)
    return j


def _random_pick(s: _State, rng: np.random.Generator) -> int:
    """A uniformly random available position: one draw from ``rng`` over the free ones, as the reference."""
    return _nth_free(int(rng.integers(s.n - len(s.picks))), s.taken_sorted)


def _take(s: _State, j: int, predicted: Predictor) -> None:
    """Take position j; count it under its predicted class, whose centre (and row of G) moves."""
    s.avail[j] = False
    if s.geo is not None and s.geo.low is not None:
        s.geo.low[j] = float("inf")
    s.picks.append(j)
    s.taken_sorted.insert(int(np.searchsorted(s.taken_sorted, j)), j)
    c = _predicted_class(predicted, int(s.cand[j]))
    if c < 0:
        return
    row = np.asarray(s.features[int(s.cand[j])], np.float64)
    if s.counts[c] > 0:  # the centre moves by (x − μ_c)/(n_c + 1); a class with no point has no centre to move
        s.moved[c] += float(np.linalg.norm(row - s.sums[c] / s.counts[c])) / (s.counts[c] + 1)
    s.counts[c] += 1
    s.sums[c] += row
    if s.geo is not None and s.geo.gram is not None:
        s.geo.stale.add(c)


def _geometry(s: _State) -> _Geometry:
    """Centre the candidates on their mean; one pass computes ‖z‖² and, when kept, G = Z·Sᵀ."""
    num_classes = s.sums.shape[0]
    mu = mean_rows(s.features, s.cand, s.chunk_rows, CENTRE_SAMPLE_ROWS).astype(np.float32)
    mu64 = mu.astype(np.float64)
    store = feature_store(s.features, s.cand, center=mu, chunk_rows=s.chunk_rows, cache_bytes=s.cache_bytes,
                          device=s.device)
    sq = torch.empty(s.n, dtype=torch.float64, device=s.device)
    gram = None
    if s.use_gram:
        centred = _centred_sums(s, mu64, np.arange(num_classes))
        gram = torch.empty((num_classes, s.n), dtype=torch.float64, device=s.device)
        s.gram_rows += num_classes
    for start, stop, block in store.chunks():
        sq[start:stop] = torch.linalg.vector_norm(block, dim=1, dtype=torch.float64) ** 2
        if gram is not None:
            gram[:, start:stop] = (block @ centred.T).T.double()
    s.full_passes += 1
    return _Geometry(mu=mu, mu64=mu64, store=store, sq=sq, sq32=sq.float(), max_sq=float(sq.max()), gram=gram,
                     inf=torch.tensor(float("inf"), dtype=torch.float64, device=s.device))


def _denominator(s: _State, geo: _Geometry, num: torch.Tensor, majors: np.ndarray,
                 rarest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, min_{c∈M} ‖z − μ_c‖² of those rows): ascending positions holding every row that may
    score lowest or tie with the lowest; every row left out has a lower bound on its score above
    the highest possible score of the lowest row.

    Rows are brought up to date in two stages, lowest score bound first: their bound is
    tightened to the distance to their own class's centre now (one product per row), and only
    the rows that may still win are compared with the whole majority."""
    centres = _centres32(s, geo, majors)
    geo.max_csq = max(geo.max_csq, float(centres[1].max()))  # before tol is read: rescoring adds no new centre
    tol = s.tie_rtol * (geo.max_sq + geo.max_csq)
    tn = 0.0 if s.counts[rarest] == 0 else tol

    def lower(rows: torch.Tensor, den: torch.Tensor) -> torch.Tensor:  # ≤ the rows' scores
        return torch.where(s.avail[rows], (num[rows] - tn).clamp(min=0) / (den + tol), geo.inf)

    def upper(rows: torch.Tensor, den: torch.Tensor) -> torch.Tensor:  # ≥ the scores of rows with an exact den
        d = den - tol
        return torch.where(d > 0, (num[rows] + tn) / d.clamp(min=torch.finfo(torch.float64).tiny), geo.inf)

    if geo.bound is None:
        return _rescore_all(s, geo, majors, lower)
    _update_lower_bounds(s, geo, majors, (geo.num_key, tol), lower)
    low = geo.low
    exact_rows, exact_den = [], []
    exact = torch.zeros(s.n, dtype=torch.bool, device=s.device)
    seeds = torch.topk(low, min(_SEED_ROWS, s.n), largest=False).indices
    seeds = seeds[torch.isfinite(low[seeds])]
    den = _rescore(s, geo, majors, seeds)
    exact_rows.append(seeds), exact_den.append(den)
    exact[seeds] = True
    low[seeds] = lower(seeds, den)
    # Every row whose lower bound reaches `threshold` (the lowest highest-possible score of an
    # exact row) is brought up to date, lowest bound first so that the threshold falls early; at
    # the end it rises to the highest score the lowest row may have, until no row below it is
    # left with a bound.
    threshold = float(upper(seeds, den).min()) if seeds.numel() else float("inf")
    while True:
        need = torch.nonzero(low <= threshold).flatten()
        need = need[~exact[need]]
        if need.numel() > s.n // 4:  # cheaper as one pass than row by row
            return _rescore_all(s, geo, majors, lower)
        need = need[torch.argsort(low[need])]
        for b0 in range(0, need.numel(), _BATCH_ROWS):
            batch = need[b0:b0 + _BATCH_ROWS]
            batch = batch[low[batch] <= threshold]
            if batch.numel() == 0:
                break  # sorted: the rest lie above the threshold too
            low[batch] = lower(batch, _tighten(s, geo, centres, majors, batch))
            batch = batch[low[batch] <= threshold]
            if batch.numel() == 0:
                continue
            den = _rescore(s, geo, majors, batch)
            exact_rows.append(batch), exact_den.append(den)
            exact[batch] = True
            low[batch] = lower(batch, den)
            threshold = min(threshold, float(upper(batch, den).min()))
        rows, order = torch.sort(torch.cat(exact_rows))
        den = torch.cat(exact_den)[order]
        j = _lowest_score(s, rows, num[rows], den)
        at = int(torch.searchsorted(rows, j))
        reach = float(upper(rows[at:at + 1], den[at:at + 1])) if at < rows.numel() and int(rows[at]) == j else float("inf")
        if reach <= threshold and not bool(((low <= reach) & ~exact).any()):
            return rows, den  # every row with low ≤ reach is exact
        threshold = max(threshold, reach)


def _rescore_all(s: _State, geo: _Geometry, majors: np.ndarray, lower) -> tuple[torch.Tensor, torch.Tensor]:
    """Every row rescored in one pass: (all positions, their exact denominators); the lower bounds renewed."""
    rows = torch.arange(s.n, device=s.device)
    den = _rescore(s, geo, majors)
    geo.low = lower(rows, den)
    return rows, den


def _update_lower_bounds(s: _State, geo: _Geometry, majors: np.ndarray, key: tuple, lower) -> None:
    """Renew the score lower bounds of the rows whose class moved or left the majority since the last step
    (of every row when the numerator or tol changed, or many classes did)."""
    major = np.zeros(s.counts.size, bool)
    major[majors] = True
    if geo.low is None or geo.low_key != key:
        changed = None
    else:
        changed = np.flatnonzero((s.counts != geo.seen_counts) | (geo.seen_major & ~major))
        if changed.size > _MAX_CHANGED_CLASSES:
            changed = None
    if changed is None:
        rows = torch.arange(s.n, device=s.device)
        geo.low = lower(rows, _upper_bounds(s, geo, majors, rows))
    elif changed.size:
        hit = geo.arg == int(changed[0])
        for c in changed[1:]:
            hit |= geo.arg == int(c)
        rows = torch.nonzero(hit).flatten()
        geo.low[rows] = lower(rows, _upper_bounds(s, geo, majors, rows))
    geo.low_key, geo.seen_counts, geo.seen_major = key, s.counts.copy(), major


def _upper_bounds(s: _State, geo: _Geometry, majors: np.ndarray, rows: torch.Tensor) -> torch.Tensor:
    """Per row (bound + how far its class's centre moved since)², ∞ where that class left the majority."""
    moved = torch.from_numpy(s.moved).to(s.device)
    in_major = torch.zeros(s.moved.size, dtype=torch.bool, device=s.device)
    in_major[torch.from_numpy(majors).to(s.device)] = True
    arg = geo.arg[rows]
    den = (geo.bound[rows] + (moved[arg] - geo.ref[rows]).clamp(min=0)) ** 2
    return torch.where(in_major[arg], den, geo.inf)


def _tighten(s: _State, geo: _Geometry, centres, majors: np.ndarray, positions: torch.Tensor) -> torch.Tensor:
    """Upper bounds of the rows at ``positions`` renewed to ‖z − μ_a‖² for their class a (∞ if a left M)."""
    cen, csq, _ = centres
    slot = torch.full((s.moved.size,), -1, dtype=torch.int64, device=s.device)
    slot[torch.from_numpy(majors).to(s.device)] = torch.arange(majors.size, device=s.device)
    out = torch.full((positions.numel(),), float("inf"), dtype=torch.float64, device=s.device)
    for i in range(0, positions.numel(), s.chunk_rows):
        p = positions[i:i + s.chunk_rows]
        k = slot[geo.arg[p]]
        keep = k >= 0    # rows whose class left M keep their ∞: _rescore compares them with every centre
        p, k = p[keep], k[keep]
        block = geo.store.rows(p.cpu().numpy())
        d2 = (geo.sq32[p] + csq[k] - 2.0 * (block * cen[k]).sum(1)).double()
        bound = _padded_root(s, geo, d2)
        geo.bound[p], geo.ref[p] = bound, torch.from_numpy(s.moved).to(s.device)[geo.arg[p]]
        out[i:i + s.chunk_rows][keep] = bound ** 2
    return out


def _rescore(s: _State, geo: _Geometry, majors: np.ndarray, positions: torch.Tensor | None = None) -> torch.Tensor:
    """min_{c∈M} ‖z − μ_c‖² of the rows at ``positions`` (default: all, one pass), float64; renews their bounds."""
    if positions is not None and positions.numel() == 0:
        return torch.empty(0, dtype=torch.float64, device=s.device)
    best, arg = _distances_streamed(s, geo, majors, positions)
    if positions is None:
        positions = torch.arange(s.n, device=s.device)
        geo.bound = torch.empty(s.n, dtype=torch.float64, device=s.device)
        geo.arg = torch.empty(s.n, dtype=torch.int64, device=s.device)
        geo.ref = torch.empty(s.n, dtype=torch.float64, device=s.device)
    else:
        s.rows_rescored += positions.numel()
    den = best.double()
    geo.bound[positions] = _padded_root(s, geo, den)
    geo.arg[positions] = arg
    geo.ref[positions] = torch.from_numpy(s.moved).to(s.device)[arg]
    return den


def _padded_root(s: _State, geo: _Geometry, d2: torch.Tensor) -> torch.Tensor:
    """√(d² + pad): a distance bound that float32 rounding (far below the tolerance) cannot push below the truth."""
    pad = max(s.tie_rtol, _MIN_BOUND_RTOL) * (geo.max_sq + geo.max_csq)
    return (d2.clamp(min=0) + pad).sqrt()


def _numerator(s: _State, geo: _Geometry, rarest: int) -> torch.Tensor:
    """‖z − μ_rarest‖² of every row (1 while the class has no point), recomputed when its centre changed."""
    key = (rarest, int(s.counts[rarest]))
    if geo.num_key != key:
        if s.counts[rarest] == 0:
            geo.num = torch.ones(s.n, dtype=torch.float64, device=s.device)
        else:
            geo.num = _distances(s, geo, np.array([rarest]))[0].double()
        geo.num_key = key
    return geo.num


def _lowest_score(s: _State, rows: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> int:
    """The available position of lowest num / den (∞ where den = 0) among ``rows`` (ascending), ties to the first."""
    score = torch.where(s.avail[rows] & (den > 0), num / den, s.geo.inf)
    i = int(torch.argmin(score))
    if not bool(torch.isfinite(score[i])):
        # Every available score is inf (each point sits on a majority centre, e.g. constant
        # features; ``rows`` then holds every available row).  The reference takes the first
        # available point then.
        return int(torch.nonzero(s.avail)[0])
    return int(rows[i])


def _rerank_near_ties(s: _State, geo: _Geometry, rows: torch.Tensor, num: torch.Tensor, den: torch.Tensor, j: int,
                      rarest: int, major: np.ndarray) -> int:
    """Among the rows that may tie with j, the one the reference's float64 scores rank first."""
    near = _rows_that_may_tie(s, geo, rows, num, den, j, rarest)
    if near.size <= 1:
        return j
    exact = np.concatenate([
        _exact_scores(s.features, s.cand[near[i:i + _RERANK_ROWS]], s.sums, s.counts, rarest, major, s.chunk_rows)
        for i in range(0, near.size, _RERANK_ROWS)])
    return int(near[np.argmin(exact)])


def _rows_that_may_tie(s: _State, geo: _Geometry, rows: torch.Tensor, num: torch.Tensor, den: torch.Tensor, j: int,
                       rarest: int) -> np.ndarray:
    """Available positions among ``rows`` whose lowest possible score is at most the highest possible score of j."""
    # num and den carry rounding (float32 centring and products, G's float32 sums) well below
    # tol, so [lower, upper] brackets each row's float64 score: every row that could be the
    # reference's argmin has lower ≤ upper of the float32 winner.  Those rows are re-ranked with
    # the reference's own float64 numbers (same cdist on the same float64 rows and centres),
    # ties to the first position as np.argmin does there — all of them, in chunks.  (Rows not in
    # ``rows`` have a lower bound above that upper: ``_denominator``.)
    tol = s.tie_rtol * (geo.max_sq + geo.max_csq)
    tn = 0.0 if s.counts[rarest] == 0 else tol
    avail = s.avail[rows]
    lower = torch.where(avail, (num - tn).clamp(min=0) / (den + tol), geo.inf)
    at = int(torch.searchsorted(rows, j))
    if at >= rows.numel() or int(rows[at]) != j:  # j outside rows: every available score is inf
        return torch.nonzero(s.avail).flatten().cpu().numpy()
    upper = float("inf") if not (den[at] - tol > 0) else float((num[at] + tn) / (den[at] - tol))
    # Available rows only: with upper = inf (den[j] within tol of 0) the taken rows, whose lower
    # is inf, would pass lower <= upper and could be picked again.
    return rows[avail & (lower <= upper)].cpu().numpy()


# ----------------------------------------------------------------------------- distances to class centres
def _distances(s: _State, geo: _Geometry, classes: np.ndarray, positions: torch.Tensor | None = None):
    """(min distance², argmin class) of the given rows (by position; default: all) to the classes' centres."""
    if geo.gram is not None:
        return _distances_from_products(s, geo, classes, positions)
    return _distances_streamed(s, geo, classes, positions)


def _distances_from_products(s: _State, geo: _Geometry, classes: np.ndarray, positions: torch.Tensor | None):
    """The same from G: ‖z − μ_c‖² = ‖z‖² − 2·z·S_c/n_c + ‖μ_c‖², O(rows·|classes|), no pass over D."""
    if geo.stale.intersection(classes.tolist()):
        _flush(s, geo)
    cen = s.sums[classes] / s.counts[classes, None] - geo.mu64
    csq = torch.from_numpy((cen ** 2).sum(1)).to(s.device)
    geo.max_csq = max(geo.max_csq, float(csq.max()))
    scale = torch.from_numpy(-2.0 / s.counts[classes]).to(s.device)
    cls_t = torch.from_numpy(classes.astype(np.int64)).to(s.device)
    m = positions.numel() if positions is not None else s.n
    best = torch.empty(m, dtype=torch.float64, device=s.device)
    arg = torch.empty(m, dtype=torch.int64, device=s.device)
    step = max(1, (1 << 22) // max(len(classes), 1))  # bounds the |classes| × step temporary
    for start in range(0, m, step):
        stop = min(start + step, m)
        if positions is None:
            gb = geo.gram[cls_t, start:stop] if len(classes) > 1 else geo.gram[int(classes[0]), None, start:stop]
            sqb = geo.sq[start:stop]
        else:
            p = positions[start:stop]
            gb, sqb = geo.gram[cls_t[:, None], p[None, :]], geo.sq[p]
        d2 = torch.addcmul(sqb[None, :] + csq[:, None], gb, scale[:, None])
        v, a = d2.min(dim=0)
        best[start:stop], arg[start:stop] = v, cls_t[a]
    return best, arg


def _flush(s: _State, geo: _Geometry) -> None:
    """Recompute the rows of G of every stale class with one product (N × D × |stale|).

    All of them, not only those needed now: the product costs about one pass over the
    features until it has some tens of columns, and most stale classes are needed soon."""
    cls = np.array(sorted(geo.stale), np.int64)
    centred = _centred_sums(s, geo.mu64, cls)
    cls_t = torch.from_numpy(cls).to(s.device)
    for start, stop, block in geo.store.chunks(max(1, min(s.chunk_rows, (1 << 24) // cls.size))):
        geo.gram[cls_t, start:stop] = (block @ centred.T).T.double()  # rows × |stale|: the faster GEMM layout
    geo.stale.clear()
    s.gram_flushes += 1
    s.gram_rows += cls.size


def _distances_streamed(s: _State, geo: _Geometry, classes: np.ndarray, positions: torch.Tensor | None):
    """The same by a pass over the rows (all of them, or only those at ``positions``), float32."""
    cen, csq, cls_t = _centres32(s, geo, classes)
    geo.max_csq = max(geo.max_csq, float(csq.max()))
    if positions is None:
        blocks = geo.store.chunks(max(1, (1 << 24) // max(len(classes), 1)))
        sq, m = geo.sq32, s.n
        s.full_passes += 1
    else:   # gathered a chunk at a time: the float32 copy of the rows stays bounded
        blocks = ((i, min(i + s.chunk_rows, positions.numel()), geo.store.rows(positions[i:i + s.chunk_rows].cpu().numpy()))
                  for i in range(0, positions.numel(), s.chunk_rows))
        sq, m = geo.sq32[positions], positions.numel()
    best = torch.empty(m, dtype=torch.float32, device=s.device)
    arg = torch.empty_like(best, dtype=torch.int64)
    for start, stop, block in blocks:
        best[start:stop], arg[start:stop] = _nearest_centre(block, sq[start:stop], cen, csq, cls_t, s.center_block)
    return best, arg


def _centres32(s: _State, geo: _Geometry, classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classes' centred centres μ_c − μ̄ (float32), their squared norms (float32) and the class ids.

    Kept per class between steps (a step moves one centre; the majority has hundreds)."""
    if geo.centres is None:
        geo.centres = torch.zeros((s.counts.size, s.sums.shape[1]), dtype=torch.float32, device=s.device)
        geo.centre_sq = torch.zeros(s.counts.size, dtype=torch.float32, device=s.device)
        geo.centre_counts = np.full(s.counts.size, -1, np.int64)
    stale = classes[geo.centre_counts[classes] != s.counts[classes]]
    if stale.size:
        cen = torch.from_numpy((s.sums[stale] / s.counts[stale, None] - geo.mu).astype(np.float32)).to(s.device)
        at = torch.from_numpy(stale).to(s.device)
        geo.centres[at], geo.centre_sq[at] = cen, (cen.double() ** 2).sum(1).float()
        geo.centre_counts[stale] = s.counts[stale]
    at = torch.from_numpy(classes.astype(np.int64)).to(s.device)
    return geo.centres[at], geo.centre_sq[at], at


def _nearest_centre(block: torch.Tensor, sq: torch.Tensor, cen: torch.Tensor, csq: torch.Tensor,
                    cls_t: torch.Tensor, center_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(min ‖z − c‖², its class) of each row of ``block`` over the centres, ``center_block`` at a time."""
    vals = torch.full((block.shape[0],), float("inf"), device=block.device)
    who = torch.zeros(block.shape[0], dtype=torch.int64, device=block.device)
    for c0 in range(0, cen.shape[0], center_block):
        d2 = torch.addmm(sq[:, None] + csq[None, c0:c0 + center_block], block, cen[c0:c0 + center_block].T,
                         alpha=-2.0)
        v, a = d2.min(dim=1)
        better = v < vals
        vals = torch.where(better, v, vals)
        who = torch.where(better, cls_t[c0:c0 + center_block][a], who)
    return vals, who


# ----------------------------------------------------------------------------- small helpers
def _is_balancing_step(counts: np.ndarray, remaining: int) -> bool:
    """True when the remaining budget is small relative to the imbalance (take a balancing step)."""
    mean = counts.mean()
    major = counts > mean
    if not major.any():
        return False
    minor = ~major
    gap = counts[major].mean() - counts[minor].mean()
    return bool(remaining <= minor.sum() * gap)


def _class_sums(features, rows, classes, num_classes, chunk_rows) -> tuple[np.ndarray, np.ndarray]:
    """Per class: the count (int64) and the float64 sum of the raw rows, in one chunked pass."""
    counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    sums = torch.zeros((num_classes, features.shape[1]), dtype=torch.float64)
    for start in range(0, rows.size, chunk_rows):
        block = torch.from_numpy(gather_rows(features, rows[start:start + chunk_rows], chunk_rows, np.float64))
        sums.index_add_(0, torch.from_numpy(classes[start:start + chunk_rows].astype(np.int64)), block)
    return counts, sums.numpy()


def _centred_sums(s: _State, mu64: np.ndarray, classes: np.ndarray) -> torch.Tensor:
    """S_c = Σ_{i∈c} (x_i − μ̄) as float32 on the device (the sums are float64, of the raw rows)."""
    return torch.from_numpy((s.sums[classes] - s.counts[classes, None] * mu64).astype(np.float32)).to(s.device)


def _exact_scores(features, rows, sums, counts, rarest, major, chunk_rows) -> np.ndarray:
    """The reference's float64 scores of ``rows``: same rows, centres and cdist, so the same numbers."""
    x = gather_rows(features, rows, chunk_rows, np.float64)
    num = np.ones(rows.size) if counts[rarest] == 0 else sqdist64(x, sums[rarest:rarest + 1] / counts[rarest])[:, 0]
    maj = np.flatnonzero(major)
    den = sqdist64(x, sums[maj] / counts[maj, None]).min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = num / den
    return np.where(den > 0, score, np.inf)


def _predicted_class(predictor: Predictor, row: int) -> int:
    """The class a picked row is counted under: the model's prediction; -1 (not counted) without one."""
    if predictor is None:
        return -1
    if callable(predictor):
        return int(np.asarray(predictor(np.array([row], np.int64)))[0])
    return int(predictor[row])


def _nth_free(t: int, taken_sorted: list[int]) -> int:
    """The t-th (0-based) position not in ``taken_sorted`` (ascending)."""
    pos = t
    for p in taken_sorted:
        if p <= pos:
            pos += 1
        else:
            break
    return pos
