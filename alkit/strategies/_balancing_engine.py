"""The fast exact engine of greedy balancing (the method, its fixes and the plain reference are in
:mod:`alkit.strategies.balancing`).

On rows z = x − μ̄ centred by the pool mean (float32):
  * G = Z·Sᵀ, the products of every row with every class's centred sum S_c = Σ_{i∈c} z_i
    (C × n float64, kept when it fits ``cache_bytes`` and C ≤ k; else the streamed path
    below).  Then ‖z − μ_c‖² = ‖z‖² − 2·(Z·S_c)/n_c + ‖μ_c‖² costs O(n) per class, with no pass over D.
    G is built in the pass that computes ‖z‖² (one GEMM, N·D·C).  A pick counted to class c
    makes row c of G stale; stale rows are recomputed only when a step needs one of them (the
    rarest class, or a majority class), and then all of them at once, in one GEMM
    (N·D·|stale|): a few tens of batched products per round instead of about one memory-bound
    N·D pass per balancing step (``timings`` counts both; ``benchmarks/round_reuse.py`` times them).
  * Streamed path (G does not fit): distances to centres by a pass over the features, N·D.
  * Both keep the numerator per (rarest class, its count), and the denominator — per point
    the distance to, and identity of, its nearest majority centre — in sync incrementally: a
    majority centre that moves or leaves M invalidates only the points it was nearest to
    (recomputed against M), a centre that joins or moves is folded into every point.
  A random step costs O(k).  The float32 / G-based num and den carry rounding of order
  ε₃₂·(‖z‖² + ‖μ_c‖²), far below the tolerance (ε₃₂ ≈ 6·10⁻⁸ against ``tie_rtol`` = 10⁻⁵); every
  point whose score interval, num and den widened by ``tie_rtol``·(max‖z‖² + max‖μ_c‖²),
  reaches the best point's is re-ranked with :func:`balancing_reference`'s float64 scores, so
  the picks equal the reference's.

The building blocks the reference shares: :func:`balancing_mode` (balance or random this step),
:func:`_class_sums` (labelled class sums and counts), :func:`_score` (num / den, ∞ where den = 0),
:func:`_predict` (a picked point's class: the model's prediction).
"""
from __future__ import annotations

from typing import Callable, Union

import numpy as np
import torch

from alkit.pool import DEFAULT_CHUNK_ROWS
from alkit.strategies._dense import (
    DEFAULT_CACHE_BYTES,
    TIE_RTOL,
    DEFAULT_CENTER_BLOCK,
    as_device,
    feature_store,
    gather_rows,
    mean_rows,
    sqdist64,
)

#: Predicted class of rows: an (N,) int array, or ``f(global_indices) -> classes``; None: unknown.
Predictor = Union[np.ndarray, Callable[[np.ndarray], np.ndarray], None]


def balancing_mode(counts: np.ndarray, remaining: int) -> bool:
    """True when the remaining budget is small relative to the imbalance (take a balancing step)."""
    mean = counts.mean()
    major = counts > mean
    if not major.any():
        return False
    minor = ~major
    gap = counts[major].mean() - counts[minor].mean()
    return bool(remaining <= minor.sum() * gap)


def _predict(predictor: Predictor, row: int) -> int:
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


def _class_sums(features, rows, classes, num_classes, chunk_rows) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(classes, minlength=num_classes).astype(np.int64)
    sums = torch.zeros((num_classes, features.shape[1]), dtype=torch.float64)
    for start in range(0, rows.size, chunk_rows):
        block = torch.from_numpy(gather_rows(features, rows[start:start + chunk_rows], chunk_rows, np.float64))
        sums.index_add_(0, torch.from_numpy(classes[start:start + chunk_rows].astype(np.int64)), block)
    return counts, sums.numpy()


