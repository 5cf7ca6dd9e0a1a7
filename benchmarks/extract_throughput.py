"""Feature-extraction throughput (images/s) per data set, resolution and thread setting.

Runs the real extraction path (decode → resize → backbone → float16 shards → cache entry) on a
class-stratified slice of each data set, into a temporary cache, and writes
``results/benchmarks/extract_throughput.{json,md}`` with provenance and the machine's load average
(the build machines are shared; a busy neighbour halves the numbers).

    python benchmarks/extract_throughput.py                      # defaults below
    python benchmarks/extract_throughput.py --images 256 --resolutions 96 112 128 --threads 1 2

It also reports the full extractions already in the default cache (their meta.json records
images, compute seconds and settings), so the README can quote measured end-to-end numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alkit.data.backbones import load_backbone  # noqa: E402
from alkit.data.datasets import load_dataset  # noqa: E402
from alkit.data.features import DEFAULT_SMALL_IMAGE_RESOLUTION, extract_features  # noqa: E402
from alkit.io import provenance, write_json, write_text  # noqa: E402

SHARED = Path(os.environ.get("ALKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
DATASETS = {  # name → (root, split)
    "cifar10": (SHARED / "cifar10-jpeg.tar.gz", "train"),
    "tiny-imagenet": (SHARED / "tiny-imagenet-200.tar.gz", "train"),
}
#: Full extractions the project uses: 60 k CIFAR-10 + 110 k Tiny-ImageNet images.
FULL_IMAGES = {"cifar10": 60_000, "tiny-imagenet": 110_000}


def measure(name: str, root: Path, split: str, images: int, resolution: int, threads: int, workers: int,
            batch_size: int, backbone) -> dict:
    torch.set_num_threads(threads)
    dataset = load_dataset(name, root, split, limit=images)
    with tempfile.TemporaryDirectory() as cache:
        # Warm-up batch: the first call per input shape builds the convolution kernels.
        warm = load_dataset(name, root, split, limit=batch_size, limit_seed=1)
        extract_features(warm, backbone, resolution=resolution, batch_size=batch_size, cache_dir=cache,
                         device="cpu", progress=False, num_workers=workers)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        extract_features(dataset, backbone, resolution=resolution, batch_size=batch_size, cache_dir=cache,
                         device="cpu", progress=False, num_workers=workers)
        seconds = time.perf_counter() - started
    rate = len(dataset) / seconds
    return {"dataset": name, "split": split, "images": len(dataset), "resolution": resolution, "threads": threads,
            "num_workers": workers, "batch_size": batch_size, "seconds": round(seconds, 2),
            "images_per_second": round(rate, 1), "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2)}


def full_extractions(cache_dir: Path) -> list[dict]:
    """Measured end-to-end numbers of the complete cache entries (not the derived long-tailed ones)."""
    rows = []
    for meta_path in sorted((cache_dir / "features").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("derived_from") or meta.get("subset"):
            continue
        ext = meta["extraction"]
        rows.append({"dataset": meta["dataset"], "split": meta["split"], "n": meta["n"],
                     "backbone": meta["backbone"]["backbone"], "resolution": meta["resolution"],
                     "compute_seconds": ext["compute_seconds"], "images_per_second": ext["images_per_second"],
                     "threads": ext["threads"], "batch_size": ext["batch_size"], "sessions": ext["sessions"],
                     "directory": str(meta_path.parent)})
    return rows


def markdown(results: list[dict], full: list[dict], info: dict) -> str:
    lines = ["# Feature-extraction throughput (EfficientNet-Lite0, CPU)", "",
             f"Machine: {info['cpu_count']} CPU cores, {info['platform']}; torch {info['torch']}; "
             f"{info['time_utc']}.  Shared machine: load averages recorded per row.", "",
             "| data set | px | threads | workers | batch | images | images/s | est. full extraction (min) | load avg |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        minutes = FULL_IMAGES[r["dataset"]] / r["images_per_second"] / 60
        lines.append(f"| {r['dataset']} | {r['resolution']} | {r['threads']} | {r['num_workers']} | {r['batch_size']} "
                     f"| {r['images']} | {r['images_per_second']} | {minutes:.0f} | "
                     f"{r['load_average_before']}→{r['load_average_after']} |")
    if full:
        lines += ["", "## Full extractions in the cache (measured end to end)", "",
                  "| data set | split | images | px | threads | batch | compute (min) | images/s | sessions |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in full:
            threads = r["threads"] if isinstance(r["threads"], int) else "/".join(map(str, r["threads"]))
            lines.append(f"| {r['dataset']} | {r['split']} | {r['n']} | {r['resolution']} | {threads} | "
                         f"{r['batch_size']} | {r['compute_seconds'] / 60:.1f} | {r['images_per_second']} | "
                         f"{r['sessions']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images per measurement (class-stratified)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[96, DEFAULT_SMALL_IMAGE_RESOLUTION, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--out", default=str(REPO / "results" / "benchmarks"))
    parser.add_argument("--cache", default=None, help="cache holding full extractions to report")
    parser.add_argument("--report-only", action="store_true",
                        help="rewrite the Markdown from the existing JSON (no measurement)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.report_only:
        saved = json.loads((out / "extract_throughput.json").read_text())
        write_text(out / "extract_throughput.md", markdown(saved["results"], saved["full_extractions"],
                                                           saved["provenance"]))
        return 0

    backbone = load_backbone()
    results = []
    for name in args.datasets:
        root, split = DATASETS[name]
        if not root.is_file():
            print(f"skipping {name}: {root} absent", file=sys.stderr)
            continue
        for resolution in args.resolutions:
            for threads in args.threads:
                for workers in args.workers:
                    row = measure(name, root, split, args.images, resolution, threads, workers, args.batch_size,
                                  backbone)
                    print(json.dumps(row), flush=True)
                    results.append(row)
    from alkit.data.datasets import default_cache_dir

    full = full_extractions(Path(args.cache) if args.cache else default_cache_dir())
    info = provenance(benchmark="extract_throughput", backbone="efficientnet_lite0")
    write_json(out / "extract_throughput.json", {"results": results, "full_extractions": full, "provenance": info})
    write_text(out / "extract_throughput.md", markdown(results, full, info))
    print(f"wrote {out / 'extract_throughput.json'} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
