"""The paper's other regime: the whole network fine-tuned end to end on the labelled images each round.

Fine-tuning runs are runs of the one active-learning loop (:func:`alkit.loop.run_active_learning`)
with :class:`FineTuningTrainer` as its trainer and the images (:class:`alkit.data.images.PoolImages`)
as its inputs: the same seed gives the same validation split, initial pool and named random streams
(:func:`alkit.loop.stream`), the same row columns and :class:`alkit.loop.RunResult`, and a sweep
(:func:`alkit.experiments.runs.run_sweep`) writes the same run files (``<strategy>__seed<k>.csv``,
``.npz``, ``.json``), so notebooks, tables and claims read both.  Each round:

1. a fresh network — the backbone's starting weights (pretrained, or a seeded random initialisation
   for ``resnet18_scratch``) plus a new linear head — is trained on the labelled images with SGD
   (momentum, weight decay, cosine or step schedule), random crop + flip, class-weighted
   cross-entropy for long-tailed data, early stopping on the free validation split (the best epoch's
   weights are kept), as the authors' ``init_network_weights`` + ``train`` + ``load_best_ckpt``;
2. it is evaluated on the test set;
3. the pool is **re-embedded with this network**: its features z, head (W, b) and so its logits go
   to the strategy in a :class:`alkit.pool.PoolState`, with the pool's images (``images=``) for the
   strategies that train on pixels (VAAL) — every registered strategy runs unchanged.

Recipes are named presets (:data:`PRESETS`): ``paper_cifar10``, ``paper_cifar10_lt``,
``paper_imagenet`` (the authors' settings, PAPER.md), ``gpu_cifar10`` (a reduced schedule for one
GPU) and ``tiny`` (tests, CPU); the configured sweeps are :data:`FINETUNE_SCALES`.  On CUDA:
autocast (bf16, or fp16 with a GradScaler) and channels-last.  Under ``torchrun`` (WORLD_SIZE > 1)
each rank trains on its shard of every batch (DistributedDataParallel), evaluation and re-embedding
are sharded and gathered, and rank 0 selects and writes.  The loop's checkpoint holds, besides its
own state, the training state inside a round (model, optimiser, scheduler, generator states) and
the last finished round's network, so a killed run resumes in the epoch it was in and gives the
rows an uninterrupted run gives.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from alkit.checks import ParameterError
from alkit.data.backbones import CIFAR10_MEAN, CIFAR10_STD, load_backbone, resnet18_cifar
from alkit.data.datasets import load_dataset
from alkit.data.distributed import all_gather, barrier, broadcast, process_group, resolve_device, world_from_env
from alkit.data.features import Preprocessing
from alkit.data.images import PoolImages, random_crop_flip
from alkit.data.synthetic import colour_images
from alkit.experiments.catalog import SOURCES, data_root_for, data_spec
from alkit.loop import PoolView, RunData, Trainer
from alkit.strategies.registry import StrategyInfo

# --------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneConfig:
    """One round's training recipe (the fields of :data:`PRESETS`; override with ``replace``)."""

    epochs: int = 200                 # at most, per round
    batch_size: int = 128
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"          # "cosine" (period cosine_t_max epochs, default epochs), "step", "constant"
    cosine_t_max: int | None = None
    step_size: int = 10               # "step": lr × gamma every step_size epochs
    gamma: float = 0.1
    patience: int = 50                # early stopping on validation top-1 (0: train every epoch)
    class_weighted: bool = False      # inverse-frequency weighted cross-entropy (long-tailed data)
    augment: bool = True              # random crop (zero padding) + horizontal flip
    crop_padding: int = 4
    freeze_bn: bool | None = None     # None: BatchNorm statistics frozen for pretrained backbones (authors)
    eval_batch_size: int = 512
    precision: str = "auto"           # "auto": bf16 autocast on CUDA (fp16 + GradScaler without bf16), fp32 on CPU
    channels_last: bool = True        # CUDA only
    checkpoint_seconds: float = 300.0  # during training, a checkpoint at most this often (0: every epoch)
    vaal: dict = field(default_factory=dict)   # options of the "vaal" strategy (alkit.strategies.vaal)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "step_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}", param=name)
        for name in ("lr", "momentum", "weight_decay", "gamma", "checkpoint_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"{name} must be a finite number ≥ 0, got {value!r}", param=name)
        if self.lr <= 0:
            raise ParameterError(f"lr must be > 0, got {self.lr}", param="lr")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ParameterError(f"schedule must be 'cosine', 'step' or 'constant', got {self.schedule!r}",
                                 param="schedule")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise ParameterError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {self.precision!r}",
                                 param="precision")
        if self.patience < 0 or self.crop_padding < 0:
            raise ParameterError("patience and crop_padding must be ≥ 0", param="patience")

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


#: The authors' VAAL settings, CIFAR-10 and ImageNet (src/utils/parser.py help texts).
_VAAL_CIFAR = dict(latent_dim=32, adversary_weight=1.0, lr_vae=5e-4, lr_discriminator=5e-4)
_VAAL_IMAGENET = dict(latent_dim=64, adversary_weight=10.0, lr_vae=5e-5, lr_discriminator=1e-3)

