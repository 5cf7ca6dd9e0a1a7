"""alkit: active learning at the ImageNet scale, on frozen features.

Companion to Emam et al., *Active Learning at the ImageNet Scale* (arXiv:2111.12880).
"""
from alkit.pool import PoolState, make_pool
from alkit.strategies import available_strategies, register, resolve_strategy, select, strategy_names

__version__ = "0.1.0"
__all__ = ["PoolState", "make_pool", "available_strategies", "register", "resolve_strategy", "select", "strategy_names"]
