"""Query strategies: plain functions ``(pool, budget, rng) -> global indices``, by name.

Importing this package registers every built-in strategy.
"""
from alkit.strategies.registry import (
    StrategyInfo,
    available_strategies,
    register,
    resolve_strategy,
    select,
    strategy_names,
)
from alkit.strategies import uncertainty, boundary  # noqa: F401  (registration side effect)
# diversity / hybrid strategies
from alkit.strategies import balancing, coreset, badge, partitioned, cluster_margin, typiclust, probcover  # noqa: F401,E501
# strategies that train on the pool's images (run by the fine-tuning loop, alkit.finetune)
from alkit.strategies import vaal  # noqa: F401
# controlled variants of the score-based strategies (class balance and composition as knobs)
from alkit.strategies import class_balance  # noqa: F401

__all__ = ["StrategyInfo", "available_strategies", "register", "resolve_strategy", "select", "strategy_names"]
