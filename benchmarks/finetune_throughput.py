"""Fine-tuning throughput: training and re-embedding images/s of ResNet-18 (CIFAR stem) at 32 px.

Times the real code path of :mod:`alkit.finetune` — :func:`train_round` (SGD, random crop + flip,
autocast and channels-last on CUDA) timed per epoch after a warm-up epoch, and :func:`predict` over
the pool (the re-embedding each round) — on random 32-px images held as a :class:`PoolImages`
(decoded pixels in memory, on the GPU when there is one).  Writes
``results/benchmarks/finetune_throughput.{json,md}``.

    python benchmarks/finetune_throughput.py                  # CPU; and CUDA (bf16, fp32) when present
    python benchmarks/finetune_throughput.py --cpu-images 512 --cuda-images 50000

Target on one modern GPU: ≥ 15,000 training images/s (bf16, channels-last, batch 512).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import RESULTS, machine, save  # noqa: E402

from alkit.data.images import PoolImages  # noqa: E402
from alkit.finetune import autocast_dtype, finetune_config, network_source, predict, train_round  # noqa: E402
from alkit.io import provenance  # noqa: E402

TARGET_GPU_TRAIN = 15_000


def measure(device: str, images: int, epochs: int, batch_size: int, precision: str, embed_batch: int,
            threads: int | None = None) -> dict:
    """Training images/s (epochs after the first) and re-embedding images/s on ``device``."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, images).astype(np.int64)
    pool = PoolImages.from_arrays(pixels, mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26)).to(dev)
    source = network_source("resnet18_scratch")
    config = finetune_config("gpu_cifar10", epochs=epochs, batch_size=batch_size, patience=0, precision=precision,
                             checkpoint_seconds=1e9)
    stamps: list[float] = []

    def on_epoch(epoch: int) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    training = train_round(source, pool, labels, np.arange(images), np.empty(0, np.int64), 10, config, rng, dev,
                           on_epoch=on_epoch)
    per_epoch = np.diff(stamps)
    train_rate = images / float(np.median(per_epoch)) if per_epoch.size else float("nan")
    dtype = autocast_dtype(precision, dev)
    channels_last = dev.type == "cuda"
    rows = np.arange(images)
    predict(training.net, pool, rows[:embed_batch], dev, batch_size=embed_batch, dtype=dtype,
            channels_last=channels_last)   # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    predict(training.net, pool, rows, dev, batch_size=embed_batch, dtype=dtype, channels_last=channels_last)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    embed_rate = images / (time.perf_counter() - started)
    return {"device": str(dev), "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "precision": precision, "autocast": str(dtype) if dtype else "none", "channels_last": channels_last,
            "images": images, "resolution": 32, "batch_size": batch_size, "epochs_timed": int(per_epoch.size),
            "epoch_seconds": [round(float(s), 3) for s in per_epoch], "torch_threads": torch.get_num_threads(),
            "train_images_per_second": round(train_rate, 1), "embed_batch": embed_batch,
            "embed_images_per_second": round(embed_rate, 1), "load_average": os.getloadavg()[0]}


def markdown(results: list[dict], info: dict) -> str:
    lines = ["# Fine-tuning throughput (ResNet-18, CIFAR stem, 32 px)", "",
             "The real path of `alkit.finetune`: `train_round` (SGD + momentum, random crop + flip, images held "
             "as decoded pixels on the device) timed per epoch after a warm-up epoch, and `predict` over the pool "
             "(the re-embedding each round).  Regenerate: `python benchmarks/finetune_throughput.py`.", "",
             f"Machine: {info['cpu']} ({info['cpu_count']} cores, load average {info['loadavg'][0]:.1f}), "
             f"GPU: {info['gpu'] or 'none'}; torch {info['torch']}; {info['time_utc']}.", "",
             "| device | precision | channels-last | batch | images | train img/s | re-embed img/s | threads |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['gpu'] or r['device']} | {r['autocast']} | {r['channels_last']} | {r['batch_size']} | "
                     f"{r['images']} | {r['train_images_per_second']:,} | {r['embed_images_per_second']:,} | "
                     f"{r['torch_threads']} |")
    cpu = next((r for r in results if r["device"] == "cpu"), None)
    if cpu is not None:
        # One round of the gpu_cifar10 scale: ≈ 3 k labelled images × 30 epochs + 50 k re-embedded + 10 k tested.
        round_s = 3000 * 30 / cpu["train_images_per_second"] + 60_000 / cpu["embed_images_per_second"]
        lines += ["", f"On this CPU one round of the reduced CIFAR-10 schedule (`gpu_cifar10`: about 3,000 labelled "
                      f"images × 30 epochs, then 50,000 re-embedded and 10,000 tested) would take about "
                      f"{round_s / 3600:.1f} h: the fine-tuning regime is for a GPU; the CPU runs the `tiny` preset "
                      "on small slices (tests, smoke runs)."]
    if not any(r["device"].startswith("cuda") for r in results):
        lines += ["", f"No CUDA device here: the GPU rows (target ≥ {TARGET_GPU_TRAIN:,} training images/s with "
                      "bf16 + channels-last) are measured by running this script on a GPU machine."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-images", type=int, default=512)
    parser.add_argument("--cpu-epochs", type=int, default=3, help="the first is a warm-up")
    parser.add_argument("--cpu-batch", type=int, default=128)
    parser.add_argument("--cuda-images", type=int, default=50_000)
    parser.add_argument("--cuda-epochs", type=int, default=4)
    parser.add_argument("--cuda-batch", type=int, default=512)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = []
    if not args.skip_cpu:
        results.append(measure("cpu", args.cpu_images, args.cpu_epochs, args.cpu_batch, "fp32", 512))
        print(results[-1], flush=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        for precision in ("auto", "fp32"):
            results.append(measure("cuda", args.cuda_images, args.cuda_epochs, args.cuda_batch, precision, 2048))
            print(results[-1], flush=True)
    info = {**machine(), **provenance(benchmark="finetune_throughput")}
    save(Path(args.out) / "finetune_throughput", {"results": results, "provenance": info}, markdown(results, info))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
