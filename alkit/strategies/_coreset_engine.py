"""The fast exact engine of k-center greedy (the method, its tie rules and the plain reference are
in :mod:`alkit.strategies.coreset`).

Every candidate keeps ``mind``, the float32 minimum of ‖x − c‖² over the centres it has met so
far (centres ``[0, seen)``): an *upper bound* of its true minimum, exact once it has met every
centre.  Distances come from the candidates' mean-centred rows as ‖x‖² + ‖c‖² − 2⟨x, c⟩, one
GEMM per candidate block × centre block, so the extra memory never grows with N or with the
labelled set.  A pick takes the largest stored value; if that candidate has met every centre it
is the true maximum (every other stored value bounds its own minimum from above), else the
largest stale candidates are compared with the centres they miss and the pick repeats.  Near
ties of the float32 maximum are settled in float64 with the reference's own distance function.

The steps, in the order :func:`k_center_greedy` runs them:

* :func:`~alkit.strategies._dense.check_indices` — the index contract (shared with the reference);
* :func:`set_up` → :class:`KCenterState` — centre on the candidates' mean, cache the candidates'
  rows and norms, choose how many labelled centres to compare up front (:func:`eager_count`),
  lay out the centres' rows (:func:`centre_rows`) and give every candidate its starting bound
  (:func:`compare_first_centres`, tightened by :func:`tighten_by_pivot_groups`), or take up the
  bounds an earlier round of the same run left (:func:`resume`);
* :func:`pick_next` — the largest exact distance: the largest stored bound (:class:`TopSet`),
  refreshed until it and its near ties are up to date (:func:`bring_up_to_date`, by
  :func:`refresh` or :func:`full_pass`), then the near ties re-ranked in float64
  (:func:`rerank_near_ties`, :func:`exact_min_sqdist`);
* :func:`add_centre` — the pick joins the centres;
* :func:`save_carry` — the bounds the next round of the run starts from (``pool.cache.run``).
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from alkit.logreg import fast_products_available
from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import (
    CENTRE_SAMPLE_ROWS,
    DEFAULT_CACHE_BYTES,
    TIE_RTOL,
    DEFAULT_CENTER_BLOCK,
    RowStore,
    as_device,
    check_indices,
    feature_store,
    gather_rows,
    mean_rows,
    row_sqnorms,
    sqdist64,
    torch_threads,
)

#: At most this many near-tied candidates are re-ranked exactly per pick (duplicates aside, 1–3).
MAX_REFINE = 1024
#: A candidate re-ranked before is brought up to date in float64 against the centres added since,
#: if at most this many, instead of shortlisting every centre again.
_EXACT_CATCH_UP = 256
#: Candidates with the largest stored minima kept aside, so that a pick scans these, not all N.
TOP_ROWS = 4096
#: Stale candidates brought up to date together when the current maximum is stale (one GEMM).
REFRESH_ROWS = 256
#: Candidates still missing most centres that a refresh takes along when it must read every pending
#: centre anyway (one GEMM of a few rows costs about as much as one of this many).
PREFETCH_ROWS = 64
#: Labelled centres compared with every candidate up front when there are too many to compare
#: eagerly (|cand| · |centres| · D above :data:`EAGER_WORK`); the others are compared lazily.
LAZY_FIRST_CENTERS = 1024
EAGER_WORK = 1 << 36
#: ... and when there are more than this many candidates per pick: a lazy refresh then reads every
#: pending centre, which costs more than one eager GEMM when picks are not few.
LAZY_SETUP_RATIO = 64
#: Each pending labelled centre joins the groups of this many of its nearest pivots (see
#: :func:`tighten_by_pivot_groups`): on a 4,000-candidate sample of the 1.28 M pool with 1,024
#: pivots, 1 → 24 % of starting bounds exact, 8 → 84 %, 16 → 95 % (work ∝ this number;
#: ``benchmarks/coreset_pivot_bounds.py``).  8: for 10 k picks at 1.28 M, halving the set-up's
#: group products saves more than the extra refreshes of the looser bounds cost (same picks).
PIVOT_SHARE = 8
#: Runner-ups are tracked when the centres hold more than this many entries (centres × dimension):
#: then re-ranking a near tie against every centre costs more than a second reduction per block.
RUNNER_UP_ENTRIES = 1 << 20
#: From this many rows per block, the nearest two centres per row come from two reductions, not topk.
_MASKED_MIN_ROWS = 1024
#: Row × centre distances computed per GEMM block (float32: 16 MB).
BLOCK_PAIRS = 1 << 22
#: Up to this many candidate × dimension entries (a 16 MB float32 pass), or for at most
#: :data:`PASS_ENGINE_PICKS` picks, the default engine is :func:`pass_greedy`: one pass over the
#: candidates per pick costs less there than the lazy engine's set-up and bookkeeping (measured on
#: 1 k – 100 k × 16 – 2,048 pools: ``benchmarks/bench_coreset_engines.py``).
PASS_ENGINE_ENTRIES = 1 << 22
PASS_ENGINE_PICKS = 16
#: ... or when all the passes together read at most this many entries (picks × candidates ×
#: dimension): the lazy engine's bookkeeping costs a few tenths of a millisecond per pick whatever
#: the pool, more than a pass over 10 k × 512 rows (measured: 10 k × 512 and 100 k × 64 with 100
#: picks, where the pass engine took 0.6× the lazy one's time; with 1,000 picks the lazy one wins).
PASS_ENGINE_WORK = 1 << 30


# --------------------------------------------------------------------------- shared helpers
def merge_nearest(current: tuple[torch.Tensor, ...], found: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """Combine two (min, argmin, runner-up) summaries of distances to centres, row by row.

    The runner-up is the smallest distance to a centre other than the argmin.  A centre met twice
    (same argmin in both) is counted once, so a repeated comparison never fakes a near tie."""
    m1, i1, r1 = current
    m2, i2, r2 = found
    same = i1 == i2
    closer = (m2 < m1) & ~same
    runner_up = torch.where(same, torch.minimum(r1, r2),
                            torch.where(closer, torch.minimum(m1, r2), torch.minimum(r1, m2)))
    return torch.minimum(m1, m2), torch.where(closer, i2, i1), runner_up


# --------------------------------------------------------------------------- the state
class TopSet:
    """The :data:`TOP_ROWS` largest stored values at the last rebuild, and the smallest of them,
    ``floor``.  Stored values only ever decrease, so every candidate outside the set stays ≤ floor,
    and the maximum, its near ties and the largest stale rows can be found in the set
    (O(TOP_ROWS) per pick, not O(N)) as long as some value in it is still > floor."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values = values   # the stored minima (updated in place by the engine)
        self.rows: torch.Tensor | None = None
        self.floor = float("inf")

    def rebuild(self) -> None:
        m = min(TOP_ROWS, self.values.numel())
        values, idx = torch.topk(self.values, m)
        self.rows = idx
        self.floor = float(values[-1]) if m < self.values.numel() else float("-inf")

    def current(self) -> torch.Tensor | None:
        """The set if it certainly holds the maximum (after one rebuild if needed), else None."""
        for attempt in range(2):
            top = self.rows
            if top is not None and float(self.values.index_select(0, top).max()) > self.floor:
                return top
            if attempt == 0:
                self.rebuild()
        return None

    def argmax(self) -> int:
        """Position of the largest stored value (the first one on an exact tie, as ``argmax``)."""
        top = self.current()
        if top is None:   # ties at the floor (e.g. all +inf): global argmax
            return int(torch.argmax(self.values))
        local = self.values.index_select(0, top)
        return int(top[local == local.max()].min())

    def at_least(self, threshold: float) -> torch.Tensor:
        """Positions (ascending) whose stored value is ≥ threshold."""
        top = self.current()
        if top is not None and threshold > self.floor:
            return torch.sort(top[self.values.index_select(0, top) >= threshold]).values
        return torch.nonzero(self.values >= threshold).flatten()

    def largest(self, width: int) -> torch.Tensor:
        """Positions of the ``width`` largest stored values."""
        top = self.current()
        if top is not None:
            return top[torch.topk(self.values.index_select(0, top), min(width, top.numel())).indices]
        return torch.topk(self.values, width).indices