def _score(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        s = num / den
    return np.where(den > 0, s, np.inf)


def _exact_scores(features, rows, sums, counts, rarest, major, chunk_rows) -> np.ndarray:
    x = gather_rows(features, rows, chunk_rows, np.float64)
    num = np.ones(rows.size) if counts[rarest] == 0 else sqdist64(x, sums[rarest:rarest + 1] / counts[rarest])[:, 0]
    maj = np.flatnonzero(major)
    den = sqdist64(x, sums[maj] / counts[maj, None]).min(axis=1)
    return _score(num, den)


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
    timings: dict | None = None,
) -> np.ndarray:
    """Fast, exact greedy balancing (same picks as :func:`balancing_reference`); global row ids.

    ``gram``: keep the products G = Z·Sᵀ (see the module docstring); None: when its
    n × num_classes float64 fit ``cache_bytes`` and there are at least as many picks as classes.
    ``timings``, if a dict, receives the number of ``balancing_steps`` and ``random_steps``, of
    full feature passes (``full_passes``: the setup pass and, streamed path, each distance pass),
    of batched recomputations of stale rows of G (``gram_flushes``) and of the rows of G computed
    in all (``gram_rows``)."""
    lab = np.asarray(labeled_indices, np.int64)
    cand = np.asarray(candidate_indices, np.int64)
    k = min(int(k), cand.size)
    if k <= 0:
        return np.empty(0, np.int64)
    counts, sums = _class_sums(features, lab, np.asarray(labeled_classes, np.int64), num_classes, chunk_rows)
    dev = as_device(device)
    n = cand.size
    # G costs about one pass per class to build and saves about one pass per balancing step (at
    # most k of them): with more classes than picks (1000 classes, a few hundred picks) the
    # streamed path is the cheaper one.
    use_gram = (n * num_classes * 8 <= cache_bytes and num_classes <= k) if gram is None else bool(gram)
    store = None  # built lazily: runs with random steps only never touch the features
    state: dict = {}
    picks: list[int] = []
    taken_sorted: list[int] = []
    avail = torch.ones(n, dtype=torch.bool, device=dev)
    stale: set[int] = set()  # classes whose sums changed since their row of G was computed
    passes = {"full_passes": 0, "gram_flushes": 0, "gram_rows": 0}

    def centred_sums(classes) -> torch.Tensor:
        """S_c = Σ_{i∈c} (x_i − μ) as float32 (the sums are float64, of the raw rows)."""
        return torch.from_numpy((sums[classes] - counts[classes, None] * state["mu64"]).astype(np.float32)).to(dev)

    def setup() -> None:
        nonlocal store
        mu = mean_rows(features, cand, chunk_rows).astype(np.float32)
        store = feature_store(features, cand, center=mu, chunk_rows=chunk_rows, cache_bytes=cache_bytes, device=dev)
        state.update(mu=mu, mu64=mu.astype(np.float64), num_key=None, snap={}, best=None, arg=None, max_csq=0.0)
        sq = torch.empty(n, dtype=torch.float64, device=dev)
        if use_gram:
            s = centred_sums(np.arange(num_classes))
            state["G"] = torch.empty((num_classes, n), dtype=torch.float64, device=dev)  # one class per row
            passes["gram_rows"] += num_classes
        for start, stop, block in store.chunks():
            sq[start:stop] = torch.linalg.vector_norm(block, dim=1, dtype=torch.float64) ** 2
            if use_gram:
                state["G"][:, start:stop] = (block @ s.T).T.double()
        passes["full_passes"] += 1
        state.update(sq=sq, sq32=sq.float(), max_sq=float(sq.max()))

    def flush() -> None:
        """Recompute the rows of G of every stale class with one product (N × D × |stale|).

        All of them, not only those needed now: the product costs about one pass over the
        features until it has some tens of columns, and most stale classes are needed soon."""
        cls = np.array(sorted(stale), np.int64)
        s = centred_sums(cls)
        cls_t = torch.from_numpy(cls).to(dev)
        g = state["G"]
        for start, stop, block in store.chunks(max(1, min(chunk_rows, (1 << 24) // cls.size))):
            g[cls_t, start:stop] = (block @ s.T).T.double()  # rows × |stale|: the faster GEMM layout
        stale.clear()
        passes["gram_flushes"] += 1
        passes["gram_rows"] += cls.size

    def dist_to(classes: np.ndarray, positions: torch.Tensor | None = None):
        """(min distance², argmin class) of the given rows (by position; default: all) to centres."""
        if use_gram:
            return dist_gram(classes, positions)
        return dist_streamed(classes, positions)

    def dist_gram(classes: np.ndarray, positions: torch.Tensor | None):
        # ‖z − c‖² = ‖z‖² − 2·z·S_c/n_c + ‖c‖², with z·S_c from G: O(rows·|classes|), no pass over D.
        if stale.intersection(classes.tolist()):
            flush()
        cen = sums[classes] / counts[classes, None] - state["mu64"]
        csq = torch.from_numpy((cen ** 2).sum(1)).to(dev)
        state["max_csq"] = max(state["max_csq"], float(csq.max()))
        scale = torch.from_numpy(-2.0 / counts[classes]).to(dev)
        cls_t = torch.from_numpy(classes.astype(np.int64)).to(dev)
        g, sq = state["G"], state["sq"]
        m = positions.numel() if positions is not None else n
        best = torch.empty(m, dtype=torch.float64, device=dev)
        arg = torch.empty(m, dtype=torch.int64, device=dev)
        step = max(1, (1 << 22) // max(len(classes), 1))
        for start in range(0, m, step):
            stop = min(start + step, m)
            if positions is None:
                gb = g[cls_t, start:stop] if len(classes) > 1 else g[int(classes[0]), None, start:stop]
                sqb = sq[start:stop]
            else:
                p = positions[start:stop]
                gb, sqb = g[cls_t[:, None], p[None, :]], sq[p]
            d2 = torch.addcmul(sqb[None, :] + csq[:, None], gb, scale[:, None])
            v, a = d2.min(dim=0)
            best[start:stop], arg[start:stop] = v, cls_t[a]
        return best, arg

    def dist_streamed(classes: np.ndarray, positions: torch.Tensor | None):
        cen = torch.from_numpy((sums[classes] / counts[classes, None] - state["mu"]).astype(np.float32)).to(dev)
        csq = (cen.double() ** 2).sum(1).float()
        state["max_csq"] = max(state["max_csq"], float(csq.max()))
        cls_t = torch.from_numpy(classes.astype(np.int64)).to(dev)
        if positions is None:
            blocks = store.chunks(max(1, (1 << 24) // max(len(classes), 1)))
            sq_all, m = state["sq32"], n
            passes["full_passes"] += 1
        else:
            blocks = [(0, positions.numel(), store.rows(positions.cpu().numpy()))]
            sq_all, m = state["sq32"][positions], positions.numel()
        best = torch.empty(m, dtype=torch.float32, device=dev)
        arg = torch.empty_like(best, dtype=torch.int64)
        for start, stop, block in blocks:
            vals = torch.full((stop - start,), float("inf"), device=dev)
            who = torch.zeros(stop - start, dtype=torch.int64, device=dev)
            for c0 in range(0, len(classes), center_block):
                d2 = torch.addmm(sq_all[start:stop, None] + csq[None, c0:c0 + center_block], block,
                                 cen[c0:c0 + center_block].T, alpha=-2.0)
                v, a = d2.min(dim=1)
                better = v < vals
                vals = torch.where(better, v, vals)
                who = torch.where(better, cls_t[c0:c0 + center_block][a], who)
            best[start:stop], arg[start:stop] = vals, who
        return best, arg

    def sync_majority(major: np.ndarray) -> None:
        snap: dict = state["snap"]
        current = {int(c): int(counts[c]) for c in np.flatnonzero(major)}
        if state["best"] is None:
            state["best"], state["arg"] = dist_to(np.flatnonzero(major))
        else:
            removed = [c for c, v in snap.items() if current.get(c) != v]
            added = [c for c, v in current.items() if snap.get(c) != v]
            if removed:
                stale = torch.isin(state["arg"], torch.tensor(removed, device=dev))
                pos = torch.nonzero(stale).flatten()
                if pos.numel() > n // 2:
                    state["best"], state["arg"] = dist_to(np.flatnonzero(major))
                    added = []
                elif pos.numel():
                    maj = np.flatnonzero(major)
                    for p0 in range(0, pos.numel(), chunk_rows):
                        p = pos[p0:p0 + chunk_rows]
                        state["best"][p], state["arg"][p] = dist_to(maj, p)
            if added:
                b, a = dist_to(np.asarray(added, np.int64))
                better = b < state["best"]
                state["best"] = torch.where(better, b, state["best"])
                state["arg"] = torch.where(better, a, state["arg"])
        state["snap"] = current

    def numerator(rarest: int) -> torch.Tensor:
        key = (rarest, int(counts[rarest]))
        if state["num_key"] != key:
            if counts[rarest] == 0:
                state["num"] = torch.ones(n, dtype=torch.float64, device=dev)
            else:
                state["num"] = dist_to(np.array([rarest]))[0].double()
            state["num_key"] = key
        return state["num"]

    inf = torch.tensor(float("inf"), dtype=torch.float64, device=dev)
    n_balancing = 0
    for step in range(k):
        if balancing_mode(counts, k - step):
            n_balancing += 1
            if store is None:
                setup()
            major = counts > counts.mean()
            rarest = int(np.argmin(counts))
            sync_majority(major)
            num = numerator(rarest)
            den = state["best"].double()
            score = torch.where(avail & (den > 0), num / den, inf)
            j = int(torch.argmin(score))
            if not bool(avail[j]):
                # Every available score is inf (each point sits on a majority centre, e.g. constant
                # features): argmin's first inf may be a point already taken.  The reference takes the
                # first available point then.
                j = int(torch.nonzero(avail)[0])
            if tie_rtol > 0:
                # num and den carry rounding (float32 centring and products, G's float32 sums)
                # well below tol, so [lower, upper] brackets each row's float64 score: every row
                # that could be the reference's argmin has lower ≤ upper of the float32 winner.
                # Those rows are re-ranked with the reference's own float64 numbers (same cdist
                # on the same float64 rows and centres), ties to the first position as np.argmin
                # does there — all of them, in chunks (the old path skipped sets > 4096).
                tol = tie_rtol * (state["max_sq"] + state["max_csq"])
                tn = 0.0 if counts[rarest] == 0 else tol
                lower = torch.where(avail, (num - tn).clamp(min=0) / (den + tol), inf)
                upper = float("inf") if not (den[j] - tol > 0) else float((num[j] + tn) / (den[j] - tol))
                # Available rows only: with upper = inf (den[j] within tol of 0) the taken rows, whose
                # lower is inf, would pass lower <= upper and could be picked again.
                near = torch.nonzero(avail & (lower <= upper)).flatten().cpu().numpy()
                if near.size > 1:
                    exact = np.concatenate([
                        _exact_scores(features, cand[near[s:s + 4096]], sums, counts, rarest, major, chunk_rows)
                        for s in range(0, near.size, 4096)])
                    j = int(near[np.argmin(exact)])
        else:
            j = _nth_free(int(rng.integers(n - step)), taken_sorted)
        avail[j] = False
        picks.append(j)
        taken_sorted.insert(int(np.searchsorted(taken_sorted, j)), j)
        c = _predict(predicted, int(cand[j]))
        if c >= 0:
            counts[c] += 1
            sums[c] += np.asarray(features[int(cand[j])], np.float64)
            if use_gram and store is not None:
                stale.add(c)
    if timings is not None:
        timings.update(balancing_steps=n_balancing, random_steps=k - n_balancing, **passes)
    return cand[np.asarray(picks, np.int64)]