PRESETS: dict[str, FinetuneConfig] = {
    # SimCLR ResNet-18 fine-tuned: SGD lr 0.001, momentum 0.9, wd 5e-4, cosine T = 200, 200 epochs,
    # patience 50, crop + flip, batch 128.  VAAL's networks train as many epochs as the classifier may.
    "paper_cifar10": FinetuneConfig(epochs=200, lr=1e-3, weight_decay=5e-4, schedule="cosine", cosine_t_max=200,
                                    patience=50, vaal=dict(_VAAL_CIFAR, epochs=200)),
    # Imbalanced CIFAR-10: as CIFAR-10 but lr 0.002, wd 0, class-weighted cross-entropy.
    "paper_cifar10_lt": FinetuneConfig(epochs=200, lr=2e-3, weight_decay=0.0, schedule="cosine", cosine_t_max=200,
                                       patience=50, class_weighted=True, vaal=dict(_VAAL_CIFAR, epochs=200)),
    # MoCo v2 ResNet-50 fine-tuned: SGD lr 0.001, wd 0, StepLR(10, 0.1), 60 epochs, patience 30.
    "paper_imagenet": FinetuneConfig(epochs=60, lr=1e-3, weight_decay=0.0, schedule="step", step_size=10, gamma=0.1,
                                     patience=30, crop_padding=28, vaal=dict(_VAAL_IMAGENET, epochs=60)),
    # Reduced CIFAR-10 schedule for one modern GPU (a ResNet-18 from scratch or SimCLR): 30 epochs,
    # batch 256, a from-scratch learning rate; not tuned, not the paper's.
    "gpu_cifar10": FinetuneConfig(epochs=30, batch_size=256, lr=0.05, nesterov=True, weight_decay=5e-4,
                                  schedule="cosine", patience=10, eval_batch_size=1024,
                                  vaal=dict(_VAAL_CIFAR, epochs=30, batch_size=256)),
    # Tests and CPU demonstrations: two epochs, small batches, a checkpoint every epoch, a small VAAL.
    "tiny": FinetuneConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=5e-4, schedule="cosine", patience=0,
                           eval_batch_size=64, checkpoint_seconds=0.0,
                           vaal=dict(epochs=1, batch_size=16, latent_dim=8, width=4)),
}

#: The preset a data set gets when none is named.
DATASET_PRESETS = {"cifar10": "paper_cifar10", "cifar10-lt": "paper_cifar10_lt", "imagenet": "paper_imagenet",
                   "imagenet-lt": "paper_imagenet", "tiny-imagenet": "paper_imagenet",
                   "tiny-imagenet-lt": "paper_imagenet"}


def finetune_config(preset: str | FinetuneConfig = "tiny", **overrides) -> FinetuneConfig:
    """A named preset (:data:`PRESETS`) with keyword overrides (``epochs=10``, ``batch_size=64``, …)."""
    if isinstance(preset, FinetuneConfig):
        config = preset
    elif preset in PRESETS:
        config = PRESETS[preset]
    else:
        raise ParameterError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}", param="preset")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - set(FinetuneConfig.__dataclass_fields__)
    if unknown:
        raise ParameterError(f"unknown fine-tuning setting(s) {sorted(unknown)}; choose among "
                             f"{sorted(FinetuneConfig.__dataclass_fields__)}", param="options")
    if "epochs" in overrides and "vaal" not in overrides and "epochs" in config.vaal:
        overrides["vaal"] = {**config.vaal, "epochs": overrides["epochs"]}   # VAAL trains as long as the classifier
    return replace(config, **overrides)


# --------------------------------------------------------------------------------------------
# Scales: the fine-tuning sweeps as data (run by alkit.experiments.runs.run_configured_sweep)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FinetuneScale:
    """One configured fine-tuning sweep of one data set."""

    dataset: str
    preset: str
    backbone: str
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    initial_size: int
    round_budget: int
    rounds: int
    val_per_class: int
    weights_needed: bool = False      # a pretrained backbone: --weights names its checkpoint
    train_limit: int | None = None    # class-stratified slice of the training split (CPU scales)
    test_limit: int | None = None
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


GPU_STRATEGIES = ("random", "margin", "base", "badge", "vaal")

