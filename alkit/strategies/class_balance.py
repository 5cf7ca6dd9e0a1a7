"""Class balance and class composition as knobs: two wrappers around a strategy.

Claim 1 of the paper says uncertainty sampling fails at many classes *because* its batches are
class-imbalanced.  Measuring imbalance beside accuracy cannot tell that apart from other causes
(fewer labels per class, a weaker head); these two wrappers change one thing and keep the rest.

**class_balanced(S)** — a real strategy: it reads predicted classes, never hidden labels.  With
b the budget, C the classes, ŷ = argmax_k ℓ_k a point's predicted class and s(z) the score of the
score-based strategy S (smallest first: max p for confidence, p₍₁₎ − p₍₂₎ for margin, −H(p) for
entropy), each class c gets the quota of the paper's rule (:func:`class_quotas`)

    q_c = ⌊b/C⌋, plus 1 for b mod C classes drawn at random,

and takes the q_c eligible points with ŷ = c and the smallest s.  What a predicted class cannot
fill (fewer than q_c eligible points predicted as c) goes to the smallest s among the points left,
so the batch always has b points.  Exact ties in s are broken by one seeded key per point.

**class_matched(S)** — an ORACLE control, like ``balanced_random``.  It asks S for its batch on
the current pool state, counts the batch's *true* classes n_c, and returns n_c points drawn
uniformly at random from the eligible points of each true class c.  It keeps S's class composition
and throws away S's choice within each class.

Paired by seed, the two split S's gain over random (:mod:`alkit.experiments.mechanism`):

    S − random = (S − class_matched(S))            choice within classes, composition fixed
               + (class_matched(S) − random)       class composition alone

and ``class_balanced(S)`` against S asks whether the same scores do better with balanced batches.

:func:`balanced_take` is the rule on arrays; the registered strategies are
``{confidence,margin,entropy}_balanced`` and ``{confidence,margin,entropy}_class_matched``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from alkit.checks import ParameterError
from alkit.pool import PoolState
from alkit.strategies.registry import Strategy, check_picks, register, resolve_strategy
from alkit.strategies.uncertainty import SCORE_FUNCTIONS, class_quotas, score_eligible

__all__ = ["class_balanced", "class_matched", "balanced_take", "matched_draw"]

ScoreFunction = Callable[[np.ndarray], np.ndarray]
#: What each registered score prefers, in words (its score is smallest there).
_WANTED = {"confidence": "the smallest max p", "margin": "the smallest p₍₁₎ − p₍₂₎", "entropy": "the largest H(p)"}


def balanced_take(scores: np.ndarray, predicted: np.ndarray, quotas: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Positions taken by the class-balanced rule, best first within each part.

    Class c takes its ``quotas[c]`` smallest ``scores`` among the points with ``predicted == c``;
    then the shortfall (quotas no predicted class could fill) is taken from the smallest scores
    left.  Ties in ``scores`` go to the smaller ``keys`` (one random key per point).  Returns
    ``min(quotas.sum(), n)`` distinct positions: the in-quota points in score order, then the
    refill in score order.
    """
    scores, predicted, quotas = np.asarray(scores), np.asarray(predicted), np.asarray(quotas)
    n = scores.shape[0]
    budget = min(int(quotas.sum()), n)
    order = np.lexsort((keys, scores))                # every point, best first
    classes = predicted[order]
    # Rank of each point among those of its predicted class, in score order.
    by_class = np.argsort(classes, kind="stable")
    first_of_class = np.searchsorted(classes[by_class], np.arange(quotas.size))
    rank = np.empty(n, np.int64)
    rank[by_class] = np.arange(n) - first_of_class[classes[by_class]]
    in_quota = rank < quotas[classes]
    refill = order[~in_quota][: budget - int(in_quota.sum())]
    return np.concatenate([order[in_quota], refill]).astype(np.int64)


