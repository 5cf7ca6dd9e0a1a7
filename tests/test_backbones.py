"""Backbones: the paper's checkpoint formats made here with random weights, loaded back exactly."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torchvision
from image_fixtures import TINY_ARCHIVE, tiny_slice

from alkit.data import backbones as bb
from alkit.data.backbones import download_weights, load_backbone, read_checkpoint, resnet18_cifar

@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Nothing a test does lands in the user's cache ($ALKIT_CACHE or ~/.cache/alkit)."""
    monkeypatch.setenv("ALKIT_CACHE", str(tmp_path / "alkit-cache"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(x)


@pytest.fixture(scope="module")
def cifar_encoder():
    return resnet18_cifar().eval()


@pytest.fixture(scope="module")
def images32():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _simclr_checkpoint(encoder: torch.nn.Module, path, extra: dict | None = None):
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state["linear.weight"], state["linear.bias"] = torch.zeros(10, 512), torch.zeros(10)
    state.update(extra or {})
    torch.save(state, path)
    return path


def test_simclr_resnet18_cifar_checkpoint_reproduces_the_source_features(cifar_encoder, images32, tmp_path):
    path = _simclr_checkpoint(cifar_encoder, tmp_path / "simclr.pth")
    backbone = load_backbone("simclr_resnet18_cifar", path)
    assert backbone.feature_dim == 512 and backbone.train_resolution == 32
    assert isinstance(backbone.model.conv1, torch.nn.Conv2d) and backbone.model.conv1.kernel_size == (3, 3)
    assert backbone.model.conv1.stride == (1, 1) and isinstance(backbone.model.maxpool, torch.nn.Identity)
    out = backbone(images32)
    assert out.shape == (2, 512)
    assert torch.equal(out, _features(cifar_encoder, images32))
    report = backbone.load_report
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["linear.bias", "linear.weight"]
    assert len(report.loaded) == len(cifar_encoder.state_dict())
    assert backbone.weights_sha256 == bb.file_sha256(path)


@pytest.mark.slow
def test_moco_v2_resnet50_checkpoint_reproduces_the_source_features(tmp_path):
    source = torchvision.models.resnet50(weights=None)
    source.fc = torch.nn.Identity()
    state = {f"module.encoder_q.{k}": v for k, v in source.state_dict().items()}
    # What a MoCo v2 checkpoint also holds: the MLP projection head, the key encoder and the queue.
    state["module.encoder_q.fc.0.weight"] = torch.zeros(2048, 2048)
    state["module.encoder_q.fc.2.weight"] = torch.zeros(128, 2048)
    state["module.encoder_k.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    state["module.queue"] = torch.zeros(128, 16)
    path = tmp_path / "moco_v2_800ep.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {"lr": 0.03}}, path)
    backbone = load_backbone("moco_v2_resnet50", path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    out = backbone(x)
    assert out.shape == (2, 2048)
    assert torch.equal(out, _features(source, x))
    report = backbone.load_report
    assert report.missing == [] and report.unexpected == []
    assert "module.queue" in report.skipped and "module.encoder_q.fc.0.weight" in report.skipped


def test_torchvision_architecture_from_a_local_file(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # saved from DataParallel
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = load_backbone("torchvision:resnet18", path)
    assert backbone.feature_dim == 512
    source.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(backbone(x), _features(source, x))
    assert sorted(backbone.load_report.skipped) == ["module.fc.bias", "module.fc.weight"]


def test_corrupt_or_truncated_checkpoint_fails_naming_the_file(cifar_encoder, tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pth"):
        load_backbone("simclr_resnet18_cifar", garbage)
    good = _simclr_checkpoint(cifar_encoder, tmp_path / "good.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pth"):
        load_backbone("simclr_resnet18_cifar", truncated)
    no_tensors = tmp_path / "no_tensors.pth"
    torch.save({"epoch": 3}, no_tensors)
    with pytest.raises(ValueError, match="no_tensors.pth"):
        read_checkpoint(no_tensors)


def test_mismatched_architecture_fails_clearly(cifar_encoder, tmp_path):
    simclr = _simclr_checkpoint(cifar_encoder, tmp_path / "simclr.pth")
    with pytest.raises(ValueError, match="match"):  # no tensor under module.encoder_q.
        load_backbone("moco_v2_resnet50", simclr)
    with pytest.raises(ValueError, match="does not fit"):  # CIFAR-stem ResNet-18 into a ResNet-34
        load_backbone("torchvision:resnet34", simclr, prefix="encoder.")
    imagenet_stem = torchvision.models.resnet18(weights=None)
    path = tmp_path / "imagenet_stem.pth"
    torch.save({f"encoder.{k}": v for k, v in imagenet_stem.state_dict().items()}, path)
    with pytest.raises(ValueError, match="conv1"):  # 7×7 stem into the 3×3 CIFAR stem
        load_backbone("simclr_resnet18_cifar", path)


def test_missing_and_unexpected_tensors_are_reported(cifar_encoder, images32, tmp_path):
    state = {f"encoder.{k}": v for k, v in cifar_encoder.state_dict().items() if k != "layer4.1.bn2.bias"}
    state["encoder.projection.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="layer4.1.bn2.bias"):
        load_backbone("simclr_resnet18_cifar", path)
    with pytest.warns(UserWarning):
        backbone = load_backbone("simclr_resnet18_cifar", path, allow_missing=True)
    assert backbone.load_report.missing == ["layer4.1.bn2.bias"]
    assert backbone.load_report.unexpected == ["projection.weight"]


def test_bad_names_and_missing_weights(tmp_path):
    with pytest.raises(ValueError, match="backbone"):
        load_backbone("vit_giant")
    with pytest.raises(ValueError, match="weights="):
        load_backbone("simclr_resnet18_cifar")
    with pytest.raises(FileNotFoundError, match="weights="):
        load_backbone("moco_v2_resnet50", tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="arch"):
        load_backbone("torchvision:not_a_net", tmp_path / "absent.pth")


def test_url_loader_fails_fast_offline_and_downloads_when_reachable(cifar_encoder, images32, tmp_path, monkeypatch):
    source = _simclr_checkpoint(cifar_encoder, tmp_path / "simclr.pth")
    real_check = bb.check_online
    monkeypatch.setattr(bb, "check_online", lambda url, timeout=8.0: "URLError: offline")
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="put it at"):
        load_backbone("simclr_resnet18_cifar", url="https://example.invalid/simclr.pth", cache_dir=tmp_path / "c")
    assert time.perf_counter() - started < 5
    monkeypatch.setattr(bb, "check_online", real_check)
    backbone = load_backbone("simclr_resnet18_cifar", url=source.as_uri(), cache_dir=tmp_path / "c")
    assert torch.equal(backbone(images32), _features(cifar_encoder, images32))
    assert (tmp_path / "c" / "weights" / "simclr.pth").is_file()
    with pytest.raises(ValueError, match="sha256"):
        download_weights(source.as_uri(), tmp_path / "c", sha256="0" * 64)


def test_efficientnet_lite0_default_loads_the_packaged_imagenet_weights():
    backbone = load_backbone()
    assert backbone.feature_dim == 1280 and backbone.load_report.missing == []
    assert sorted(backbone.load_report.skipped) == ["_fc.bias", "_fc.weight"]
    assert backbone.mean == pytest.approx((127 / 255,) * 3) and backbone.std == pytest.approx((128 / 255,) * 3)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(3))
    out = backbone(x)
    assert out.shape == (2, 1280) and torch.equal(out, backbone(x))
    assert out.min() >= 0 and out.max() <= 6  # mean of ReLU6 activations


@pytest.mark.skipif(not TINY_ARCHIVE.is_file(), reason="shared Tiny-ImageNet archive absent")
@pytest.mark.slow
def test_efficientnet_lite0_recognises_tiny_imagenet_images():
    """Tiny-ImageNet classes are ImageNet classes: the packaged classifier, fed the backbone's
    features with its own preprocessing, must beat chance (0.1 %) by far.  Catches wrong weights
    or normalisation constants (ImageNet mean/std instead of Lite's 127/128 measured ~40 % lower)."""
    from alkit.data.datasets import load_dataset
    from alkit.data.features import default_preprocessing

    backbone = load_backbone()
    head = read_checkpoint(backbone.weights_path)
    categories = [c.lower() for c in torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]]
    test = load_dataset("tiny-imagenet", tiny_slice(), "test", limit=100)
    imagenet_class = np.array([categories.index(n.lower()) if n.lower() in categories else -1
                               for n in test.class_names])
    prep = default_preprocessing(test, backbone, resolution=96)
    pixels = torch.from_numpy(np.stack([prep.pixels(test.load_image(i)) for i in range(len(test))]))
    feats = backbone(prep.normalize(pixels))
    predicted = (feats @ head["_fc.weight"].T + head["_fc.bias"]).argmax(1).numpy()
    top1 = float(np.mean(predicted == imagenet_class[test.labels]))
    assert top1 > 0.1, top1