FINETUNE_SCALES: dict[str, dict[str, FinetuneScale]] = {
    # One modern GPU in about ten minutes: CIFAR-10, 5 strategies × 3 seeds, 1 k initial + 3 × 1 k, a
    # ResNet-18 (CIFAR stem) from scratch with the reduced 30-epoch schedule (ImageNet-free, offline).
    "gpu": {"cifar10": FinetuneScale("cifar10", "gpu_cifar10", "resnet18_scratch", GPU_STRATEGIES, (0, 1, 2),
                                     1000, 1000, 3, 500,
                                     note="reduced schedule, ResNet-18 from scratch (no SimCLR weights offline)")},
    # The authors' schedules (their self-supervised checkpoints via --weights).
    "paper": {
        "cifar10": FinetuneScale("cifar10", "paper_cifar10", "simclr_resnet18_cifar", GPU_STRATEGIES, (98, 99),
                                 1000, 1000, 30, 500, weights_needed=True),
        "cifar10-lt": FinetuneScale("cifar10-lt", "paper_cifar10_lt", "simclr_resnet18_cifar", GPU_STRATEGIES,
                                    (98, 99), 1000, 1000, 30, 200, weights_needed=True),
        "imagenet": FinetuneScale("imagenet", "paper_imagenet", "moco_v2_resnet50", GPU_STRATEGIES, (98, 99),
                                  30_000, 10_000, 8, 13, weights_needed=True),
    },
    # A quarter of an hour on 2 CPU cores (16 min measured, loaded machine): a 600-image slice of CIFAR-10
    # (300 test images), the tiny preset, ResNet-18 — chance accuracy after 2 epochs; it checks the path.
    "cpu": {"cifar10": FinetuneScale("cifar10", "tiny", "resnet18_scratch", ("random", "margin", "base", "vaal"),
                                     (0,), 40, 40, 2, 5, train_limit=600, test_limit=300,
                                     note="600-image slice, tiny preset: a smoke test of the ResNet-18 path")},
    # Seconds (notebook h's smoke run, CI): the same slice and schedule with a two-layer CNN, two seeds;
    # class-coloured generated images stand in when the CIFAR-10 archive is absent.
    "smoke": {"cifar10": FinetuneScale("cifar10", "tiny", "tiny_cnn", ("random", "margin", "base", "vaal"),
                                       (0, 1), 40, 40, 2, 5, train_limit=600, test_limit=300,
                                       note="tiny CNN, tiny preset: a smoke test")},
}


def finetune_scale(scale: str, datasets: Sequence[str] | None = None) -> dict[str, FinetuneScale]:
    """The configured sweeps of ``scale`` (:data:`FINETUNE_SCALES`), only ``datasets`` when given."""
    if scale not in FINETUNE_SCALES:
        raise ParameterError(f"scale must be one of {', '.join(FINETUNE_SCALES)}, got {scale!r}", param="scale")
    entries = FINETUNE_SCALES[scale]
    for name in datasets or ():
        if name not in entries:
            raise ParameterError(f"datasets: {name!r} has no {scale}-scale fine-tuning sweep; choose among "
                                 f"{', '.join(entries)}", param="datasets")
    return {name: entries[name] for name in (datasets or entries)}


def describe_scale(scale: str) -> str:
    """One line per data set of ``scale``: network, recipe, seeds, schedule and note (for figures)."""
    return "\n".join(f"Fine-tuning ({scale} scale, {d}): {e.backbone}, preset {e.preset}, seeds "
                     f"{', '.join(map(str, e.seeds))}, {e.initial_size} + {e.rounds} × {e.round_budget} labels"
                     + (f"; {e.note}" if e.note else "") + "." for d, e in finetune_scale(scale).items())


def check_scale_weights(entries: dict[str, FinetuneScale], weights: str | Path | None, scale: str = "") -> None:
    """Refuse, before any data is read, a checkpoint the sweeps cannot use or its absence where they
    need one (one checkpoint serves one backbone)."""
    needing = sorted({e.backbone for e in entries.values() if e.weights_needed})
    at = f" at {scale} scale" if scale else ""
    if weights is None and needing:
        which = "; ".join(f"{b} for {', '.join(d for d, e in entries.items() if e.backbone == b)}" for b in needing)
        raise ParameterError(f"weights: the networks{at} start from the authors' self-supervised checkpoints ({which}); "
                             "pass --weights FILE" + (" and --datasets of one backbone" if len(needing) > 1 else ""),
                             param="weights")
    if weights is not None and not needing:
        random_nets = ", ".join(sorted({e.backbone for e in entries.values()}))
        raise ParameterError(f"weights: the networks{at} start from random weights ({random_nets}); drop --weights",
                             param="weights")
    if weights is not None and len(needing) > 1:
        raise ParameterError(f"weights: one checkpoint cannot serve {' and '.join(needing)}; choose the data sets of "
                             "one backbone with --datasets", param="weights")
    if weights is not None and not Path(weights).expanduser().is_file():
        raise ParameterError(f"weights: file not found: {weights}", param="weights")


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------

NETWORK_NAMES = ("resnet18_scratch", "tiny_cnn", "simclr_resnet18_cifar", "moco_v2_resnet50", "efficientnet_lite0",
                 "torchvision:<arch>")