def matched_draw(candidates: np.ndarray, candidate_classes: np.ndarray, wanted: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """``wanted[c]`` of ``candidates`` drawn uniformly without replacement from those of class c, for
    every c (in class order); raises if a class has fewer candidates than wanted."""
    by_class = np.argsort(candidate_classes, kind="stable")
    bounds = np.searchsorted(candidate_classes[by_class], np.arange(wanted.size + 1))
    picks = []
    for c in np.flatnonzero(wanted):
        members = candidates[by_class[bounds[c]:bounds[c + 1]]]
        if members.size < wanted[c]:
            raise ValueError(f"class {c}: {wanted[c]} points wanted, {members.size} eligible")
        picks.append(rng.choice(members, size=int(wanted[c]), replace=False))
    return np.concatenate(picks).astype(np.int64) if picks else np.empty(0, np.int64)


def _score_function(strategy: str | ScoreFunction) -> tuple[str, ScoreFunction]:
    """(name, score function over logits) of a score-based strategy given by name or as a function."""
    if isinstance(strategy, str):
        if strategy not in SCORE_FUNCTIONS:
            raise ParameterError(f"strategy: class_balanced needs a score-based strategy, one of "
                                 f"{', '.join(SCORE_FUNCTIONS)}, or a score function logits (n × C) -> scores (n,), "
                                 f"smallest first; got {strategy!r}", param="strategy")
        return strategy, SCORE_FUNCTIONS[strategy]
    if not callable(strategy):
        raise ParameterError(f"strategy must be a name among {', '.join(SCORE_FUNCTIONS)} or a score function "
                             f"logits -> scores, got {type(strategy).__name__}", param="strategy")
    return getattr(strategy, "__name__", "score"), strategy


def class_balanced(strategy: str | ScoreFunction) -> Strategy:
    """The strategy that gives ``strategy``'s scores per-class quotas on the predicted class.

    ``strategy``: a score-based strategy by name (``"confidence"``, ``"margin"``, ``"entropy"``) or
    a function ``logits (n × C float32) -> scores (n,)``, smallest first.  Returns a strategy
    ``(pool, budget, rng) -> indices`` (rule: module docstring); it needs the pool's model
    (a linear head or logits)."""
    label, score_fn = _score_function(strategy)

    def balanced(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        pool.require_model(f"{label}_balanced")
        idx, scores, predicted = score_eligible(pool, score_fn, predictions=True)
        quotas = class_quotas(budget, pool.num_classes, rng)
        keys = rng.random(idx.size)
        return idx[balanced_take(scores, predicted, quotas, keys)]

    balanced.__name__ = f"{label}_balanced"
    wants = _WANTED.get(label, f"the smallest {label} scores")
    balanced.__doc__ = (
        f"{label}, class-balanced: per predicted class c, the q_c = ⌊b/C⌋ (+1 for b mod C random classes) "
        f"points with {wants}; unfilled quotas go to the best points left.\n\n"
        "Reads predicted classes ŷ = argmax ℓ only (a real strategy); see alkit.strategies.class_balance.")
    return balanced


def class_matched(strategy: str | Strategy) -> Strategy:
    """ORACLE control: ``strategy``'s true-class histogram, filled by uniform draws within each class.

    ``strategy``: any strategy that reads no hidden labels (a registered name or a callable).  The
    returned strategy is an oracle: it needs ``pool.oracle_labels`` (the loop and
    :func:`alkit.strategies.select` pass them to strategies flagged ``oracle``)."""
    info = resolve_strategy(strategy)
    if info.oracle:
        raise ParameterError(f"strategy: class_matched wraps a strategy that reads no hidden labels; "
                             f"{info.name!r} is an oracle baseline", param="strategy")

    def matched(pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray:
        if pool.oracle_labels is None:
            raise ParameterError(f"{info.name}_class_matched is an oracle control: the pool must carry oracle_labels",
                                 param="oracle_labels")
        honest = replace(pool, oracle_labels=None)   # S itself never sees the hidden labels
        batch = check_picks(np.asarray(info.fn(honest, budget, rng)), honest, budget, info.name)   # S's pick here
        truth = pool.oracle_labels
        wanted = np.bincount(truth[batch], minlength=pool.num_classes)
        idx = pool.eligible_indices()
        return np.sort(matched_draw(idx, truth[idx], wanted, rng))

    matched.__name__ = f"{info.name}_class_matched"
    matched.__doc__ = (
        f"ORACLE {info.name}, class-matched: {info.name}'s batch's true-class counts n_c, then n_c eligible "
        "points drawn uniformly from each true class c.\n\n"
        f"Keeps {info.name}'s class composition, throws away its choice within classes; reads the hidden "
        "labels, a control only (alkit.strategies.class_balance).")
    matched.oracle = True   # type: ignore[attr-defined]  (also when used unregistered)
    return matched


for _name in ("confidence", "margin", "entropy"):
    register(f"{_name}_balanced", variant_of=_name, numpy_product=True,
             reference="Emam et al. 2021 (BASE's quotas); cf. small-text's ClassBalancer")(class_balanced(_name))
    register(f"{_name}_class_matched", oracle=True, variant_of=_name, numpy_product=True,
             reference="alkit's control for Emam et al. 2021, claim 1")(class_matched(_name))
