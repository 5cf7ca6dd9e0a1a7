"""Linear probe on frozen features: the paper's linear-evaluation regime.

A linear head is trained from scratch on the labelled features each round, with early
stopping on a class-balanced validation split (whose labels are free, as in the paper).
Features are standardised inside training for a well-conditioned problem; the returned head is
folded back so that it acts on the *raw* features (MASE/BASE distances live in that space).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from alkit.pool import check_features, check_labels

#: Defaults tuned for speed on a 2-core CPU (see DEVIATIONS.md); ``ProbeConfig.paper()`` gives
#: the authors' ImageNet linear-evaluation recipe.
DEFAULT_PROBE = {
    "optimizer": "adam",   # adam | sgd
    "lr": 5e-3,            # adam on standardised features
    "momentum": 0.9,       # sgd only
    "weight_decay": 0.0,   # early stopping is the regulariser
    "batch_size": 256,
    "max_epochs": 40,
    "patience": 6,         # epochs without a better validation accuracy before stopping
    "lr_step": 0,          # StepLR step in epochs (0 = constant learning rate)
    "lr_gamma": 0.1,
    "class_weighted": False,  # inverse-frequency weighted cross-entropy (imbalanced CIFAR-10)
    "standardize": True,
}


@dataclass(frozen=True)
class ProbeConfig:
    optimizer: str = DEFAULT_PROBE["optimizer"]
    lr: float = DEFAULT_PROBE["lr"]
    momentum: float = DEFAULT_PROBE["momentum"]
    weight_decay: float = DEFAULT_PROBE["weight_decay"]
    batch_size: int = DEFAULT_PROBE["batch_size"]
    max_epochs: int = DEFAULT_PROBE["max_epochs"]
    patience: int = DEFAULT_PROBE["patience"]
    lr_step: int = DEFAULT_PROBE["lr_step"]
    lr_gamma: float = DEFAULT_PROBE["lr_gamma"]
    class_weighted: bool = DEFAULT_PROBE["class_weighted"]
    standardize: bool = DEFAULT_PROBE["standardize"]

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"probe optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        for name in ("lr", "batch_size", "max_epochs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"probe {name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def paper(cls) -> "ProbeConfig":
        """Authors' ImageNet linear evaluation: SGD lr 15, momentum 0.9, wd 1e-4, StepLR(20, 0.1),
        batch 128, up to 60 epochs (on unnormalised MoCo v2 features)."""
        return cls(optimizer="sgd", lr=15.0, momentum=0.9, weight_decay=1e-4, batch_size=128,
                   max_epochs=60, patience=60, lr_step=20, lr_gamma=0.1, standardize=False)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class LinearHead:
    """A trained head ℓ = W z + b acting on raw features, with its training record."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray    # (C,) float32
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def logits(self, features: np.ndarray, chunk_rows: int = 65_536) -> np.ndarray:
        return predict_logits(features, self.weight, self.bias, chunk_rows)


def predict_logits(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, chunk_rows: int = 65_536) -> np.ndarray:
    """(N, C) float32 logits, computed in chunks so float16 memmaps are converted piecewise."""
    w = torch.from_numpy(np.ascontiguousarray(weight, np.float32))
    b = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    out = np.empty((features.shape[0], w.shape[0]), np.float32)
    with torch.no_grad():
        for start in range(0, features.shape[0], chunk_rows):
            z = torch.from_numpy(np.asarray(features[start:start + chunk_rows], np.float32))
            out[start:start + z.shape[0]] = torch.addmm(b, z, w.T).numpy()
    return out


#: Validation rows scored per forward pass (bounds the (rows × C) logits buffer).
_EVAL_ROWS = 65_536


def _evaluate(layer: torch.nn.Linear, xv: torch.Tensor, yv: torch.Tensor) -> tuple[float, float]:
    """Validation top-1 and mean cross-entropy, in chunks of rows (one pass when it is small)."""
    if xv.shape[0] <= _EVAL_ROWS:
        val_logits = layer(xv)
        return (float((val_logits.argmax(dim=1) == yv).float().mean()),
                float(torch.nn.functional.cross_entropy(val_logits, yv)))
    correct = torch.zeros((), dtype=torch.float64, device=xv.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=xv.device)
    for start in range(0, xv.shape[0], _EVAL_ROWS):
        logits = layer(xv[start:start + _EVAL_ROWS])
        target = yv[start:start + _EVAL_ROWS]
        correct += (logits.argmax(dim=1) == target).sum()
        loss_sum += torch.nn.functional.cross_entropy(logits, target, reduction="sum").double()
    return float(correct) / xv.shape[0], float(loss_sum) / xv.shape[0]


def _torch_seed(rng: np.random.Generator | int) -> int:
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63 - 1))
    return int(rng)


def probe_device(device: str | torch.device | None = None) -> torch.device:
    """The device the probe trains on: ``device``, else ``$ALKIT_PROBE_DEVICE``, else the CPU.

    The CPU is the default so that results do not depend on the machine; pass ``"cuda"`` (or
    set ``ALKIT_PROBE_DEVICE=cuda``) to train on a GPU — deterministic there too for a given
    seed, but not bit-identical to the CPU.
    """
    chosen = torch.device(device or os.environ.get("ALKIT_PROBE_DEVICE") or "cpu")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"probe device {chosen} requested but CUDA is not available")
    return chosen


