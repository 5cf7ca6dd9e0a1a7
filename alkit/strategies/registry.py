"""Strategy registry: a name -> plain function ``(pool, budget, rng) -> global indices``.

Anywhere a strategy name is accepted, a user's own callable with that signature is accepted
too (:func:`resolve_strategy`).  Oracle baselines, which read true labels of unlabelled points,
are flagged at registration and the flag travels into every result row.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import numpy as np

from alkit.checks import ParameterError, check_int
from alkit.pool import PoolState, check_features
from alkit.strategies._dense import torch_threads


class Strategy(Protocol):
    def __call__(self, pool: PoolState, budget: int, rng: np.random.Generator) -> np.ndarray: ...


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    fn: Strategy
    oracle: bool = False
    summary: str = ""
    reference: str = ""
    #: Pool inputs beyond features and model that the strategy reads: ("images",) for VAAL.
    needs: tuple[str, ...] = ()
    #: The strategy this one is a controlled variant of ("margin" for margin_balanced): an experiment's
    #: knob (alkit.strategies.class_balance), left out of the sweeps that run every strategy by default.
    variant_of: str = ""
    #: The strategy reads the pool only through one pass over its eligible rows' logits and refuses
    #: non-finite logits there (:func:`alkit.checks.check_finite_logits`): ``select`` then skips its
    #: own scan of every feature, a second pass over the pool (rows it never reads cannot change
    #: its picks).
    checks_inputs: bool = False
    #: The strategy scores, in torch, logits that numpy's BLAS product has just made (a linear head
    #: on features): ``select`` runs torch on one thread for it.  After each product numpy's BLAS
    #: threads go on spinning on the cores for a while, and torch's own threads would fight them
    #: (the scores took twice as long on 2 cores); the product keeps numpy's threads.
    numpy_product: bool = False


_REGISTRY: dict[str, StrategyInfo] = {}


def _first_line(doc: str | None) -> str:
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    return lines[0] if lines else ""


#: Extra pool inputs a strategy may declare with ``register(..., needs=...)``.
NEEDS = ("images",)


def register(name: str, *, oracle: bool = False, reference: str = "",
             needs: tuple[str, ...] = (), variant_of: str = "", checks_inputs: bool = False,
             numpy_product: bool = False) -> Callable[[Strategy], Strategy]:
    """Decorator: register ``fn`` under ``name``.  ``oracle=True`` marks a baseline that reads
    true labels of unlabelled points (it receives ``pool.oracle_labels``); ``needs=("images",)``
    one that trains on the pool's images (``pool.images``), which only loops holding the images
    can run; ``variant_of`` a controlled variant of a registered strategy (an experiment's knob,
    not in the default sweeps); ``checks_inputs`` one that checks the rows it reads itself
    (:attr:`StrategyInfo.checks_inputs`); ``numpy_product`` one that scores the logits of numpy's
    product in torch (:attr:`StrategyInfo.numpy_product`)."""
    if variant_of and variant_of not in _REGISTRY:
        raise ParameterError(f"variant_of must name a registered strategy, got {variant_of!r}", param="variant_of")
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ParameterError(f"needs must name inputs among {NEEDS}, got {sorted(unknown)}", param="needs")

    def decorate(fn: Strategy) -> Strategy:
        if name in _REGISTRY:
            raise ParameterError(f"strategy name {name!r} is already registered", param="name")
        _REGISTRY[name] = StrategyInfo(name, fn, oracle, _first_line(fn.__doc__), reference, tuple(needs), variant_of,
                                       checks_inputs, numpy_product)
        fn.strategy_name = name  # type: ignore[attr-defined]
        fn.oracle = oracle  # type: ignore[attr-defined]
        fn.needs = tuple(needs)  # type: ignore[attr-defined]
        return fn

    return decorate


def available_strategies(*, images: bool = False, variants: bool = True) -> list[StrategyInfo]:
    """The registered strategies that run on features (and a model) alone, in registration order.
    ``images=True`` adds those that train on the pool's images (VAAL), which only the fine-tuning
    loop (or a loop given ``images=``) can run; ``variants=False`` leaves out the controlled variants
    (``margin_balanced``, ``margin_class_matched``, …): what every feature sweep runs by default."""
    return [info for info in _REGISTRY.values()
            if (images or "images" not in info.needs) and (variants or not info.variant_of)]


def strategy_names(*, images: bool = False, variants: bool = True) -> list[str]:
    """Names of :func:`available_strategies` (same options)."""
    return [info.name for info in available_strategies(images=images, variants=variants)]


def in_registry_order(names) -> list[str]:
    """``names`` in registry order (random first), unregistered names last by name: legends and
    tables list strategies the same way everywhere."""
    order = {s: i for i, s in enumerate(strategy_names(images=True))}
    return sorted(names, key=lambda s: (order.get(s, len(order)), s))


def resolve_strategy(strategy: str | Strategy | StrategyInfo) -> StrategyInfo:
    """Turn a registered name or a user's callable into a :class:`StrategyInfo`."""
    if isinstance(strategy, StrategyInfo):
        return strategy
    if isinstance(strategy, str):
        if strategy not in _REGISTRY:
            raise ParameterError(
                f"strategy {strategy!r} is unknown; choose one of {', '.join(_REGISTRY)} or pass a callable",
                param="strategy",
            )
        return _REGISTRY[strategy]
    if callable(strategy):
        try:
            n_params = len(inspect.signature(strategy).parameters)
        except (TypeError, ValueError):
            n_params = 3
        if n_params < 3:
            raise ParameterError("strategy callable must accept (pool, budget, rng) and return pool indices",
                                 param="strategy")
        name = getattr(strategy, "strategy_name", None) or getattr(strategy, "__name__", type(strategy).__name__)
        return StrategyInfo(name, strategy, bool(getattr(strategy, "oracle", False)), _first_line(strategy.__doc__),
                            needs=tuple(getattr(strategy, "needs", ())))
    raise ParameterError(f"strategy must be a registered name or a callable, got {type(strategy).__name__}",
                         param="strategy")


