"""``python -m alkit imagenet-pool``: generate the ImageNet-shaped synthetic pool."""
from __future__ import annotations

import sys

from alkit.cli.common import HelpFormatter, OneLineParser, flagged, positive_int, seed_int


def imagenet_pool_main(argv: list[str] | None = None) -> int:
    """``python -m alkit imagenet-pool``: write (or find) a synthetic pool of ImageNet's shape."""
    from alkit.data.imagenet_pool import (IMAGENET_CLASSES, IMAGENET_FEATURE_DIM, IMAGENET_TRAIN_SIZE, ImageNetPoolSpec,
                                     make_imagenet_pool)

    parser = OneLineParser(prog="python -m alkit imagenet-pool", formatter_class=HelpFormatter,
                           description="A synthetic pool of ImageNet's shape (features, labels, test set) on disk.")
    parser.add_argument("--out", default=None, help="output folder (default: ~/.cache/alkit/imagenet_like/<spec>)")
    parser.add_argument("--n-total", type=positive_int, default=IMAGENET_TRAIN_SIZE, help="training pool size")
    parser.add_argument("--num-classes", type=positive_int, default=IMAGENET_CLASSES)
    parser.add_argument("--dim", type=positive_int, default=IMAGENET_FEATURE_DIM, help="feature dimension")
    parser.add_argument("--n-test-per-class", type=positive_int, default=50)
    parser.add_argument("--seed", type=seed_int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        spec = ImageNetPoolSpec(n_total=args.n_total, num_classes=args.num_classes, dim=args.dim,
                                n_test_per_class=args.n_test_per_class, seed=args.seed)
        pool = make_imagenet_pool(args.out, spec, progress=not args.quiet)
    except (ValueError, OSError) as exc:
        print(f"python -m alkit imagenet-pool: error: {flagged(exc, IMAGENET_POOL_FLAGS)}",
              file=sys.stderr)
        return 2
    print(pool.path)
    return 0


#: ImageNetPoolSpec's fields → the flags of ``python -m alkit imagenet-pool``.
IMAGENET_POOL_FLAGS = {"n_total": "--n-total", "num_classes": "--num-classes", "n_test_per_class": "--n-test-per-class",
                       "dim": "--dim", "seed": "--seed"}