def _standardised(array: np.ndarray, device: torch.device, mean: torch.Tensor | None = None,
                  scale: torch.Tensor | None = None, chunk_rows: int = 65_536) -> torch.Tensor:
    """One float32 copy of ``array`` on ``device``, standardised in place when mean/scale given.

    Converted chunk by chunk (float16 memory maps never make a full float64/float32 detour).
    """
    out = torch.empty(tuple(array.shape), dtype=torch.float32, device=device)
    for start in range(0, array.shape[0], chunk_rows):
        block = torch.from_numpy(np.ascontiguousarray(array[start:start + chunk_rows], np.float32))
        out[start:start + block.shape[0]].copy_(block)
    if mean is not None:
        out.sub_(mean).div_(scale)
    return out


def train_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    val_features: np.ndarray | None,
    val_labels: np.ndarray | None,
    num_classes: int,
    config: ProbeConfig = ProbeConfig(),
    seed: np.random.Generator | int = 0,
    device: str | torch.device | None = None,
) -> LinearHead:
    """Train a linear head from scratch on (features, labels); keep the epoch with the best
    validation top-1 (ties: the earlier epoch) and stop after ``patience`` epochs without one.

    Without a validation split the last epoch is kept.  Deterministic for a given seed (on a
    given device: see :func:`probe_device`; the shuffling always comes from a CPU generator).
    Memory: one float32 copy of the training and validation features, standardised in place.
    """
    check_features(np.asarray(features), "features")
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must have shape ({features.shape[0]},) to match features, got {labels.shape}")
    check_labels(labels, num_classes, "labels", allow_unlabelled=False)
    if (val_features is None) != (val_labels is None):
        raise ValueError("val_features and val_labels must be given together")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(_torch_seed(seed))
    dev = probe_device(device)

    x = _standardised(features, dev)
    y = torch.from_numpy(labels.astype(np.int64)).to(dev)
    dim = x.shape[1]
    if config.standardize:
        mean = x.mean(dim=0)
        scale = x.std(dim=0, unbiased=False).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones(dim, device=dev)
        x.sub_(mean).div_(scale)  # same values as (x − μ)/σ, without two more copies
    else:
        mean, scale = torch.zeros(dim, device=dev), torch.ones(dim, device=dev)
    xv = yv = None
    if val_features is not None:
        xv = _standardised(val_features, dev, mean, scale)
        yv = torch.from_numpy(np.asarray(val_labels, np.int64)).to(dev)

    layer = torch.nn.Linear(dim, num_classes, device=dev)
    torch.nn.init.zeros_(layer.weight)  # convex problem: a zero start is deterministic and fine
    torch.nn.init.zeros_(layer.bias)
    # On the CPU the default (foreach) kernels keep results bit-identical to earlier releases;
    # on a GPU the fused kernels are used (one launch per step instead of a dozen).
    fused = {"fused": True} if dev.type == "cuda" else {}
    if config.optimizer == "adam":
        opt = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay, **fused)
    else:
        opt = torch.optim.SGD(layer.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay, **fused)
    sched = torch.optim.lr_scheduler.StepLR(opt, config.lr_step, config.lr_gamma) if config.lr_step > 0 else None
    class_weight = None
    if config.class_weighted:
        counts = torch.bincount(y, minlength=num_classes).float()
        class_weight = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)),
                                   torch.zeros((), device=dev))
    loss_fn = torch.nn.CrossEntropyLoss(weight=class_weight)

    best = (-1.0, 0, layer.weight.detach().clone(), layer.bias.detach().clone())
    history: list[dict] = []
    epochs_run = last_improved = 0
    best_acc_seen, best_loss_seen, best_loss_at_best = -1.0, float("inf"), float("inf")
    for epoch in range(1, config.max_epochs + 1):
        epochs_run = epoch
        order = torch.randperm(x.shape[0], generator=generator).to(dev)
        total = 0.0 if dev.type == "cpu" else torch.zeros((), device=dev)  # no per-step GPU sync
        for start in range(0, x.shape[0], config.batch_size):
            batch = order[start:start + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(layer(x[batch]), y[batch])
            loss.backward()
            opt.step()
            if dev.type == "cpu":
                total += float(loss.detach()) * batch.numel()
            else:
                total += loss.detach() * batch.numel()
        if sched is not None:
            sched.step()
        record = {"epoch": epoch, "train_loss": float(total) / x.shape[0]}
        if xv is not None:
            with torch.no_grad():
                val_acc, val_loss = _evaluate(layer, xv, yv)
            record.update(val_top1=val_acc, val_loss=val_loss)
            # Keep the best top-1 (ties: lower loss); stop once neither top-1 nor the smoother
            # validation loss has improved for `patience` epochs.
            if val_acc > best[0] or (val_acc == best[0] and val_loss < best_loss_at_best):
                best = (val_acc, epoch, layer.weight.detach().clone(), layer.bias.detach().clone())
                best_loss_at_best = val_loss
            if val_acc > best_acc_seen or val_loss < best_loss_seen:
                last_improved = epoch
            best_acc_seen, best_loss_seen = max(best_acc_seen, val_acc), min(best_loss_seen, val_loss)
            if epoch - last_improved >= config.patience:
                history.append(record)
                break
        history.append(record)
    if xv is None:
        best = (float("nan"), epochs_run, layer.weight.detach().clone(), layer.bias.detach().clone())
    val_acc, best_epoch, w_std, b_std = best
    # Fold the standardisation into the head: W z + b on raw z equals W_s (z − μ)/σ + b_s.
    weight = (w_std / scale).cpu().numpy().astype(np.float32)
    bias = (b_std - (w_std / scale) @ mean).cpu().numpy().astype(np.float32)
    return LinearHead(weight, bias, epochs_run, best_epoch, val_acc, history, time.perf_counter() - started)
