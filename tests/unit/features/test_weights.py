"""Weights files: clear errors offline, loading from LOUPE_WEIGHTS, hashes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.features import (
    DinoV2Small,
    FeatureError,
    ResNet18,
    WeightsNotFound,
    available_backbones,
    build_torch_model,
    get_backbone,
)
from loupe.media import sha256_file


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty LOUPE_WEIGHTS folder and an empty torch hub cache."""
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("LOUPE_WEIGHTS", str(weights))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return weights


@pytest.mark.parametrize(
    ("cls", "filename"),
    [(ResNet18, "resnet18-f37072fd.pth"), (DinoV2Small, "dinov2_vits14_pretrain.pth")],
)
def test_offline_missing_weights_name_the_file_and_the_folders(
    cls: type[ResNet18], filename: str, empty_caches: Path, tmp_path: Path
) -> None:
    backbone = cls(allow_download=False, cache_dir=tmp_path / "onnx")
    with pytest.raises(WeightsNotFound) as caught:
        backbone.embed([np.zeros((32, 32, 3), np.uint8)])
    message = str(caught.value)
    assert filename in message
    assert str(empty_caches) in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message
    assert isinstance(caught.value, FeatureError)
    assert caught.value.filename == filename


def test_available_backbones_explains_missing_weights(empty_caches: Path) -> None:
    rows = {row["name"]: row for row in available_backbones()}
    assert rows["resnet18"]["available"] is False
    assert "resnet18-f37072fd.pth" in rows["resnet18"]["reason"]
    assert "dinov2_vits14_pretrain.pth" in rows["dinov2-s"]["reason"]


def test_resnet18_loads_a_weights_file_from_loupe_weights(
    empty_caches: Path, tmp_path: Path
) -> None:
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(0)
    reference = resnet18().eval()
    path = empty_caches / "resnet18-f37072fd.pth"
    torch.save(reference.state_dict(), path)

    backbone = ResNet18(runtime="torch", device="cpu", allow_download=False)
    assert backbone.weights_sha256() == sha256_file(path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    matrix = backbone.embed(images)
    assert matrix.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)

    # The same numbers as the saved network's pooled features.
    reference.fc = torch.nn.Identity()
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference((pixels - mean) / std), dim=1)
    np.testing.assert_allclose(matrix, expected.numpy(), atol=1e-4)

    module, dim = build_torch_model("resnet18", weights_dir=empty_caches)
    assert dim == 512
    assert torch.equal(module.state_dict()["conv1.weight"], reference.state_dict()["conv1.weight"])


def test_a_corrupt_weights_file_is_a_clear_error(empty_caches: Path) -> None:
    (empty_caches / "resnet18-f37072fd.pth").write_bytes(b"not a checkpoint")
    backbone = ResNet18(runtime="torch", device="cpu", allow_download=False)
    with pytest.raises(FeatureError, match="resnet18-f37072fd.pth"):
        backbone.embed([np.zeros((32, 32, 3), np.uint8)])


def test_shipped_weights_have_a_stable_hash() -> None:
    digest = get_backbone("effnet-lite0").weights_sha256()
    assert digest is not None and len(digest) == 64
    assert get_backbone("classic").weights_sha256() is None


def test_build_torch_model_gives_a_trainable_extractor() -> None:
    import torch

    module, dim = build_torch_model("mobilenet_v2")
    assert dim == 1280
    with torch.inference_mode():
        out = module(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1280)
    assert any(p.requires_grad for p in module.parameters())
    with pytest.raises(ValueError, match="classic"):
        build_torch_model("classic")


def test_dinov2_loads_a_weights_file_and_resamples_positions(empty_caches: Path) -> None:
    pytest.importorskip("timm")
    import timm
    import torch

    torch.manual_seed(0)
    # A randomly initialised ViT-S/14 at the checkpoint's native 518 px.
    reference = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    torch.save(reference.state_dict(), empty_caches / "dinov2_vits14_pretrain.pth")

    backbone = DinoV2Small(runtime="torch", device="cpu", allow_download=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (240, 300, 3), dtype=np.uint8) for _ in range(2)]
    matrix = backbone.embed(images)
    assert matrix.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    module, dim = build_torch_model("dinov2-s", weights_dir=empty_caches)
    assert dim == 384
    assert module.pos_embed.shape[1] == 1 + (224 // 14) ** 2
