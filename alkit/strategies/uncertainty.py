"""Random baselines and the classic uncertainty scores on model outputs.

With p = softmax(ℓ) the head's probabilities of an eligible point and p₍₁₎ ≥ p₍₂₎ its two largest,
each strategy takes the b eligible points with the smallest score (:func:`alkit.scores.take_smallest`,
exact ties broken by the selection rng):

    confidence:  max_k p_k                     (least confident first)
    margin:      p₍₁₎ − p₍₂₎                     (smallest margin first)
    entropy:     Σ_k p_k log p_k  = −H(p)      (largest entropy first)

``random`` draws b eligible points uniformly without replacement; ``balanced_random`` (an oracle
baseline, Emam et al.) draws the same number from every class by the true labels
(:func:`class_quotas` spreads b mod C over random classes).  The scores are computed chunk by
chunk (:meth:`alkit.pool.PoolState.iter_chunks`) in the formulas of :mod:`alkit.scores`, so the
whole pool is scored in bounded memory.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from alkit.checks import ParameterError, check_finite_logits
from alkit.pool import DEFAULT_CHUNK_ROWS, PoolState
from alkit.rows import read_rows
from alkit.scores import (SCORE_BLOCK_ROWS, count_logits_time, entropy, least_confidence_scores, margin_scores,
                          take_smallest)
from alkit.strategies.registry import register


def score_eligible(
    pool: PoolState, score_fn: Callable[[np.ndarray], np.ndarray], chunk_rows: int = DEFAULT_CHUNK_ROWS,
    predictions: bool = False,
) -> tuple[np.ndarray, ...]:
    """``(eligible indices, score_fn(logits) for each)``, in one chunked pass over the pool;
    ``predictions=True`` adds the predicted class argmax_k ℓ_k of each (first maximum).

    The logits are the pool's (``pool.logits``) or ℓ = z Wᵀ + b: numpy's float32 product over the
    same chunks as :meth:`alkit.pool.PoolState.iter_chunks`, so the same numbers bit for bit (the
    BLAS product's rounding depends on the chunk's row count, so the chunks must not change),
    computed into reused buffers from rows read by :func:`alkit.rows.read_rows` (float16
    converted by torch)."""
    idx = pool.eligible_indices()
    scores = np.empty(idx.size, np.float64)
    predicted = np.empty(idx.size, np.int64) if predictions else None
    source = "features" if pool.logits is None else "logits"
    for start, logits in _logit_chunks(pool, idx, chunk_rows):
        # One cache-sized block of rows at a time (SCORE_BLOCK_ROWS): the same numbers, faster.
        for s0 in range(0, logits.shape[0], SCORE_BLOCK_ROWS):
            block = logits[s0:s0 + SCORE_BLOCK_ROWS]
            at = start + s0
            check_finite_logits(block, idx[at:at + block.shape[0]], source)
            scores[at:at + block.shape[0]] = score_fn(block)
            if predictions:
                predicted[at:at + block.shape[0]] = block.argmax(axis=1)
    return (idx, scores, predicted) if predictions else (idx, scores)


def _logit_chunks(pool: PoolState, idx: np.ndarray, chunk_rows: int):
    """(start, float32 logits of ``idx[start:start + chunk_rows]``): the arrays are reused by the next chunk."""
    if pool.logits is not None or pool.weight is None:
        for start in range(0, idx.size, chunk_rows):
            yield start, pool.logits_of(idx[start:start + chunk_rows])
        return
    weight_t = np.ascontiguousarray(pool.weight, np.float32).T
    bias = np.ascontiguousarray(pool.bias, np.float32)
    rows = min(chunk_rows, max(idx.size, 1))
    feature_buffer = torch.empty(rows * pool.dim, dtype=torch.float32)
    logits_buffer = np.empty((rows, pool.num_classes), np.float32)
    for start in range(0, idx.size, chunk_rows):
        chunk = idx[start:start + chunk_rows]
        logits = logits_buffer[:chunk.size]
        started = time.perf_counter()
        with np.errstate(invalid="ignore", over="ignore"):   # a bad row is refused by name just after
            np.matmul(read_rows(pool.features, chunk, feature_buffer).numpy(), weight_t, out=logits)
        logits += bias
        count_logits_time(started)
        yield start, logits


def negative_entropy(logits: np.ndarray) -> np.ndarray:
    """Σ_k p_k log p_k = −H(p): entropy sampling's score, smallest (most uncertain) first."""
    return -entropy(logits)