@dataclass
class Counters:
    """The work a call counts as it goes; it reports them in :class:`CoresetStats`."""

    refined: int = 0          # picks whose float32 near tie was re-ranked in float64
    refreshes: int = 0        # lazy refresh GEMMs
    refreshed_rows: int = 0
    full_passes: int = 0
    lone_refined: int = 0     # near-tied candidates re-ranked against their one nearest centre
    caught_up: int = 0        # ... re-ranked from an earlier re-ranking and the centres added since
    refresh_s: float = 0.0
    refine_s: float = 0.0


@dataclass(frozen=True)
class CoresetStats:
    """What one :func:`k_center_greedy` call reports to its ``report`` callback, at its end.

    The pass engine keeps its rows in numpy arrays and times no separate set-up: its
    ``cache_mode`` is None and its counters stay 0.  A call with nothing to pick reports
    engine "none"."""

    engine: str                     # "pass", "lazy" or "eager" (:func:`choose_engine`), or "none"
    setup_s: float                  # checks, row store and starting bounds (or the resumed carry)
    picks_s: float                  # the pick loop
    resumed: bool                   # started from the ``carry`` of an earlier round
    cache_mode: str | None = None   # how the row store holds the candidates (``RowStore.mode``)
    eager_centers: int = 0          # labelled centres compared with every candidate up front
    pivots: int = 0                 # of those, the ones that bound the rest (0 without pivot bounds)
    refined: int = 0                # the fields of :class:`Counters`
    refreshes: int = 0
    refreshed_rows: int = 0
    full_passes: int = 0
    lone_refined: int = 0
    caught_up: int = 0
    refresh_s: float = 0.0
    refine_s: float = 0.0