def check_budget(budget: object) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ParameterError(f"budget must be a positive integer, got {budget!r}", param="budget")
    if budget <= 0:
        raise ParameterError(f"budget must be a positive integer (> 0), got {budget}", param="budget")
    return int(budget)


def as_generator(seed_or_rng: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed_or_rng, np.random.Generator):
        return seed_or_rng
    if seed_or_rng is None:
        raise ParameterError("seed must be given (an int or numpy Generator): results must be reproducible", param="seed")
    if isinstance(seed_or_rng, (bool, np.bool_)) or not isinstance(seed_or_rng, (int, np.integer)):
        raise ParameterError(f"seed must be a non-negative integer or a numpy Generator, got {seed_or_rng!r} "
                             f"({type(seed_or_rng).__name__})", param="seed")
    return np.random.default_rng(check_int(seed_or_rng, "seed", low=0))


def select(
    pool: PoolState,
    strategy: str | Strategy | StrategyInfo,
    budget: int,
    seed: int | np.random.Generator,
    *,
    oracle_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Run one query: ``min(budget, eligible)`` unique global indices of eligible points.

    Validates the budget and the strategy's answer (unique, eligible, right count), so that a
    user's own strategy is held to the same contract as the registered ones.  ``oracle_labels``
    is attached to the pool for oracle baselines only.
    """
    info = resolve_strategy(strategy)
    budget = check_budget(budget)
    rng = as_generator(seed)
    if info.oracle:
        if oracle_labels is None and pool.oracle_labels is None:
            raise ParameterError(
                f"strategy {info.name!r} is an oracle baseline and needs the true labels of the pool (oracle_labels)",
                param="oracle_labels",
            )
        if oracle_labels is not None:
            pool = replace(pool, oracle_labels=np.asarray(oracle_labels))
    elif pool.oracle_labels is not None:
        pool = replace(pool, oracle_labels=None)  # honest strategies never see hidden labels
    if "images" in info.needs:
        pool.require_images(info.name)
    if not info.checks_inputs:
        check_finite_inputs(pool)
    n_eligible = int(pool.eligible.sum())
    if n_eligible == 0:
        raise ValueError("the pool has no eligible (unlabelled, not held-out) point left to query")
    want = min(budget, n_eligible)
    # Here, and never inside a strategy, a selection changes a process-wide setting: on a small pool
    # torch runs this call on one thread (restored after), as threading tiny products costs
    # milliseconds per call on a busy CPU; so does a strategy scoring numpy's product (its
    # StrategyInfo.numpy_product).  Sweep workers run one thread each anyway.
    one_thread = info.numpy_product and pool.logits is None and pool.weight is not None
    with torch_threads(pool.size * (pool.dim + pool.num_classes), one=one_thread):
        picks = np.asarray(info.fn(pool, want, rng))
    return check_picks(picks, pool, want, info.name)


#: Key in ``StrategyCache.run`` recording that the run's features were found finite (they do not
#: change between its rounds, so one pass over them is enough).
_FINITE_KEY = ("registry", "finite_features")


def check_finite_inputs(pool: PoolState) -> None:
    """Raise a ValueError naming ``features`` / ``logits`` if they hold NaN or inf.

    A non-finite row would otherwise win some strategies (coreset, BADGE and ProbCover picked NaN
    rows first; TypiClust's clustering never returned).  The features are scanned once per call
    (chunked, bounded memory), or once per run when the pool carries the run's ``cache`` (bound to
    these features); the head is checked by :class:`PoolState` itself."""
    if pool.cache is None or not pool.cache.run.get(_FINITE_KEY):
        check_features(pool.features, "features")
        if pool.cache is not None:
            pool.cache.run[_FINITE_KEY] = True
    if pool.logits is not None:
        check_features(np.asarray(pool.logits), "logits")


def check_picks(picks: np.ndarray, pool: PoolState, want: int, name: str) -> np.ndarray:
    if picks.ndim != 1 or (picks.size and not np.issubdtype(picks.dtype, np.integer)):
        raise ParameterError(f"strategy {name!r} must return a 1-D array of integer indices, got {picks.dtype} {picks.shape}",
                             param="strategy")
    picks = picks.astype(np.int64)
    if picks.size != want:
        raise ParameterError(f"strategy {name!r} returned {picks.size} indices, expected {want}", param="strategy")
    if picks.size and (picks.min() < 0 or picks.max() >= pool.size):
        raise ParameterError(f"strategy {name!r} returned indices outside [0, {pool.size})", param="strategy")
    if np.unique(picks).size != picks.size:
        raise ParameterError(f"strategy {name!r} returned duplicate indices", param="strategy")
    if not pool.eligible[picks].all():
        raise ParameterError(f"strategy {name!r} returned labelled or held-out points", param="strategy")
    return picks