class FinetuneNet(nn.Module):
    """A trunk (image → D-dim pooled feature) and a linear head ℓ = W z + b."""

    def __init__(self, trunk: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(feature_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk(images).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


def tiny_cnn() -> nn.Module:
    """Two 3×3 conv-BN-ReLU blocks and global pooling (32-d): the tests' network."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(True),
                         nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                         nn.ReLU(True), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def init_weights_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """torchvision's ResNet initialisation (Kaiming-normal fan-out convolutions, BN γ = 1, β = 0,
    PyTorch's uniform ±1/√fan_in linears), drawn from ``generator``: the same seed, the same network."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.in_features)
            nn.init.uniform_(m.weight, -bound, bound, generator=generator)
            if m.bias is not None:
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    return module


@dataclass
class NetworkSource:
    """Where each round's network starts: a trunk factory, its starting weights (None: a seeded
    random initialisation each round) and the input normalisation."""

    name: str
    make_trunk: Callable[[], nn.Module]
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    state: dict | None = None          # pretrained trunk tensors (CPU)
    weights_sha256: str | None = None
    resolution: int = 32               # the backbone's training input size

    @property
    def pretrained(self) -> bool:
        return self.state is not None

    def build(self, num_classes: int, generator: torch.Generator) -> FinetuneNet:
        """A fresh network: the starting trunk (or a random one drawn from ``generator``) and a new head."""
        trunk = self.make_trunk()
        if self.state is None:
            init_weights_(trunk, generator)
        else:
            trunk.load_state_dict(self.state)
        net = FinetuneNet(trunk, self.feature_dim, num_classes)
        init_weights_(net.head, generator)
        return net

    def identity(self) -> dict:
        return {"network": self.name, "weights_sha256": self.weights_sha256, "feature_dim": self.feature_dim}


def network_source(name: str = "resnet18_scratch", weights: str | Path | None = None, **options) -> NetworkSource:
    """A trainable network by name (:data:`NETWORK_NAMES`): the feature backbones of
    :mod:`alkit.data.backbones` (a trainable copy of their weights), or ``resnet18_scratch`` (CIFAR-stem
    ResNet-18, random) / ``tiny_cnn`` (tests) initialised from each round's training stream."""
    if name in ("resnet18_scratch", "tiny_cnn"):
        if weights is not None or options:
            raise ParameterError(f"backbone {name!r} starts from random weights: drop weights= / options", param="backbone")
        if name == "tiny_cnn":
            return NetworkSource(name, tiny_cnn, 32, CIFAR10_MEAN, CIFAR10_STD)
        return NetworkSource(name, resnet18_cifar, 512, CIFAR10_MEAN, CIFAR10_STD)
    backbone = load_backbone(name, weights, **options)
    frozen = backbone.model
    state = {k: v.detach().clone() for k, v in frozen.state_dict().items()}
    return NetworkSource(name, functools.partial(copy.deepcopy, frozen), backbone.feature_dim, backbone.mean,
                         backbone.std, state, backbone.weights_sha256, backbone.train_resolution)


def _trainable(net: nn.Module, freeze_bn: bool) -> nn.Module:
    """Every parameter trainable; train mode, with BatchNorm layers in eval mode when ``freeze_bn``."""
    for p in net.parameters():
        p.requires_grad_(True)
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return net


# --------------------------------------------------------------------------------------------
# Devices, precision, ranks
# --------------------------------------------------------------------------------------------

def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (None: float32 throughout)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16" or (precision == "auto" and not torch.cuda.is_bf16_supported()):
        if device.type != "cuda":
            raise ParameterError("precision: fp16 autocast needs a CUDA device; use bf16 or fp32 on the CPU",
                                 param="precision")
        return torch.float16
    return torch.bfloat16


@dataclass(frozen=True)
class Ranks:
    """This process's rank and the world size (1 without torchrun)."""

    rank: int = 0
    size: int = 1
    world: object = None   # an alkit.data.distributed.World when size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every rank."""
        return obj if self.size == 1 else broadcast(obj, self.world)

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.size > 1:
            barrier(self.world)


def ranks_from_env() -> Ranks:
    """One process unless WORLD_SIZE > 1 (torchrun); then the world of :mod:`alkit.data.distributed`."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Ranks()
    world = world_from_env()
    return Ranks(world.rank, world.size, world)


def batch_shard(rows: np.ndarray, ranks: Ranks) -> np.ndarray:
    """This rank's share of one training batch: every ``size``-th row from its rank (all ranks
    together: the batch, each row once)."""
    return rows[ranks.rank::ranks.size]


def owned_chunks(n_rows: int, chunk: int, ranks: Ranks) -> list[tuple[int, int]]:
    """``(start, stop)`` of the evaluation chunks this rank computes (round robin over chunks)."""
    return [(s, min(s + chunk, n_rows)) for i, s in enumerate(range(0, n_rows, chunk)) if i % ranks.size == ranks.rank]


def assemble_chunks(parts: Sequence[list[tuple[int, np.ndarray]]], n_rows: int) -> np.ndarray:
    """Every rank's ``[(start, array), …]`` put back in row order (one array of ``n_rows`` rows);
    chunks that overlap or leave rows out raise a ValueError."""
    pieces = sorted((piece for rank_parts in parts for piece in rank_parts), key=lambda piece: piece[0])
    if not pieces:
        raise ValueError("assemble_chunks got no chunks")
    covered = sum(array.shape[0] for _, array in pieces)
    ends = [start + array.shape[0] for start, array in pieces]
    contiguous = pieces[0][0] == 0 and all(end == nxt for end, (nxt, _) in zip(ends, pieces[1:]))
    if covered != n_rows or not contiguous:
        raise ValueError(f"the gathered chunks cover {covered} rows, expected {n_rows} without gaps or overlaps")
    return np.concatenate([array for _, array in pieces])


def _distributed(ranks: Ranks, device: torch.device):
    """The process group of a torchrun job (started only when none exists), or nothing."""
    if ranks.size == 1:
        return contextlib.nullcontext()
    return process_group(ranks.world, device)


def _all_gather(obj, ranks: Ranks) -> list:
    if ranks.size == 1:
        return [obj]
    return all_gather(obj, ranks.world)


# --------------------------------------------------------------------------------------------
# One round: train, evaluate, embed
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(net: FinetuneNet, images: PoolImages, rows: np.ndarray, device: torch.device, *, batch_size: int = 512,
            dtype: torch.dtype | None = None, ranks: Ranks = Ranks(), channels_last: bool = False,
            with_features: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """``(features (n, D) float32 or None, logits (n, C) float32)`` of ``rows``, in eval mode; under
    torchrun each rank computes its chunks and all get every row."""
    model = net.module if hasattr(net, "module") else net
    was_training = model.training
    model.eval()
    parts: list[tuple[int, np.ndarray]] = []
    rows = np.asarray(rows, np.int64)
    for start, stop in owned_chunks(rows.size, batch_size, ranks):
        x = images(rows[start:stop], device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            z = model.embed(x)
            logits = model.head(z)
        z32 = z.float().cpu().numpy() if with_features else np.zeros((z.shape[0], 0), np.float32)
        parts.append((start, np.concatenate([z32, logits.float().cpu().numpy()], axis=1)))
    model.train(was_training)
    n_out = (model.head.in_features if with_features else 0) + model.head.out_features
    if rows.size == 0:
        return (np.zeros((0, model.head.in_features), np.float32) if with_features else None,
                np.zeros((0, model.head.out_features), np.float32))
    gathered = assemble_chunks(_all_gather(parts, ranks), rows.size)
    assert gathered.shape[1] == n_out
    d = model.head.in_features if with_features else 0
    return (np.ascontiguousarray(gathered[:, :d]) if with_features else None,
            np.ascontiguousarray(gathered[:, d:]))


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """w_c = n / (C · n_c) for classes with labels, 0 for the others (as the linear probe's)."""
    counts = torch.bincount(torch.from_numpy(np.asarray(labels, np.int64)), minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)), torch.zeros(()))


