"""Linear probe on frozen features: the paper's linear-evaluation regime.

A linear head is trained from scratch on the labelled features each round.  Two methods:

``logreg`` (the default)
    The field's linear-evaluation protocol: an L2-regularised multinomial logistic regression
    fit to convergence (:mod:`alkit.logreg`, L-BFGS) for every strength λ of a grid, the strength
    chosen on the class-balanced validation split (whose labels are free, as in the paper).  Across
    the rounds of a run each λ starts from the previous round's solution (``warm_start``).
``early_stopping``
    Minibatch Adam or SGD from zero, keeping the epoch with the best validation top-1: the
    authors' recipe (:meth:`ProbeConfig.paper`) and this project's earlier default
    (``ProbeConfig.named("adam_early_stopping")``), kept so that the two can be compared.

Features are standardised inside training (training-set mean and standard deviation), so the
L2 penalty treats every feature alike; the returned head is folded back so that it acts on the
*raw* features (MASE/BASE distances live in that space).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from alkit.logreg import (DEFAULT_MAX_ITER, DEFAULT_TOL, fast_products_available, fit_logreg, sample_weights,
                          zero_head_gradient)
from alkit.checks import ParameterError, check_bool, check_features, check_float, check_int, check_labels

PROBE_METHODS = ("logreg", "early_stopping")

#: Strengths λ of the L2 penalty tried each round (objective: mean cross-entropy + λ/2·‖W‖² on
#: standardised features), chosen on validation accuracy.  On the data sets here validation picks
#: mostly 0.3 … 0.01 on the sweep's rounds (3 and 1e-4 at the extremes: the `probe_l2` column of the runs)
#: and 0.01 … 0.003 on whole training sets (results/benchmarks/full_data_probe.md), so the grid
#: leaves room on either side; the benchmark checks the choice against a wider, finer grid.
DEFAULT_L2_GRID = (10.0, 3.0, 1.0, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4)

#: Defaults of the early-stopping method (``ProbeConfig.paper()`` gives the authors' ImageNet
#: linear-evaluation recipe).
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
    """How the linear head is trained.  ``method`` picks the fields that matter:
    ``logreg``: ``l2_grid``, ``tol``, ``max_iter``, ``grid_search``; ``early_stopping``: the
    optimiser fields.  ``class_weighted`` and ``standardize`` serve both."""

    method: str = "logreg"
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    tol: float = DEFAULT_TOL
    max_iter: int = DEFAULT_MAX_ITER
    #: "full": fit every λ every round; "local": start at the previous round's choice (else the
    #: strongest λ), fit its grid neighbours and walk towards better validation accuracy until it
    #: drops.
    grid_search: str = "local"
    #: "local" only: walk the grid every ``search_every`` rounds; in the rounds between, refit only
    #: the kept λ (warm).  1 (the default) walks every round.  λ moves little from round to round
    #: (it drifts down as labels accumulate), and the walk costs about three fits a round, so 4
    #: makes a run's probe about a third cheaper (benchmarks/probe_cost.py --search-every 4).
    search_every: int = 1
    #: logreg: "auto" runs the first iterations of each fit with bfloat16 products where the CPU has
    #: native bfloat16 (then finishes in float32: same minimiser, found 2-4× faster); "off": float32.
    fast_products: str = "auto"
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
        if self.method not in PROBE_METHODS:
            raise ParameterError(f"probe method must be one of {', '.join(PROBE_METHODS)}, got {self.method!r}",
                                 param="method")
        if self.optimizer not in ("adam", "sgd"):
            raise ParameterError(f"probe optimizer must be 'adam' or 'sgd', got {self.optimizer!r}", param="optimizer")
        # Checked, never converted: the fields go into run keys as given.
        for name, low in (("batch_size", 1), ("max_epochs", 1), ("max_iter", 1), ("patience", 0), ("lr_step", 0),
                          ("search_every", 1)):
            check_int(getattr(self, name), f"probe {name}", low=low)
        for name in ("lr", "tol"):
            check_float(getattr(self, name), f"probe {name}", low=0, low_open=True)
        check_float(self.momentum, "probe momentum", low=0, high=1, high_open=True)
        check_float(self.weight_decay, "probe weight_decay", low=0)
        check_float(self.lr_gamma, "probe lr_gamma", low=0, high=1, low_open=True)
        check_bool(self.class_weighted, "probe class_weighted")
        check_bool(self.standardize, "probe standardize")
        grid = tuple(float(v) for v in self.l2_grid)
        if not grid or any(not np.isfinite(v) or v <= 0 for v in grid):
            raise ParameterError(f"probe l2_grid must hold positive strengths, got {self.l2_grid!r}", param="l2_grid")
        if len(set(grid)) != len(grid):
            raise ParameterError(f"probe l2_grid holds a value twice: {self.l2_grid!r}", param="l2_grid")
        object.__setattr__(self, "l2_grid", tuple(sorted(grid, reverse=True)))  # strongest first
        if self.fast_products not in ("auto", "off"):
            raise ParameterError(f"probe fast_products must be 'auto' or 'off', got {self.fast_products!r}",
                                 param="fast_products")
        if self.grid_search not in ("full", "local"):
            raise ParameterError(f"probe grid_search must be 'full' or 'local', got {self.grid_search!r}",
                                 param="grid_search")

    @classmethod
    def paper(cls) -> "ProbeConfig":
        """Authors' ImageNet linear evaluation: SGD lr 15, momentum 0.9, wd 1e-4, StepLR(20, 0.1),
        batch 128, up to 60 epochs (on unnormalised MoCo v2 features)."""
        return cls(method="early_stopping", optimizer="sgd", lr=15.0, momentum=0.9, weight_decay=1e-4,
                   batch_size=128, max_epochs=60, patience=60, lr_step=20, lr_gamma=0.1, standardize=False)

    @classmethod
    def named(cls, name: str) -> "ProbeConfig":
        """A probe by name (:data:`PROBE_PRESETS`): ``logreg``, ``adam_early_stopping``, ``paper``."""
        if name not in PROBE_PRESETS:
            raise ParameterError(f"probe must be one of {', '.join(PROBE_PRESETS)}, got {name!r}", param="probe")
        return PROBE_PRESETS[name]()

    def as_dict(self) -> dict:
        out = asdict(self)
        out["l2_grid"] = list(self.l2_grid)
        if self.search_every == 1:   # added after runs were committed: their keys stay as they were
            del out["search_every"]
        return out


#: Probes selectable by name (``--probe`` on the command lines).
PROBE_PRESETS = {
    # The default: converged L2 logistic regression, strength chosen on validation.
    "logreg": lambda: ProbeConfig(),
    # This project's earlier default at cpu scale: Adam lr 1e-2, batch 1024, no weight decay,
    # early stopping with patience 3 (heads kept after a few epochs; results/tables/probe_change.md compares the two).
    "adam_early_stopping": lambda: ProbeConfig(method="early_stopping", batch_size=1024, lr=1e-2, max_epochs=30,
                                               patience=3),
    # The authors' recipe (SGD lr 15, StepLR, 60 epochs), for paper-scale runs.
    "paper": lambda: ProbeConfig.paper(),
}


@dataclass
class LinearHead:
    """A trained head ℓ = W z + b acting on raw features, with its training record."""

    weight: np.ndarray  # (C, D) float32
    bias: np.ndarray    # (C,) float32
    method: str = "early_stopping"
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = float("nan")
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    val_loss: float = float("nan")
    l2: float = float("nan")            # logreg: the chosen strength λ
    iterations: int = 0                 # logreg: L-BFGS iterations of the chosen fit
    converged: bool | None = None       # logreg: did the chosen fit reach the gradient tolerance
    grid: list[dict] = field(default_factory=list)   # logreg: one record per λ fitted this round
    #: logreg: (W, b) on raw features for every λ fitted this round — the next round's warm starts.
    solutions: dict = field(default_factory=dict, repr=False)
    validation: str = "given"           # "given", "internal" (a 20 % split of the labels) or "none"
    rounds_since_search: int = 0        # logreg, local search: rounds since the grid was last walked

    def logits(self, features: np.ndarray, chunk_rows: int = 65_536) -> np.ndarray:
        return predict_logits(features, self.weight, self.bias, chunk_rows)

    def record(self) -> dict:
        """The per-round columns the loop writes: what was chosen and whether it converged."""
        return {"probe_method": self.method, "val_top1": self.best_val_accuracy, "val_loss": self.val_loss,
                "probe_l2": self.l2, "probe_iterations": self.iterations if self.method == "logreg" else np.nan,
                "probe_converged": self.converged if self.converged is not None else np.nan,
                "probe_epochs": self.best_epoch if self.method == "early_stopping" else np.nan,
                "probe_fits": len(self.grid) if self.method == "logreg" else np.nan}

    def __repr__(self) -> str:
        c, d = self.weight.shape
        chosen = f", l2={self.l2:g}, iterations={self.iterations}, converged={self.converged}" \
            if self.method == "logreg" else f", best_epoch={self.best_epoch}"
        return (f"LinearHead({c} classes × {d} features, method={self.method!r}{chosen}, "
                f"val_top1={self.best_val_accuracy:.4f}, {self.seconds:.1f} s)")


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
        raise ParameterError(f"probe device {chosen} requested but CUDA is not available", param="device")
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
    warm_start: LinearHead | None = None,
) -> LinearHead:
    """Train a linear head from scratch on (features, labels) by ``config.method``.

    ``val_features``/``val_labels``: the class-balanced validation split that chooses the strength
    (logreg) or the epoch (early stopping).  Without one, logreg holds out 20 % of each class of the
    labelled set to choose λ and then refits on all of it; early stopping keeps the last epoch.
    ``warm_start``: the previous round's head (logreg: each λ starts from its solution there; the
    minimiser is the same, only found faster).  ``seed`` drives the minibatch order of early
    stopping (logreg uses no randomness).  Deterministic for a given seed, device and thread count.
    Memory: one float32 copy of the training and validation features, standardised in place.
    """
    check_features(np.asarray(features), "features")
    labels = np.asarray(labels)
    if labels.shape != (features.shape[0],):
        raise ParameterError(f"labels must have shape ({features.shape[0]},) to match features, got {labels.shape}",
                             param="labels")
    check_labels(labels, num_classes, "labels", allow_unlabelled=False)
    if np.unique(labels).size < 2:
        raise ParameterError("labels: the labelled points are all of one class, and a classifier needs two; label "
                             "points of another class first (random, coreset, typiclust and probcover need no model)",
                             param="labels")
    if (val_features is None) != (val_labels is None):
        raise ParameterError("val_features and val_labels must be given together", param="val_features")
    if val_features is not None:
        check_features(np.asarray(val_features), "val_features")
        val_labels = np.asarray(val_labels)
        if val_labels.shape != (val_features.shape[0],):
            raise ParameterError(f"val_labels must have shape ({val_features.shape[0]},), got {val_labels.shape}",
                                 param="val_labels")
        check_labels(val_labels, num_classes, "val_labels", allow_unlabelled=False)
        if val_features.shape[1] != features.shape[1]:
            raise ParameterError("val_features must have the same number of columns as features", param="val_features")
    if warm_start is not None and warm_start.weight.shape != (num_classes, features.shape[1]):
        raise ParameterError(f"warm_start: a head of shape {warm_start.weight.shape} cannot start a "
                             f"({num_classes}, {features.shape[1]}) probe; pass None", param="warm_start")
    started = time.perf_counter()
    dev = probe_device(device)
    x = _standardised(features, dev)
    y = torch.from_numpy(labels.astype(np.int64)).to(dev)
    mean, scale = _standardise_in_place(x, config.standardize)
    xv = yv = None
    if val_features is not None:
        xv = _standardised(val_features, dev, mean, scale)
        yv = torch.from_numpy(val_labels.astype(np.int64)).to(dev)
    if config.method == "early_stopping":
        return _train_early_stopping(x, y, xv, yv, mean, scale, num_classes, config, seed, dev, started)
    return _train_logreg(x, y, xv, yv, mean, scale, num_classes, config, warm_start, started)


def _standardise_in_place(x: torch.Tensor, standardize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ) of the columns of ``x``, which is standardised in place (σ ≥ 1e-6); (0, 1) if not asked."""
    dim = x.shape[1]
    if not standardize:
        return torch.zeros(dim, device=x.device), torch.ones(dim, device=x.device)
    mean = x.mean(dim=0)
    scale = x.std(dim=0, unbiased=False).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones(dim, device=x.device)
    x.sub_(mean).div_(scale)  # same values as (x − μ)/σ, without two more copies
    return mean, scale


