"""``python -m alkit samples``: the sample images of chosen points."""
from __future__ import annotations

import sys

from alkit.cli.common import HelpFormatter, OneLineParser, one_line


def samples_main(argv: list[str] | None = None) -> int:
    """``python -m alkit samples``: rebuild the shipped feature sample from the feature cache."""
    parser = OneLineParser(prog="python -m alkit samples", formatter_class=HelpFormatter,
                           description="Rebuild the shipped feature sample from the cached Tiny-ImageNet features.")
    parser.add_argument("--out", default=None, help="where to write it (default: the shipped file)")
    parser.add_argument("--data-root", default=None, help="folder holding tiny-imagenet-200.tar.gz")
    args = parser.parse_args(argv)
    from alkit.experiments.samples import SAMPLE_FILE, rebuild_sample

    try:
        path = rebuild_sample(args.out or SAMPLE_FILE, args.data_root)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit samples: error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