def _scheduler(optimizer: torch.optim.Optimizer, config: FinetuneConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.cosine_t_max or config.epochs)
    if config.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


@dataclass
class RoundTraining:
    """What one round's training left: the best epoch's network and its record."""

    net: FinetuneNet
    optimizer_state: dict
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    val_loss: float
    history: list[dict]
    seconds: float

    def record(self) -> dict:
        """The row columns the linear loop's head writes (``probe_*``), filled for fine-tuning."""
        return {"probe_method": "finetune", "val_top1": self.best_val_accuracy, "val_loss": self.val_loss,
                "probe_l2": np.nan, "probe_iterations": np.nan, "probe_converged": np.nan,
                "probe_epochs": self.best_epoch, "probe_fits": np.nan}


def _on_cpu(state):
    """A copy of ``state`` with every tensor in it (dicts, lists and tuples walked) on the CPU: a
    checkpoint then loads on any machine, and an optimiser moves its state back to its parameters."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _on_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_cpu(v) for v in state)
    return state


def train_round(source: NetworkSource, images: PoolImages, labels: np.ndarray, train_rows: np.ndarray,
                val_rows: np.ndarray, num_classes: int, config: FinetuneConfig, rng: np.random.Generator,
                device: torch.device, *, ranks: Ranks = Ranks(), resume: dict | None = None,
                save: Callable[[dict], None] | None = None,
                on_epoch: Callable[[int], None] | None = None) -> RoundTraining:
    """Train a fresh network on ``train_rows`` (early stopping on ``val_rows``); the best epoch's
    weights are kept (the last epoch's without validation).  Draws come from ``rng`` (initialisation,
    batch order, augmentation).  ``resume``: a mid-round checkpoint's training state; ``save(state)``
    is offered the training state after each epoch (:attr:`FinetuneConfig.checkpoint_seconds`
    apart); ``on_epoch(epoch)`` is called after it."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    net = source.build(num_classes, generator)
    freeze_bn = source.pretrained if config.freeze_bn is None else config.freeze_bn
    dtype = autocast_dtype(config.precision, device)
    channels_last = config.channels_last and device.type == "cuda"
    net = net.to(device, memory_format=torch.channels_last) if channels_last else net.to(device)
    model: nn.Module = net
    if ranks.size > 1:
        if not freeze_bn and device.type == "cuda":   # SyncBatchNorm is CUDA-only; on CPU each rank keeps its own
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    scheduler = _scheduler(optimizer, config)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    weight = class_weights(labels[train_rows], num_classes).to(device) if config.class_weighted else None
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    plain = model.module if hasattr(model, "module") else model
    best = {"accuracy": -1.0, "epoch": 0, "loss": float("nan"), "state": None}
    history: list[dict] = []
    first_epoch, elapsed_before = 1, 0.0
    if resume is not None:
        plain.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        rng.bit_generator.state = resume["rng"]
        generator.set_state(resume["generator"])
        best = dict(resume["best"])
        history = list(resume["history"])
        first_epoch, elapsed_before = resume["epoch"] + 1, resume["seconds"]
    last_save = time.perf_counter()
    epoch = first_epoch - 1
    for epoch in range(first_epoch, config.epochs + 1):
        if history and config.patience and val_rows.size and epoch - best["epoch"] > config.patience:
            break
        _trainable(model, freeze_bn)
        order = rng.permutation(train_rows)
        total, seen = 0.0, 0
        for start in range(0, order.size, config.batch_size):
            rows = order[start:start + config.batch_size]
            if rows.size < 2 and not freeze_bn:   # BatchNorm cannot train on one image
                continue
            rows = batch_shard(rows, ranks)
            x = images(rows, device)
            if config.augment:
                x = random_crop_flip(x, generator, config.crop_padding)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y_all[rows].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * rows.size
            seen += rows.size
        scheduler.step()
        record = {"epoch": epoch, "train_loss": total / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
        if val_rows.size:
            _, val_logits = predict(plain, images, val_rows, device, batch_size=config.eval_batch_size, dtype=dtype,
                                    ranks=ranks, channels_last=channels_last, with_features=False)
            val_y = labels[val_rows]
            accuracy = float((val_logits.argmax(1) == val_y).mean())
            val_loss = float(nn.functional.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_y)))
            record.update(val_top1=accuracy, val_loss=val_loss)
            if accuracy > best["accuracy"]:
                best = {"accuracy": accuracy, "epoch": epoch, "loss": val_loss,
                        "state": _on_cpu(plain.state_dict())}
        history.append(record)
        now = time.perf_counter()
        if save is not None and (now - last_save >= config.checkpoint_seconds or epoch == config.epochs):
            save({"model": _on_cpu(plain.state_dict()), "optimizer": _on_cpu(optimizer.state_dict()),
                  "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng.bit_generator.state,
                  "generator": generator.get_state(), "best": best, "history": history, "epoch": epoch,
                  "seconds": elapsed_before + now - started})
            last_save = now
        if on_epoch is not None:
            on_epoch(epoch)
    if best["state"] is not None:
        plain.load_state_dict(best["state"])
    else:
        best = {"accuracy": float("nan"), "epoch": epoch, "loss": float("nan")}
    plain.eval()
    return RoundTraining(plain, optimizer.state_dict(), epoch if history else 0, int(best["epoch"]),
                         float(best["accuracy"]), float(best["loss"]), history,
                         elapsed_before + time.perf_counter() - started)