@dataclass(eq=False)
class KCenterState:
    """Everything one call works on.  A *position* indexes ``cand``; centre j is row j of
    ``centers``: the labelled centres in the order of ``cent``, then the picks in pick order."""

    features: np.ndarray
    cand: np.ndarray               # candidate row ids
    cent: np.ndarray               # the starting centres' ids, in centre order (see `set_up`)
    mu: np.ndarray                 # the candidates' mean (float32): every row is centred on it
    store: RowStore                # the candidates' centred rows
    sq: torch.Tensor               # ‖x − mu‖² per candidate (float32)
    centers: torch.Tensor          # (|cent| + k, D) centred float32 rows, the first n_centers in use
    center_sq: torch.Tensor        # ‖c − mu‖² per centre
    n_centers: int                 # centres known so far (labelled + picked)
    mind: torch.Tensor             # per candidate: min over centres [0, seen) of ‖x − c‖² (an upper bound)
    seen: torch.Tensor             # per candidate: centres [0, seen) compared
    # Lazy only: over the centres each candidate has met in passes and refreshes (not the pivot
    # groups' extra comparisons), its float32 minimum, the centre attaining it and the runner-up.
    # A runner-up more than 2·tol above the minimum means the float64 re-ranking of near ties
    # needs one pair, not every centre (see `exact_min_sqdist`).
    tracked: tuple[torch.Tensor, ...] | None
    lazy: bool
    eager: int                     # labelled centres used up front: compared with every candidate,
    use_pivots: bool               # ... or, as pivots, only grouping them (see `tighten_by_pivot_groups`)
    resumed: bool                  # started from a carry
    # Lazy: whether ``tracked`` keeps true runner-ups, which let a near-tied candidate be re-ranked
    # against its one nearest centre; where every centre costs little to re-rank against (few
    # centres or few dimensions) they are not worth a second reduction per distance block.
    runner_ups: bool
    chunk_rows: int
    center_block: int
    device: torch.device
    max_sq: float = 0.0
    max_center_sq: float = 0.0
    rows_per_block: int = 1
    pass_floor: int = 0            # no candidate has seen fewer centres than this (cost of a full pass)
    picks: list[int] = field(default_factory=list)   # positions, in pick order
    counters: Counters = field(default_factory=Counters)
    # Float64 min-distances of re-ranked candidates, each with the number of centres it covers: the
    # same candidates are near-tied pick after pick, and then only the centres added since count.
    exact_known: dict[int, tuple[float, int]] = field(default_factory=dict)
    top: TopSet = field(init=False)

    def __post_init__(self) -> None:
        self.max_sq = float(self.sq.max())
        self.max_center_sq = float(self.center_sq[:self.n_centers].max()) if self.n_centers else 0.0
        # Blocks of about 16 MB of distances: they stay in cache, where a 64 MB block made one
        # eager pass over 100 k × 1,000 pairs (D = 64) 2.4× slower.
        self.rows_per_block = max(1, min(self.chunk_rows, BLOCK_PAIRS // max(self.center_block, 1)))
        self.top = TopSet(self.mind)

    def centre_ids(self) -> np.ndarray:
        """Row ids of the centres so far, in centre order."""
        return np.concatenate([self.cent, self.cand[np.asarray(self.picks, np.int64)]])

    def nearest(self, block: torch.Tensor, block_sq: torch.Tensor, c0: int, c1: int) -> tuple[torch.Tensor, ...]:
        """Per row of ``block``, over centres c0:c1 (float32): the smallest ‖row − centre‖², the
        centre attaining it, and the second smallest (+inf with one centre); without
        ``runner_ups``, the smallest again (a near tie is then always possible: see
        :func:`_exact_min_afresh`)."""
        with torch_threads(block.shape[0] * max(c1 - c0, 0) * block.shape[1], self.device):
            return self._nearest(block, block_sq, c0, c1)

    def _nearest(self, block: torch.Tensor, block_sq: torch.Tensor, c0: int, c1: int) -> tuple[torch.Tensor, ...]:
        if 0 < c1 - c0 <= self.center_block:   # one block (every refresh but the first of a row): no merging
            low, idx, runner_up = self._block_nearest(block, c0, c1)
            return low + block_sq, idx + c0, runner_up + block_sq
        best = torch.full((block.shape[0],), float("inf"), dtype=torch.float32, device=self.device)
        arg = torch.zeros(block.shape[0], dtype=torch.int64, device=self.device)
        second = best.clone()
        for b0 in range(c0, c1, self.center_block):
            b1 = min(b0 + self.center_block, c1)
            low, idx, runner_up = self._block_nearest(block, b0, b1)
            best, arg, second = merge_nearest((best, arg, second),
                                              (low + block_sq, idx + b0, runner_up + block_sq))
        return best, arg, second

    def _block_nearest(self, block: torch.Tensor, b0: int, b1: int) -> tuple[torch.Tensor, ...]:
        """Per row, over centres b0:b1: the smallest ‖c‖² − 2⟨x, c⟩, its centre (from b0), the
        second smallest (see :meth:`nearest`)."""
        # ‖c‖² − 2⟨x, c⟩ ranks the centres of a row as ‖x − c‖² does: ‖x‖² is added to the
        # two smallest only, not to every pair.
        d2 = torch.addmm(self.center_sq[b0:b1], block, self.centers[b0:b1].T, alpha=-2.0)
        if b1 - b0 == 1:
            return d2[:, 0], torch.zeros(block.shape[0], dtype=torch.int64, device=self.device), \
                torch.full((block.shape[0],), float("inf"), dtype=torch.float32, device=self.device)
        if not self.runner_ups:
            low, idx = torch.min(d2, dim=1)
            return low, idx, low
        if block.shape[0] >= _MASKED_MIN_ROWS:
            # The two smallest per row as a min, then a min with the argmin masked out: two
            # vectorised reductions, 1.4× faster than topk(2) on 4,096 × 1,024 blocks (and
            # slower on a few rows, where topk stays).
            low, idx = torch.min(d2, dim=1)
            d2.scatter_(1, idx[:, None], float("inf"))
            return low, idx, torch.amin(d2, dim=1)
        values, indices = torch.topk(d2, 2, dim=1, largest=False)
        return values[:, 0], indices[:, 0], values[:, 1]

    def track(self, positions: torch.Tensor | slice, found: tuple[torch.Tensor, ...]) -> None:
        """Fold (min, argmin, runner-up) over newly met centres into the stored values at ``positions``."""
        self.mind[positions] = torch.minimum(self.mind[positions], found[0])
        if self.tracked is not None:
            tracked = self.tracked
            merged = merge_nearest((tracked[0][positions], tracked[1][positions], tracked[2][positions]), found)
            for store_t, value in zip(tracked, merged):
                store_t[positions] = value

    def compare(self, start: int, stop: int, block: torch.Tensor, c0: int, c1: int) -> None:
        """Stored values of rows start:stop ← their min with ‖row − centre‖² over centres c0:c1."""
        self.track(slice(start, stop), self.nearest(block, self.sq[start:stop], c0, c1))


# --------------------------------------------------------------------------- set up
@dataclass
class Carried:
    """The state a carry left, mapped onto this call's candidates (see :func:`resume`)."""

    mu: np.ndarray
    centres: np.ndarray
    mind: torch.Tensor
    seen: torch.Tensor
    tracked: tuple[torch.Tensor, ...]


def resume(carry: dict | None, features: np.ndarray, cand: np.ndarray, cent: np.ndarray) -> Carried | None:
    """The lazy state a previous call left in ``carry``, mapped onto this call; None if it does not apply.

    It applies when the features are those the carry was made on (a carry lives for one run over one
    feature matrix; it records :func:`features_token`, not the features, so that a run's checkpoint
    holds no copy of the pool and a resumed run keeps its carry), every earlier centre (labelled or picked)
    is still a centre and every candidate was a candidate then.  The centres are then ordered
    earlier centres first, in their earlier order, so each candidate's count of centres met
    (``seen``) and the centre ids in its (min, argmin, runner-up) stay valid; the new centres are
    pending."""
    if not carry or carry.get("features_token") != features_token(features):
        return None
    old_centres, old_cand = carry["centre_ids"], carry["cand"]
    if not np.isin(old_centres, cent).all():
        return None
    order = np.argsort(old_cand, kind="stable")
    where = np.searchsorted(old_cand[order], cand)
    where[where == old_cand.size] = 0
    if not cand.size or not np.array_equal(old_cand[order][where], cand):
        return None
    positions = torch.from_numpy(order[where])
    fresh = cent[~np.isin(cent, old_centres)]
    return Carried(mu=carry["mu"], centres=np.concatenate([old_centres, fresh]), mind=carry["mind"][positions],
                   seen=carry["seen"][positions], tracked=tuple(t[positions] for t in carry["tracked"]))


def eager_count(n_cand: int, n_cent: int, dim: int, k: int, lazy: bool, eager_centers: int | None) -> int:
    """How many labelled centres are compared with every candidate up front (the rest lazily)."""
    if not lazy:
        return n_cent
    if eager_centers is None:
        # A lazy refresh reads every pending centre (~1 refresh per pick); eager set-up is one GEMM
        # over all candidates.  Lazy set-up pays only when candidates far outnumber the picks.
        small = n_cand * n_cent * dim <= EAGER_WORK or n_cand <= LAZY_SETUP_RATIO * k
        return n_cent if small else min(n_cent, LAZY_FIRST_CENTERS)
    return min(max(int(eager_centers), 0), n_cent)


def centre_rows(features: np.ndarray, cent: np.ndarray, k: int, mu: np.ndarray, chunk_rows: int, center_block: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Room for all centres, labelled first then ``k`` picks, as centred float32 rows, with their
    squared norms; the labelled ones filled in."""
    dim = features.shape[1]
    centers = torch.empty((cent.size + k, dim), dtype=torch.float32, device=device)
    center_sq = torch.empty(cent.size + k, dtype=torch.float32, device=device)
    mu_t = torch.from_numpy(mu).to(device)
    for c0 in range(0, cent.size, center_block):
        block = torch.from_numpy(gather_rows(features, cent[c0:c0 + center_block], chunk_rows)).to(device) - mu_t
        centers[c0:c0 + block.shape[0]] = block
        center_sq[c0:c0 + block.shape[0]] = (block.double() ** 2).sum(1).float()
    return centers, center_sq


def set_up(features: np.ndarray, cand: np.ndarray, cent: np.ndarray, k: int, *, chunk_rows: int, center_block: int,
           cache_bytes: int, device: str | torch.device | None, lazy: bool, eager_centers: int | None,
           pivot_bounds: bool, carry: dict | None) -> KCenterState:
    """The state before the first pick: rows, norms, centres and every candidate's starting bound."""
    dev = as_device(device)
    resumed = resume(carry, features, cand, cent) if lazy else None
    if resumed is not None:   # same centring as the stored values, centres in their stored order
        mu, cent = resumed.mu, resumed.centres
    else:
        # Centre on the candidates' mean: distances are unchanged, float32 error shrinks.
        mu = mean_rows(features, cand, chunk_rows, CENTRE_SAMPLE_ROWS).astype(np.float32)
    store = feature_store(features, cand, center=mu, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
    sq = row_sqnorms(store)
    eager = 0 if resumed is not None else eager_count(cand.size, cent.size, features.shape[1], k, lazy, eager_centers)
    # With labelled centres left pending, the first `eager` of them double as pivots that tighten
    # every candidate's starting bound (see `tighten_by_pivot_groups`).  A fixed shuffle spreads the
    # pivots over the labelled set; the picks do not depend on the order of the centres.
    use_pivots = lazy and pivot_bounds and 0 < eager < cent.size
    if use_pivots:
        cent = cent[np.random.default_rng(0).permutation(cent.size)]
    centers, center_sq = centre_rows(features, cent, k, mu, chunk_rows, center_block, dev)
    if resumed is not None:
        mind, seen, tracked = resumed.mind.to(dev), resumed.seen.to(dev), tuple(t.to(dev) for t in resumed.tracked)
    else:
        mind = torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev)
        # Pivots only group the candidates (`tighten_by_pivot_groups`): they are not met yet.
        seen = torch.full((cand.size,), 0 if use_pivots else eager, dtype=torch.int64, device=dev)
        tracked = (torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev),
                   torch.zeros(cand.size, dtype=torch.int64, device=dev),
                   torch.full((cand.size,), float("inf"), dtype=torch.float32, device=dev)) if lazy else None
    state = KCenterState(features=features, cand=cand, cent=cent, mu=mu, store=store, sq=sq, centers=centers,
                         center_sq=center_sq, n_centers=cent.size, mind=mind, seen=seen, tracked=tracked, lazy=lazy,
                         eager=eager, use_pivots=use_pivots, resumed=resumed is not None,
                         runner_ups=(cent.size + k) * features.shape[1] > RUNNER_UP_ENTRIES, chunk_rows=chunk_rows,
                         center_block=center_block, device=dev)
    compare_first_centres(state)
    state.pass_floor = int(state.seen.min())
    return state


def compare_first_centres(state: KCenterState) -> None:
    """Every candidate against the first ``eager`` labelled centres (a blocked GEMM); or, with
    pivots, each candidate against its nearest pivot and that pivot's group only."""
    s = state
    if s.use_pivots:
        tighten_by_pivot_groups(s, nearest_pivots(s))
    elif s.eager:
        for start, stop, block in s.store.chunks(s.rows_per_block):
            s.compare(start, stop, block, 0, s.eager)


def nearest_pivots(state: KCenterState) -> torch.Tensor:
    """Per candidate, the pivot (one of the first ``eager`` centres) nearest to it, by bfloat16
    products where the CPU has them natively (2.4× float32 on 4,096 × 2,048 × 1,024 blocks).

    The pivot only chooses a candidate's group in :func:`tighten_by_pivot_groups`, where every
    bound is a float32 distance, so a pivot taken for a nearly as near one costs a looser bound,
    never a wrong pick (on the 1.28 M ImageNet-shaped pool: the float32 nearest for 99.2 % of
    candidates, and in the bfloat16 three nearest for all of a 20 k sample)."""
    s = state
    fast = s.device.type == "cpu" and fast_products_available(s.device)
    pivots = s.centers[:s.eager].to(torch.bfloat16) if fast else s.centers[:s.eager]
    pivot_sq = s.center_sq[:s.eager]
    out = torch.empty(s.cand.size, dtype=torch.int64, device=s.device)
    for start, stop, block in s.store.chunks(s.rows_per_block):
        # ‖p‖² − 2⟨x, p⟩ ranks the pivots of a row as ‖x − p‖² does.
        if fast:
            d2 = torch.mm(block.to(torch.bfloat16), pivots.T).float().mul_(-2.0).add_(pivot_sq)
        else:
            d2 = torch.addmm(pivot_sq, block, pivots.T, alpha=-2.0)
        out[start:stop] = torch.argmin(d2, dim=1)
    return out


def split_by_pivot(members: torch.Tensor, pivot: torch.Tensor, n_pivots: int) -> tuple[torch.Tensor, ...]:
    """``members`` split into one group per pivot (stable: ascending order kept within a group)."""
    return torch.split(members[torch.argsort(pivot, stable=True)], torch.bincount(pivot, minlength=n_pivots).tolist())


def tighten_by_pivot_groups(state: KCenterState, nearest_pivot: torch.Tensor) -> None:
    """Give each candidate its starting bound: the float32 distance to its nearest pivot and to
    the pending labelled centres that have that pivot among their :data:`PIVOT_SHARE` nearest.

    Only a bound: ``seen`` stays 0, so a candidate still meets every centre before its value
    counts as exact.  But its true nearest centre is usually in that
    group (84 % of candidates on the 1.28 M ImageNet-shaped pool), so the lazy loop refreshes
    little more than the candidates that get picked.  With the pivots alone the bounds are
    loose by more than the spread of the minima (distances concentrate in 2048 dimensions),
    so nearly every candidate would be refreshed against every pending centre."""
    s = state
    eager, centers, center_sq = s.eager, s.centers, s.center_sq
    share = min(PIVOT_SHARE, eager)
    pending = torch.arange(eager, s.cent.size, device=s.device)
    pivot_of = []   # per pending centre, its `share` nearest pivots
    for ids in torch.split(pending, max(1, (1 << 24) // eager)):
        d2 = torch.addmm(center_sq[ids, None] + center_sq[None, :eager], centers[ids], centers[:eager].T, alpha=-2.0)
        pivot_of.append(torch.topk(d2, share, dim=1, largest=False).indices)
    # Each pivot is in its own group, so every candidate gets a finite bound.
    own = torch.arange(eager, device=s.device)
    pair_pivot = torch.cat([own, torch.cat(pivot_of).flatten()])
    pair_centre = torch.cat([own, pending.repeat_interleave(share)])
    positions = torch.arange(s.cand.size, device=s.device)
    groups = zip(split_by_pivot(positions, nearest_pivot, eager), split_by_pivot(pair_centre, pair_pivot, eager))
    for group, ids in groups:
        if group.numel() == 0 or ids.numel() == 0:
            continue
        for rows in torch.split(group, s.rows_per_block):
            block = s.store.rows(rows.cpu().numpy())
            d2 = torch.addmm(s.sq[rows, None] + center_sq[None, ids], block, centers[ids].T, alpha=-2.0)
            s.mind[rows] = torch.minimum(s.mind[rows], d2.min(dim=1).values)


# --------------------------------------------------------------------------- refresh
def full_pass(state: KCenterState) -> None:
    """Bring every candidate up to date with all centres (eager, chunked)."""
    state.counters.full_passes += 1
    for start, stop, block in state.store.chunks(state.rows_per_block):
        low = int(state.seen[start:stop].min())
        if low < state.n_centers:
            state.compare(start, stop, block, low, state.n_centers)
    state.seen.fill_(state.n_centers)


def refresh(state: KCenterState, positions: torch.Tensor) -> None:
    """Compare the candidates at ``positions`` with the centres they have not seen yet."""
    started = time.perf_counter()
    low = int(state.seen[positions].min())
    block = state.store.rows(positions.cpu().numpy())
    state.track(positions, state.nearest(block, state.sq[positions], low, state.n_centers))
    state.seen[positions] = state.n_centers
    state.counters.refreshes += 1
    state.counters.refreshed_rows += int(positions.numel())
    state.counters.refresh_s += time.perf_counter() - started


def with_far_behind(state: KCenterState, stale: torch.Tensor) -> torch.Tensor:
    """``stale`` plus, if one of them still misses most centres, the :data:`PREFETCH_ROWS`
    largest candidates that do too: such a refresh reads every pending centre whatever the
    row count, and those candidates come up next (picks descend the stored values)."""
    if state.n_centers - int(state.seen[stale].min()) <= LAZY_FIRST_CENTERS:
        return stale
    ahead = state.top.largest(4 * PREFETCH_ROWS)
    far = ahead[state.n_centers - state.seen[ahead] > LAZY_FIRST_CENTERS][:PREFETCH_ROWS]
    return torch.cat([stale, far]).unique()


@dataclass
class Effort:
    """Refresh work spent on the current pick."""

    pairs: int = 0     # row × centre comparisons
    retries: int = 0   # calls of `bring_up_to_date`
    near: torch.Tensor | None = None   # the last call's rows at or above its threshold, if it took them all


def bring_up_to_date(state: KCenterState, threshold: float, best: int, effort: Effort) -> bool:
    """Refresh stale candidates among ``best`` and those whose stored value is ≥ ``threshold``
    (at most 8·4^retry ≤ :data:`REFRESH_ROWS` of the largest); False if any was stale."""
    s = state
    # Few candidates usually need it: start with a handful, widen on every retry of this pick.
    # Against many pending (labelled) centres a refresh reads them all whatever the row count,
    # so it then takes many rows at once.
    if s.n_centers - int(s.seen[best]) > LAZY_FIRST_CENTERS:
        width = min(TOP_ROWS, REFRESH_ROWS * 4 ** effort.retries, s.cand.size)
    else:
        width = min(REFRESH_ROWS, 8 * 4 ** effort.retries, s.cand.size)
    effort.retries += 1
    rows = s.top.at_least(threshold) if threshold > float("-inf") else None
    effort.near = rows
    if rows is None or rows.numel() > width:
        rows, effort.near = s.top.largest(width), None
    if not bool((rows == best).any()):   # rows are distinct: add `best` only if it is not among them
        rows = torch.cat([rows, rows.new_tensor([best])])
    rows = torch.sort(rows).values
    stale = rows[s.seen[rows] < s.n_centers]
    if stale.numel() == 0:
        return True   # nothing refreshed: `effort.near` is still every row at or above the threshold
    effort.pairs += int(stale.numel()) * (s.n_centers - int(s.seen[stale].min()))
    if effort.pairs > s.cand.size * max(s.n_centers - s.pass_floor, 1):
        full_pass(s)   # refreshes cost more than one pass would: do the pass
        s.pass_floor = s.n_centers
    else:
        refresh(s, with_far_behind(s, stale))
    return False


# --------------------------------------------------------------------------- pick
def pick_next(state: KCenterState, tie_rtol: float) -> int:
    """Position of the next centre: the largest exact min-distance, near ties settled in float64."""
    effort = Effort()
    while True:
        best = state.top.argmax()
        if int(state.seen[best]) < state.n_centers:   # stale maximum: refresh the top stale candidates
            bring_up_to_date(state, float("-inf"), best, effort)
            continue
        tol = tie_rtol * (state.max_sq + state.max_center_sq) if tie_rtol > 0 else 0.0
        # Every candidate within 2·tol of the maximum must be up to date before ranking ties.
        if tie_rtol > 0 and not bring_up_to_date(state, float(state.mind[best]) - 2.0 * tol, best, effort):
            continue
        break
    if tie_rtol > 0:
        best = rerank_near_ties(state, best, tol, effort.near)
    return best


def rerank_near_ties(state: KCenterState, best: int, tol: float, near: torch.Tensor | None = None) -> int:
    """Among the candidates within 2·tol of the float32 maximum (if 2 to :data:`MAX_REFINE` of
    them), the one with the largest float64 min-distance (the first one on an exact tie).
    ``near``: those candidates, ascending, when the caller already has them."""
    if near is None:
        near = state.top.at_least(float(state.mind[best]) - 2.0 * tol)
    near = near.cpu().numpy()
    if 1 < near.size <= MAX_REFINE:
        state.counters.refined += 1
        started = time.perf_counter()
        best = int(near[np.argmax(exact_min_sqdist(state, near, tol))])
        state.counters.refine_s += time.perf_counter() - started
    return best


def exact_min_sqdist(state: KCenterState, positions: np.ndarray, tol: float) -> np.ndarray:
    """Float64 min over all centres of ‖x − c‖², for the candidates at ``positions``.

    The float32 distances to every centre shortlist, per candidate, the centres within
    2·tol of its float32 minimum: if each float32 distance is within tol of the exact one,
    the exact nearest centre is among them.  Only those pairs are computed in float64, from
    the raw rows, with the very function the reference uses (so equal pairs give equal
    numbers)."""
    s = state
    features, cand, chunk_rows, n_centers = s.features, s.cand, s.chunk_rows, s.n_centers
    center_ids = s.centre_ids()
    out = np.empty(positions.size)
    # Known before: the min over the centres added since is folded in (the same pair function, so
    # the same numbers as a fresh computation; a minimum does not depend on the order).
    known = np.array([p in s.exact_known and n_centers - s.exact_known[p][1] <= _EXACT_CATCH_UP for p in positions.tolist()],
                     bool)
    at = np.flatnonzero(known)
    value = np.array([s.exact_known[int(p)][0] for p in positions[at]], np.float64)
    covered = np.array([s.exact_known[int(p)][1] for p in positions[at]], np.int64)
    # Candidates that covered the same centres meet the same new ones: one gather and one
    # sqdist64 per group (pair by pair, so the numbers of one call per candidate).
    for start in np.unique(covered[covered < n_centers]):
        group = np.flatnonzero(covered == start)
        raw = gather_rows(features, cand[positions[at[group]]], chunk_rows, np.float64)
        partners = gather_rows(features, center_ids[start:n_centers], chunk_rows, np.float64)
        value[group] = np.minimum(value[group], sqdist64(raw, partners).min(axis=1))
    out[at] = value
    s.counters.caught_up += int(known.sum())
    todo = np.flatnonzero(~known)
    out[todo] = _exact_min_afresh(s, positions[todo], tol, center_ids)
    for p, value in zip(positions.tolist(), out.tolist()):
        s.exact_known[p] = (value, n_centers)
    return out


def _exact_min_afresh(s: KCenterState, positions: np.ndarray, tol: float, center_ids: np.ndarray) -> np.ndarray:
    """:func:`exact_min_sqdist` for candidates with nothing known: shortlist in float32, then float64."""
    features, cand, chunk_rows, n_centers = s.features, s.cand, s.chunk_rows, s.n_centers
    out = np.empty(positions.size)
    if positions.size == 0:
        return out
    if s.tracked is not None:   # a runner-up beyond 2·tol: the argmin is the only centre to check
        pos_t = torch.from_numpy(positions).to(s.device)
        lone = (s.tracked[2][pos_t] > s.tracked[0][pos_t] + 2.0 * tol).cpu().numpy()
        raw = gather_rows(features, cand[positions[lone]], chunk_rows, np.float64)
        partner = gather_rows(features, center_ids[s.tracked[1][pos_t[lone]].cpu().numpy()], chunk_rows, np.float64)
        out[lone] = [sqdist64(raw[i:i + 1], partner[i:i + 1])[0, 0] for i in range(raw.shape[0])]
        s.counters.lone_refined += int(lone.sum())
    else:
        lone = np.zeros(positions.size, bool)
    rest = np.flatnonzero(~lone)
    for g0 in range(0, rest.size, 64):
        group = positions[rest[g0:g0 + 64]]
        pos_t = torch.from_numpy(group).to(s.device)
        xs = s.store.rows(group)
        d32 = torch.cat([torch.addmm(s.sq[pos_t, None] + s.center_sq[None, b0:min(b0 + s.center_block, n_centers)], xs,
                                     s.centers[b0:min(b0 + s.center_block, n_centers)].T, alpha=-2.0)
                         for b0 in range(0, n_centers, s.center_block)], dim=1)
        shortlist = d32 <= d32.min(dim=1, keepdim=True).values + 2.0 * tol
        raw = gather_rows(features, cand[group], chunk_rows, np.float64)
        for i in range(group.size):
            close = torch.nonzero(shortlist[i]).flatten().cpu().numpy()
            partners = gather_rows(features, center_ids[close], chunk_rows, np.float64)
            out[rest[g0 + i]] = sqdist64(raw[i:i + 1], partners).min()
    return out


# --------------------------------------------------------------------------- add a centre, carry on
def add_centre(state: KCenterState, pos: int) -> None:
    """The candidate at ``pos`` becomes the next centre (eager: every stored value meets it now)."""
    s = state
    x = s.store.rows(np.array([pos]))[0]
    s.centers[s.n_centers] = x
    s.center_sq[s.n_centers] = s.sq[pos]
    s.n_centers += 1
    s.max_center_sq = max(s.max_center_sq, float(s.sq[pos]))
    s.mind[pos] = float("-inf")
    s.picks.append(pos)
    if not s.lazy:
        for start, stop, block in s.store.chunks():
            d2 = torch.addmv(s.sq[start:stop] + s.sq[pos], block, x, alpha=-2.0)
            torch.minimum(s.mind[start:stop], d2, out=s.mind[start:stop])
        s.seen.fill_(s.n_centers)


def features_token(features: np.ndarray, rows: int = 64) -> str:
    """Shape, dtype and a digest of ``rows`` evenly spaced rows: which feature matrix a carry was made
    on, without keeping it.  (Within the loop the run's cache is bound to its features and a resumed
    run's checkpoint to their full fingerprint; this token guards a carry passed around by hand.)"""
    n = features.shape[0]
    picked = np.unique(np.linspace(0, n - 1, num=min(rows, n)).astype(np.int64)) if n else np.empty(0, np.int64)
    digest = hashlib.blake2b(np.ascontiguousarray(np.asarray(features[picked])).tobytes(), digest_size=16)
    return f"{tuple(features.shape)}:{features.dtype}:{digest.hexdigest()}"


def save_carry(state: KCenterState, carry: dict) -> None:
    """Leave in ``carry`` what the next call of the same run starts from (see :func:`resume`)."""
    carry.clear()
    carry.update(features_token=features_token(state.features), cand=state.cand, mu=state.mu, centre_ids=state.centre_ids(),
                 mind=state.mind.cpu(), seen=state.seen.cpu(), tracked=tuple(t.cpu() for t in state.tracked))


# --------------------------------------------------------------------------- small pools: one pass per pick
def pass_greedy(features: np.ndarray, cand: np.ndarray, cent: np.ndarray, k: int, rng: np.random.Generator,
                chunk_rows: int = DEFAULT_CHUNK_ROWS, tie_rtol: float = TIE_RTOL) -> np.ndarray:
    """k-center greedy for pools small enough to pass over every pick: the candidates' centred
    float32 rows in memory, every stored minimum exact after each pick (one matrix-vector
    product).  Near ties of the float32 maximum (within 2·tol, as in the lazy engine) are
    re-ranked in float64 with :func:`~alkit.strategies._dense.sqdist64`, each against the centres
    whose float32 distance lies within 2·tol of its float32 minimum.  Positions of ``cand`` in
    pick order; ``cand`` and ``cent`` already checked, 0 < k ≤ |cand|."""
    x = gather_rows(features, cand, chunk_rows)
    # Any centre leaves the distances as they are; the mean keeps the float32 error small, and a
    # float32 one does that as well as a float64 one, at half the cost.
    mu = x.mean(axis=0)
    x -= mu
    sq = _sqnorms(x)
    centres = np.empty((cent.size + k, x.shape[1]), np.float32)   # centred rows: labelled, then picks
    centre_sq = np.empty(cent.size + k, np.float32)
    centre_ids = np.empty(cent.size + k, np.int64)
    centre_ids[:cent.size] = cent
    mind = np.full(cand.size, np.inf, np.float32)
    for c0 in range(0, cent.size, DEFAULT_CENTER_BLOCK):
        c1 = min(c0 + DEFAULT_CENTER_BLOCK, cent.size)
        c = centres[c0:c1] = gather_rows(features, cent[c0:c1], chunk_rows) - mu
        c_sq = centre_sq[c0:c1] = _sqnorms(c)
        rows = max(1, BLOCK_PAIRS // c.shape[0])
        for r0 in range(0, cand.size, rows):
            d2 = (c_sq - 2.0 * (x[r0:r0 + rows] @ c.T)).min(axis=1) + sq[r0:r0 + rows]
            np.minimum(mind[r0:r0 + rows], d2, out=mind[r0:r0 + rows])
    n_centres = cent.size
    max_sq = float(sq.max())
    max_center_sq = float(centre_sq[:n_centres].max()) if n_centres else 0.0
    picks: list[int] = []

    def add(pos: int) -> None:
        nonlocal n_centres, max_center_sq
        picks.append(pos)
        centres[n_centres], centre_sq[n_centres], centre_ids[n_centres] = x[pos], sq[pos], cand[pos]
        n_centres += 1
        max_center_sq = max(max_center_sq, float(sq[pos]))
        d2 = x @ x[pos]
        d2 *= -2.0
        d2 += sq[pos]
        d2 += sq
        np.minimum(mind, d2, out=mind)
        mind[pos] = -np.inf   # earlier picks stay at −inf: the minimum never raises a value

    def exact_min(near: np.ndarray, tol: float) -> np.ndarray:
        """Float64 min over the centres of ‖x − c‖² for the candidates at ``near``."""
        d32 = (centre_sq[:n_centres] - 2.0 * (x[near] @ centres[:n_centres].T)) + sq[near, None]
        shortlist = d32 <= d32.min(axis=1, keepdims=True) + 2.0 * tol
        raw = gather_rows(features, cand[near], chunk_rows, np.float64)
        return np.array([sqdist64(raw[i:i + 1], gather_rows(features, centre_ids[:n_centres][shortlist[i]], chunk_rows,
                                                            np.float64)).min() for i in range(near.size)])

    if cent.size == 0:
        add(int(rng.integers(cand.size)))
    while len(picks) < k:
        best = int(np.argmax(mind))
        if tie_rtol > 0:
            tol = tie_rtol * (max_sq + max_center_sq)
            top = mind[best]
            mind[best] = -np.inf
            tied = float(mind.max()) >= top - 2.0 * tol   # any other candidate within 2·tol?
            mind[best] = top
            if tied:
                near = np.flatnonzero(mind >= top - 2.0 * tol)
                if near.size <= MAX_REFINE:
                    best = int(near[np.argmax(exact_min(near, tol))])
        add(best)
    return np.asarray(picks, np.int64)


def _sqnorms(rows: np.ndarray) -> np.ndarray:
    """‖row‖² of float32 rows by numpy's pairwise summation along each row: within 2e-7 of the
    float64 sum (the float32 distances' own error is ~1e-6, the tie tolerance 1e-5), at 0.4× the
    time of einsum in float64."""
    return np.square(rows).sum(axis=1)


def choose_engine(n_cand: int, dim: int, k: int, lazy: bool | None, carry: bool = False,
                  cache_bytes: int = DEFAULT_CACHE_BYTES, device: str | torch.device | None = None) -> str:
    """"pass" (:func:`pass_greedy`), "lazy" or "eager" (the engine below, ``lazy`` True / False).
    ``lazy=None`` picks the pass engine for at most :data:`PASS_ENGINE_ENTRIES` candidate entries,
    :data:`PASS_ENGINE_PICKS` picks or :data:`PASS_ENGINE_WORK` entries read over all the passes,
    when no ``carry`` is kept: within a run, the lazy engine's
    carried bounds spare every later round the set-up against all labelled points, which the
    pass engine cannot carry.  The pass engine holds the candidates' rows in float32 numpy arrays,
    so never beyond ``cache_bytes`` (the lazy engine then streams them) nor on another device."""
    if lazy is None:
        small = n_cand * dim <= PASS_ENGINE_ENTRIES or k <= PASS_ENGINE_PICKS or n_cand * dim * k <= PASS_ENGINE_WORK
        fits = n_cand * dim * 4 <= cache_bytes and as_device(device).type == "cpu"
        return "pass" if small and fits and not carry else "lazy"
    return "lazy" if lazy else "eager"


# --------------------------------------------------------------------------- the engine
def k_center_greedy(
    features: np.ndarray,
    center_indices: np.ndarray,
    candidate_indices: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    center_block: int = DEFAULT_CENTER_BLOCK,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    device: str | torch.device | None = None,
    tie_rtol: float = TIE_RTOL,
    lazy: bool | None = None,
    eager_centers: int | None = None,
    pivot_bounds: bool = True,
    carry: dict | None = None,
    report: Callable[[CoresetStats], None] | None = None,
) -> np.ndarray:
    """k-center greedy: ``k`` rows of ``candidate_indices`` (global row ids, in pick order); the
    picks of :func:`alkit.strategies.coreset.k_center_greedy_reference`.

    Centres start as ``center_indices`` (if empty, the first pick is a candidate drawn
    uniformly with ``rng``); each step picks argmax_x min_c ‖x − c‖² over the remaining
    candidates (first candidate on an exact tie) and adds it to the centres.

    ``lazy=None`` (the default) chooses by size (:func:`choose_engine`): on the CPU, pools of at
    most :data:`PASS_ENGINE_ENTRIES` candidate × dimension entries, asked for at most
    :data:`PASS_ENGINE_PICKS` picks, or whose passes read at most :data:`PASS_ENGINE_WORK` entries
    in all, run :func:`pass_greedy` (one pass per pick) unless a
    ``carry`` is kept; the others the lazy engine.  ``lazy=True`` (exact): stored minima are upper bounds, refreshed only for the largest stale
    candidates (see the module docstring).  A new centre lowers few candidates' minima in
    practice (1.0 refreshes per pick on the 100 k ImageNet-shaped pool, ``bench_scale.py
    --lazy-vs-eager``), so a pick costs ~|centres added since| · D instead of a pass over all
    candidates; when refreshes pile up (more than a pass would cost) every stale candidate is
    brought up to date in one chunked pass.  ``lazy=False``: every pick one pass over all
    candidates.

    ``eager_centers``: how many of the labelled centres are compared with every candidate up
    front (a blocked GEMM); the rest start pending and are compared lazily.  Default: all of
    them when |cand| · |centres| · D ≤ 2³⁶ multiply-adds or |cand| ≤ 64·k, else the first
    :data:`LAZY_FIRST_CENTERS`.  Those then serve as pivots (``pivot_bounds=True``): every
    candidate is also compared with the pending labelled centres nearest to its own nearest pivot
    (≈ |cand| · |centres| / |pivots| · D work), which makes most starting bounds exact, so the
    lazy loop refreshes few candidates against all pending centres.  Still exact: a candidate's
    value counts only once it has met every centre.

    ``carry`` (lazy only): a dict that successive calls of one active-learning run share.  Each
    call leaves its per-candidate state there (stored minima, centres met, nearest centre, and a
    token of the features, never the features: :func:`save_carry`); the next call starts from it
    when it reads the features the token names, its centres include every earlier centre and pick
    and its candidates were all candidates then (as from one round to the next), comparing
    candidates lazily with the new centres only instead of with every labelled centre again.  The
    stored values are upper bounds over centres that are still centres, so the picks are unchanged.

    Memory: the candidates' rows (float32 if they fit ``cache_bytes``, else their own dtype, else
    streamed from ``features``) + the centres' rows (float32, |centres| + k) + two |cand| vectors
    + one chunk × ``center_block`` block.

    ``report``, if given, is called once, at the end of the call, with a :class:`CoresetStats`:
    the engine that ran, its set-up / pick split, the row store's mode and the counters.
    """
    t0 = time.perf_counter()
    cand, cent = check_indices(candidate_indices, center_indices, features.shape[0])
    k = min(int(k), cand.size)
    if k <= 0:
        if report is not None:
            report(CoresetStats(engine="none", setup_s=time.perf_counter() - t0, picks_s=0.0, resumed=False))
        return np.empty(0, np.int64)
    engine = choose_engine(cand.size, features.shape[1], k, lazy, carry is not None, cache_bytes, device)
    if engine == "pass":
        picks = pass_greedy(features, cand, cent, k, rng, chunk_rows, tie_rtol)
        if report is not None:
            report(CoresetStats(engine="pass", setup_s=0.0, picks_s=time.perf_counter() - t0, resumed=False))
        return cand[picks]
    lazy = engine != "eager"
    state = set_up(features, cand, cent, k, chunk_rows=chunk_rows, center_block=center_block, cache_bytes=cache_bytes,
                   device=device, lazy=lazy, eager_centers=eager_centers, pivot_bounds=pivot_bounds, carry=carry)
    t1 = time.perf_counter()
    if state.cent.size == 0:
        add_centre(state, int(rng.integers(cand.size)))
    while len(state.picks) < k:
        add_centre(state, pick_next(state, tie_rtol))
    if carry is not None and lazy:
        save_carry(state, carry)
    if report is not None:
        report(CoresetStats(engine=engine, setup_s=t1 - t0, picks_s=time.perf_counter() - t1, resumed=state.resumed,
                            cache_mode=state.store.mode, eager_centers=state.eager,
                            pivots=state.eager if state.use_pivots else 0, **vars(state.counters)))
    return cand[np.asarray(state.picks, np.int64)]