#: The score of each score-based strategy here, over a chunk of logits (rows × C), smallest first:
#: what :func:`alkit.strategies.class_balance.class_balanced` gives per-class quotas.
SCORE_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "confidence": least_confidence_scores, "margin": margin_scores, "entropy": negative_entropy}


@register("random", reference="uniform sampling without replacement")
def random_sampling(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Random: ``budget`` eligible points drawn uniformly without replacement."""
    idx = pool.eligible_indices()
    return np.sort(rng.choice(idx, size=min(budget, idx.size), replace=False))


@register("balanced_random", oracle=True, reference="Emam et al. 2021 (BalancedRandom baseline)")
def balanced_random(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """ORACLE BalancedRandom: ⌊b/C⌋ random points per true class (+1 for b mod C random classes).

    Reads the true labels of unlabelled points, so it is a reference, never a real strategy.
    Classes with too few eligible points give their unused quota to a uniform random draw
    from the rest, so exactly ``budget`` points are returned.
    """
    if pool.oracle_labels is None:
        raise ParameterError("balanced_random is an oracle baseline: the pool must carry oracle_labels",
                             param="oracle_labels")
    idx = pool.eligible_indices()
    classes = pool.oracle_labels[idx]
    quotas = class_quotas(budget, pool.num_classes, rng)
    picks = []
    for c in range(pool.num_classes):
        members = idx[classes == c]
        take = min(quotas[c], members.size)
        if take:
            picks.append(rng.choice(members, size=take, replace=False))
    chosen = np.concatenate(picks) if picks else np.empty(0, np.int64)
    shortfall = budget - chosen.size
    if shortfall > 0:
        rest = np.setdiff1d(idx, chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, size=shortfall, replace=False)])
    return np.sort(chosen)


def class_quotas(budget: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """q_c = ⌊b/C⌋, plus 1 for b mod C classes drawn at random (the paper's quota rule)."""
    quotas = np.full(num_classes, budget // num_classes, np.int64)
    extra = rng.choice(num_classes, size=budget % num_classes, replace=False)
    quotas[extra] += 1
    return quotas


@register("confidence", reference="Lewis & Gale 1994; Emam et al. 2021 (Confidence)",
          checks_inputs=True, numpy_product=True)
def least_confidence(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Least confidence: the ``budget`` points with the smallest max_k p_k, p = softmax(ℓ)."""
    pool.require_model("confidence")
    idx, scores = score_eligible(pool, SCORE_FUNCTIONS["confidence"])
    return idx[take_smallest(scores, budget, rng)]


@register("margin", reference="Scheffer et al. 2001; Emam et al. 2021 (Margin)",
          checks_inputs=True, numpy_product=True)
def margin(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Margin: the ``budget`` points with the smallest p₍₁₎ − p₍₂₎ (top-two softmax gap)."""
    pool.require_model("margin")
    idx, scores = score_eligible(pool, SCORE_FUNCTIONS["margin"])
    return idx[take_smallest(scores, budget, rng)]


@register("entropy", reference="Shannon entropy sampling (Settles 2009 survey)",
          checks_inputs=True, numpy_product=True)
def max_entropy(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
    """Entropy: the ``budget`` points with the largest H(p) = −Σ_k p_k log p_k."""
    pool.require_model("entropy")
    idx, scores = score_eligible(pool, SCORE_FUNCTIONS["entropy"])
    return idx[take_smallest(scores, budget, rng)]