# --------------------------------------------------------------------------------------------
# The trainer: fine-tuning in the active-learning loop (alkit.loop.run_active_learning)
# --------------------------------------------------------------------------------------------

#: Pool features kept as float32 up to this size, float16 beyond (ImageNet: 1.28 M × 2048).
FLOAT32_FEATURE_BYTES = 4 * 1024**3


@dataclass
class FineTunedRound:
    """One round's fit: the trained network, with the times of its test pass and re-embedding."""

    trainer: FineTuningTrainer
    training: RoundTraining
    round_index: int
    test_seconds: float = float("nan")
    embed_seconds: float | None = None

    @property
    def seconds(self) -> float:
        return self.training.seconds

    def record(self) -> dict:
        return self.training.record()

    def test_logits(self, data: RunData) -> np.ndarray:
        started = time.perf_counter()
        _, logits = self._predict(data.test, with_features=False)
        self.test_seconds = time.perf_counter() - started
        return logits

    def pool_view(self, data: RunData) -> PoolView:
        """The pool re-embedded with this round's network, and its head."""
        started = time.perf_counter()
        features, _ = self._predict(data.train, with_features=True)
        if features.nbytes > FLOAT32_FEATURE_BYTES:
            features = features.astype(np.float16)
        self.embed_seconds = time.perf_counter() - started
        head = self.training.net.head
        return PoolView(features, head.weight.detach().float().cpu().numpy(), head.bias.detach().float().cpu().numpy())

    @property
    def carry(self) -> dict:
        """The round's network and optimiser, kept in the checkpoint beside the loop's state for
        inspection (the next round starts from a fresh network)."""
        return {"round": self.round_index, "model": _on_cpu(self.training.net.state_dict()),
                "optimizer": _on_cpu(self.training.optimizer_state)}

    def detail(self) -> dict:
        detail = {"epochs_run": self.training.epochs_run, "best_epoch": self.training.best_epoch,
                  "training_seconds": self.training.seconds, "test_seconds": self.test_seconds}
        if self.embed_seconds is not None:
            detail["embed_seconds"] = self.embed_seconds
        return detail

    def _predict(self, images: PoolImages, *, with_features: bool):
        t = self.trainer
        return predict(self.training.net, images, np.arange(len(images)), t.device,
                       batch_size=t.config.eval_batch_size, dtype=t.dtype, ranks=t.ranks,
                       channels_last=t.channels_last, with_features=with_features)


