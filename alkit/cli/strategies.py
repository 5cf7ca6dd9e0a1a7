"""``python -m alkit strategies``: the registered strategies."""
from __future__ import annotations

import argparse


def cmd_strategies(args: argparse.Namespace) -> int:
    from alkit.strategies import available_strategies

    infos = available_strategies(images=True)
    width = max(len(i.name) for i in infos)
    for info in infos:   # "images": trains on the pool's images, so `finetune` only
        flag = "oracle" if info.oracle else "images" if "images" in info.needs else "      "
        print(f"{info.name:<{width}}  {flag}  {info.summary}")
    return 0
