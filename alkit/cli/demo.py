"""``python -m alkit demo``: the one-minute demo on synthetic Gaussian mixtures."""
from __future__ import annotations

import sys

from alkit.cli.common import HelpFormatter, OneLineParser, non_negative_int, one_line, parse_seeds


def demo_main(argv: list[str] | None = None) -> int:
    """``python -m alkit demo``: every strategy on two synthetic pools, rows and figures."""
    parser = OneLineParser(prog="python -m alkit demo", formatter_class=HelpFormatter,
                           description="A short demo on synthetic pools: every strategy, accuracy and imbalance "
                                       "against labels.")
    parser.add_argument("--out", default="results/demo", help="output folder")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated non-negative integer seeds")
    parser.add_argument("--rounds", type=non_negative_int, default=4, help="query rounds")
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
        from alkit.experiments.demo import write_demo

        paths = write_demo(args.out, tuple(seeds), args.rounds)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit demo: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print("wrote", ", ".join(str(p) for p in paths))
    return 0