class FineTuningTrainer(Trainer):
    """The fine-tuning regime as the trainer of :func:`alkit.loop.run_active_learning`, whose
    inputs are then the pool's and the test set's images (:class:`alkit.data.images.PoolImages`).

    Each round a fresh network (:meth:`NetworkSource.build`) is trained on the labelled images
    (:func:`train_round`), tested, and the pool re-embedded with it for the strategy; the rows carry
    ``probe_method`` "finetune" and ``probe_epochs`` the best epoch, and the run's config the recipe
    (``regime``, ``finetune``, ``network``, ``strategy_options``) and ``rounds_detail`` (epochs and
    times of each round).  Inside a round, training offers its state to the loop's checkpoint
    (:attr:`FinetuneConfig.checkpoint_seconds` apart), so a killed run resumes in the epoch it was in.

    ``network``: a :class:`NetworkSource` or a name for :func:`network_source`; ``config``: a
    :class:`FinetuneConfig` or a preset name; ``device``: None for CUDA when present.
    ``strategy_options``: keyword options of the strategy (default: ``config.vaal`` for ``vaal``).
    ``on_epoch(round, epoch)``: called after each training epoch (progress, tests).
    """

    frozen_features = False              # each round's network re-embeds the pool
    refuses_foreign_checkpoints = True   # a checkpoint holds up to hours of training: never replaced unasked

    def __init__(self, network: NetworkSource | str = "resnet18_scratch", config: FinetuneConfig | str = "tiny", *,
                 device: str | torch.device | None = None, strategy_options: dict | None = None,
                 on_epoch: Callable[[int, int], None] | None = None) -> None:
        self.config = finetune_config(config)
        self.source = network if isinstance(network, NetworkSource) else network_source(network)
        self.ranks = ranks_from_env()
        device = resolve_device(device)
        if self.ranks.size > 1 and device.type == "cuda":   # under torchrun: this rank's GPU
            device = torch.device("cuda", self.ranks.world.local_rank)
        self.device = device
        self.dtype = autocast_dtype(self.config.precision, device)
        self.channels_last = self.config.channels_last and device.type == "cuda"
        self.options = strategy_options
        self.on_epoch = on_epoch

    def __repr__(self) -> str:
        return f"FineTuningTrainer({self.source.name}, {self.device})"

    def check_inputs(self, train, test) -> None:
        for what, images in (("train_features", train), ("test_features", test)):
            if not isinstance(images, PoolImages):
                raise ParameterError(f"{what}: fine-tuning trains on images; pass an alkit.data.images.PoolImages, got "
                                     f"{type(images).__name__}", param=what)

    def strategy_options(self, strategy: StrategyInfo) -> dict:
        if self.options is None:
            return dict(self.config.vaal) if strategy.name == "vaal" else {}
        return dict(self.options)

    def identity(self) -> dict:
        given = {} if self.options is None else {"strategy_options": dict(self.options)}   # the default: config.vaal
        return {"regime": "finetune", "finetune": self.config.as_dict(), "network": self.source.identity(), **given}

    def settings(self, strategy: StrategyInfo, train: PoolImages) -> dict:
        return {**self.identity(), "strategy_options": self.strategy_options(strategy), "resolution": train.resolution}

    def fingerprint(self, data: RunData) -> str:
        # The labels and the test set's size: hashing every image of a large pool would take minutes.
        digest = hashlib.sha256(np.ascontiguousarray(data.train_labels, np.int64).tobytes()
                                + np.ascontiguousarray(data.test_labels, np.int64).tobytes())
        return f"{digest.hexdigest()}:{len(data.test)}"

    @contextlib.contextmanager
    def running(self, data: RunData):
        with _distributed(self.ranks, self.device):   # a process group under torchrun, kept if the caller has one
            train, test = data.train, data.test
            if self.device.type == "cuda":   # the decoded pixels stay on the GPU for the whole run
                train, test = train.to(self.device), test.to(self.device)
            yield replace(data, train=train, test=test, images=data.images if data.images is not None else train)

    def fit(self, data: RunData, round_index: int, rows: np.ndarray, rng: np.random.Generator, *,
            previous=None, resume: dict | None = None,
            save_progress: Callable[[dict], None] | None = None) -> FineTunedRound:
        # ``previous`` is not used: every round starts from the backbone's starting weights.
        on_epoch = None if self.on_epoch is None else functools.partial(self.on_epoch, round_index)
        training = train_round(self.source, data.train, data.train_labels, rows, data.validation, data.num_classes,
                               self.config, rng, self.device, ranks=self.ranks, resume=resume, save=save_progress,
                               on_epoch=on_epoch)
        return FineTunedRound(self, training, round_index)