def _to_raw(w_std: torch.Tensor, b_std: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor):
    """Fold the standardisation into the head: W z + b on raw z equals W_s (z − μ)/σ + b_s.
    ``w_std`` is (D, C); returns (C, D) and (C,) float32 numpy."""
    w_raw = (w_std.T / scale)
    return (w_raw.cpu().numpy().astype(np.float32),
            (b_std - w_raw @ mean).cpu().numpy().astype(np.float32))


def _from_raw(weight: np.ndarray, bias: np.ndarray, mean: torch.Tensor, scale: torch.Tensor):
    """The inverse of :func:`_to_raw`: the same function in this round's standardised coordinates."""
    w = torch.from_numpy(np.asarray(weight, np.float32)).to(mean.device)
    b = torch.from_numpy(np.asarray(bias, np.float32)).to(mean.device)
    return (w * scale).T.contiguous(), b + w @ mean


def _validation_score(xv: torch.Tensor, yv: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Validation top-1 and mean cross-entropy of the head (w as (D, C)), in chunks of rows."""
    correct, loss_sum = 0, 0.0
    for start in range(0, xv.shape[0], _EVAL_ROWS):
        logits = torch.addmm(b, xv[start:start + _EVAL_ROWS], w)
        target = yv[start:start + _EVAL_ROWS]
        correct += int((logits.argmax(dim=1) == target).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
    return correct / xv.shape[0], loss_sum / xv.shape[0]


def _better(a: dict, b: dict | None) -> bool:
    """Validation top-1 first; ties go to the lower validation loss."""
    return b is None or (a["val_top1"], -a["val_loss"]) > (b["val_top1"], -b["val_loss"])


def _internal_split(labels: np.ndarray, fraction: float = 0.2) -> np.ndarray:
    """Bool mask of a class-stratified ``fraction`` of the rows (classes with < 5 rows stay whole),
    the first rows of each class in a fixed shuffle (no seed needed: logreg is deterministic)."""
    held = np.zeros(labels.size, bool)
    order = np.random.default_rng(0).permutation(labels.size)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        if members.size >= 5:
            held[members[:int(round(fraction * members.size))]] = True
    return held


def _train_logreg(x, y, xv, yv, mean, scale, num_classes: int, config: ProbeConfig,
                  warm_start: LinearHead | None, started: float) -> LinearHead:
    """Fit every λ of the grid (or a local walk over it) to convergence; keep the best on validation."""
    validation = "given"
    if xv is None:
        held = torch.from_numpy(_internal_split(y.cpu().numpy())).to(x.device)
        if bool(held.any()):
            validation = "internal"
            head = _train_logreg(x[~held], y[~held], x[held], y[held], torch.zeros_like(mean),
                                 torch.ones_like(scale), num_classes, config, None, started)
            config = replace(config, l2_grid=(head.l2,))   # refit on every label with the chosen λ
            warm = {head.l2: (head.weight, head.bias)}
            internal_score = (head.best_val_accuracy, head.val_loss, head.grid)
        else:
            validation = "none"
            middle = config.l2_grid[len(config.l2_grid) // 2]
            config, warm = replace(config, l2_grid=(middle,)), {}
    s = torch.from_numpy(sample_weights(y.cpu().numpy(), num_classes, config.class_weighted).astype(np.float32))
    s = s.to(x.device)
    grid = config.l2_grid
    grad_scale = zero_head_gradient(x, y, s, num_classes)
    x_fast = x.to(torch.bfloat16) if config.fast_products == "auto" and fast_products_available(x.device) else None
    if validation == "given":
        warm = warm_start.solutions if warm_start is not None and warm_start.method == "logreg" else {}
    fits: dict[int, tuple] = {}

    def fit(k: int) -> dict:
        if k in fits:
            return fits[k][0]
        l2 = grid[k]
        if l2 in warm:
            init = _from_raw(*warm[l2], mean, scale) if validation != "internal" else \
                (torch.from_numpy(warm[l2][0]).T.contiguous(), torch.from_numpy(warm[l2][1]))
        else:   # the nearest λ already fitted this round (the regularisation path; stronger on ties), else zero
            near = min(fits, key=lambda j: (abs(j - k), -j < -k), default=None)
            init = (fits[near][1].weight, fits[near][1].bias) if near is not None else None
        t0 = time.perf_counter()
        # Candidates stop at the tolerance in bfloat16 products (when they are used); the kept one
        # is finished in float32 below.
        result = fit_logreg(x, y, s, num_classes, l2, init=init, tol=config.tol, max_iter=config.max_iter,
                            grad_scale=grad_scale, x_fast=x_fast, finish_in_float32=False)
        fits[k] = (_record(l2, result, init is not None, t0), result)
        return fits[k][0]

    def _record(l2, result, warm_started, t0) -> dict:
        record = {"l2": l2, "iterations": result.iterations, "converged": result.converged,
                  "checked_in": result.checked_in, "loss": result.loss, "warm": warm_started}
        if xv is not None:
            record["val_top1"], record["val_loss"] = _validation_score(xv, yv, result.weight, result.bias)
        else:
            record["val_top1"], record["val_loss"] = float("nan"), float("nan")
        record["seconds"] = round(time.perf_counter() - t0, 3)
        return record

    if config.grid_search == "local" and validation == "given":
        # Start at the previous round's choice and walk each way while the validation score improves:
        # the grid's best when the score is unimodal in log λ around it.
        previous = [k for k, l2 in enumerate(grid) if warm_start is not None and l2 == warm_start.l2]
        if previous:
            best = start = previous[0]
            fit(start)
            since = warm_start.rounds_since_search + 1
            walk = since >= config.search_every
            rounds_since_search = 0 if walk else since
            for step in (-1, 1) if walk else ():
                j = start + step
                while 0 <= j < len(grid):
                    if _better(fit(j), fits[best][0]):
                        best = j
                        j += step
                    else:
                        break
    if not fits:   # the full grid: no previous choice to start from, or grid_search="full"
        rounds_since_search = 0
        for k in range(len(grid)):
            fit(k)
    best = None
    for k in sorted(fits):
        if best is None or _better(fits[k][0], fits[best][0]):
            best = k
    record, result = fits[best]
    if result.checked_in != "float32":   # finish the kept fit in float32: its gradient test is exact
        t0 = time.perf_counter()
        exact = fit_logreg(x, y, s, num_classes, record["l2"], init=(result.weight, result.bias), tol=config.tol,
                           max_iter=max(1, config.max_iter - result.iterations), grad_scale=grad_scale)
        exact.iterations += result.iterations
        fits[best] = (_record(record["l2"], exact, record["warm"], t0), exact)
        fits[best][0]["seconds"] = round(fits[best][0]["seconds"] + record["seconds"], 3)
        record, result = fits[best]
    if validation == "internal":   # report the choice as made on the held-out fifth
        record = {**record, "val_top1": internal_score[0], "val_loss": internal_score[1]}
        fits[best] = (record, result)
    weight, bias = _to_raw(result.weight, result.bias, mean, scale)
    solutions = {fits[k][0]["l2"]: _to_raw(fits[k][1].weight, fits[k][1].bias, mean, scale) for k in fits}
    return LinearHead(weight, bias, "logreg", best_val_accuracy=record["val_top1"],
                      seconds=time.perf_counter() - started, val_loss=record["val_loss"], l2=record["l2"],
                      iterations=record["iterations"], converged=record["converged"],
                      grid=[fits[k][0] for k in sorted(fits)], solutions=solutions, validation=validation,
                      rounds_since_search=rounds_since_search)


def _train_early_stopping(x, y, xv, yv, mean, scale, num_classes: int, config: ProbeConfig,
                          seed: np.random.Generator | int, dev: torch.device, started: float) -> LinearHead:
    """Minibatch Adam/SGD from zero; keep the epoch with the best validation top-1 (ties: the lower
    validation loss, then the earlier epoch); stop after ``patience`` epochs in which neither
    improved.  Without a validation split the last epoch is kept."""
    generator = torch.Generator().manual_seed(_torch_seed(seed))
    dim = x.shape[1]

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
    weight, bias = _to_raw(w_std.T, b_std, mean, scale)
    val_loss = next((h["val_loss"] for h in history if h["epoch"] == best_epoch and "val_loss" in h), float("nan"))
    return LinearHead(weight, bias, "early_stopping", epochs_run, best_epoch, val_acc, history,
                      time.perf_counter() - started, val_loss=val_loss,
                      l2=config.weight_decay if config.weight_decay else float("nan"),
                      validation="given" if xv is not None else "none")
