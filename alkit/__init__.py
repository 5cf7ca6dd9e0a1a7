"""alkit: active learning at the ImageNet scale, on frozen features.

Companion to Emam et al., *Active Learning at the ImageNet Scale* (arXiv:2111.12880).
"""
from alkit.api import make_pool
from alkit.pool import PoolState, StrategyCache
from alkit.probe import LinearHead, ProbeConfig, train_linear_probe
from alkit.strategies import available_strategies, register, resolve_strategy, select, strategy_names

__version__ = "0.1.0"
__all__ = ["LinearHead", "PoolState", "ProbeConfig", "StrategyCache", "make_pool", "train_linear_probe", "available_strategies",
           "register", "resolve_strategy", "select", "strategy_names"]