# --------------------------------------------------------------------------------------------
# Image data sets
# --------------------------------------------------------------------------------------------

def load_pool_images(dataset: str, root: str | Path | None, *, network: NetworkSource, resolution: int | None = None,
                     train_limit: int | None = None, test_limit: int | None = None, cache_dir: str | Path | None = None,
                     workers: int = 4) -> tuple[PoolImages, np.ndarray, PoolImages, np.ndarray, int, dict]:
    """``(train images, train labels, test images, test labels, C, meta)`` of an image data set
    (:func:`alkit.data.datasets.load_dataset`; split "val" where there is no "test"), sized for ``network``:
    small fixed-size images keep their own size (CIFAR 32 px, Tiny-ImageNet 64 px), photos are
    centre-cropped to the backbone's resolution; ``resolution`` overrides both."""
    train = load_dataset(dataset, root, "train", limit=train_limit, cache_dir=cache_dir)
    try:
        test = load_dataset(dataset, root, "test", limit=test_limit, cache_dir=cache_dir)
    except (ValueError, FileNotFoundError):
        test = load_dataset(dataset, root, "val", limit=test_limit, cache_dir=cache_dir)
    if not train.labelled:
        raise ParameterError(f"dataset: {dataset!r} has no classes; the fine-tuning loop needs a labelled pool "
                             "(an ImageFolder with one folder per class)", param="dataset")
    size = resolution or train.native_size or network.resolution
    resize = "stretch" if (train.native_size is not None or resolution is not None) else "center_crop"
    preprocessing = Preprocessing(int(size), resize, mean=network.mean, std=network.std)
    train_images = PoolImages.from_dataset(train, preprocessing, workers=workers)
    test_images = PoolImages.from_dataset(test, preprocessing, workers=workers)
    meta = {"dataset": train.display_name, "train_sha256": train.content_fingerprint,
            "test_sha256": test.content_fingerprint, "n_train": len(train), "n_test": len(test),
            "preprocessing": preprocessing.as_dict(), "test_split": test.split}
    return train_images, train.labels, test_images, test.labels, train.num_classes, meta


#: What a stand-in's rows say they are (``report.figure_note`` labels them SYNTHETIC).
STANDIN_SOURCE = "SYNTHETIC class-coloured images (no CIFAR-10 archive)"


def load_scale_images(entry: FinetuneScale, network: NetworkSource, *, source: str = "auto",
                      data_root: str | Path | None = None, allow_standin: bool = False):
    """``(train, labels, test, labels, C, meta, data_source)`` of one configured sweep: the real
    images (root as :func:`alkit.experiments.loading.load_study_data` finds it: ``data_root``, ``$ALKIT_DATA`` or
    ../shared/data, plus the data set's archive name), sliced as the scale says; generated
    class-coloured images (:func:`alkit.data.synthetic.colour_images`) with ``source="synthetic"``, or with
    ``"auto"`` when the images are absent and ``allow_standin`` (smoke).  CIFAR-10 without a root is
    torchvision's download (a clear error offline)."""
    if source not in SOURCES:
        raise ParameterError(f"source must be one of {', '.join(SOURCES)}, got {source!r}", param="source")
    spec = data_spec(entry.dataset)
    root = data_root_for(entry.dataset, data_root)
    have_real = root is not None and root.exists()
    if source == "synthetic" or (source == "auto" and not have_real and allow_standin):
        n_train = (entry.train_limit or 600) // spec.num_classes
        n_test = (entry.test_limit or 300) // spec.num_classes
        train, y, test, ty = colour_images(spec.num_classes, n_train, 32, n_test_per_class=n_test, seed=7)
        wrap = functools.partial(PoolImages.from_arrays, mean=network.mean, std=network.std)
        meta = {"dataset": entry.dataset, "source": "synthetic", "generator": "alkit.data.synthetic.colour_images",
                "n_train": int(y.size), "n_test": int(ty.size), "seed": 7}
        return wrap(train), y, wrap(test), ty, spec.num_classes, meta, STANDIN_SOURCE
    if not have_real and (data_root is not None or spec.loader not in ("cifar10", "cifar10-lt")):
        raise ParameterError(f"data_root: no images of {entry.dataset!r} (looked for {spec.archive or 'a folder'} under "
                             f"{root or '$ALKIT_DATA / ../shared/data'}); pass --data-root", param="data_root")
    train, y, test, ty, num_classes, meta = load_pool_images(
        spec.loader, root if have_real else None, network=network, train_limit=entry.train_limit,
        test_limit=entry.test_limit)
    sliced = f", {y.size}-image slice" if entry.train_limit else ""
    return train, y, test, ty, num_classes, meta, f"{network.name} fine-tuned{sliced}"


if __name__ == "__main__":   # the command moved; say where (the command line imports this module, not back)
    raise SystemExit(f"`python -m alkit.finetune` is now `python -m alkit finetune` (same arguments)")
