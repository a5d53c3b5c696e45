"""Torch modules of the CNN/ViT backbones. Imports torch: import this module lazily.

Every builder returns a *feature extractor*: normalised float ``(n, 3, H, W)`` in,
pooled un-normalised features ``(n, dim)`` out, with the ImageNet weights loaded and the
module in eval mode. :class:`PixelEmbedder` wraps one for inference from raw pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention
from torch import nn

from loupe.features.base import FeatureError, Preprocessing


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` file (``weights_only``: no code from the file is run)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or hostile file
        raise FeatureError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FeatureError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return state


def _load_strict(model: nn.Module, path: Path) -> None:
    try:
        model.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise FeatureError(f"{path} does not match the model: {first}") from exc


class PooledFeatures(nn.Module):
    """``body`` (a convolutional trunk) followed by global average pooling."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


class _EffNetTrunk(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.extract_features(x)  # type: ignore[operator]


def effnet_lite0_classifier(weights: Path) -> nn.Module:
    """The whole EfficientNet-Lite0 ImageNet classifier (1000 logits)."""
    from efficientnet_lite_pytorch import EfficientNet

    # Built with from_name + our loader: from_pretrained prints and uses torch.load
    # without weights_only. Lite0 uses ReLU6 throughout; do NOT call set_swish (it
    # would replace ReLU6 by swish) - ReLU6 exports to ONNX as it is.
    model = EfficientNet.from_name("efficientnet-lite0")
    _load_strict(model, weights)
    return model.eval()


def effnet_lite0_features(weights: Path) -> nn.Module:
    """EfficientNet-Lite0 trunk + global average pooling: 1280 features."""
    return PooledFeatures(_EffNetTrunk(effnet_lite0_classifier(weights))).eval()


def mobilenet_v2_classifier(weights: Path) -> nn.Module:
    """torchvision's MobileNetV2 ImageNet classifier (1000 logits)."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    _load_strict(model, weights)
    return model.eval()


def mobilenet_v2_features(weights: Path) -> nn.Module:
    """MobileNetV2 ``features`` + global average pooling: 1280 features."""
    body = mobilenet_v2_classifier(weights).features
    assert isinstance(body, nn.Module)
    return PooledFeatures(body).eval()


def resnet18_classifier(weights: Path) -> nn.Module:
    """torchvision's ResNet-18 ImageNet classifier (1000 logits)."""
    from torchvision.models import resnet18

    model = resnet18()
    _load_strict(model, weights)
    return model.eval()


def resnet18_features(weights: Path) -> nn.Module:
    """ResNet-18 up to its global pooling: 512 features."""
    model = resnet18_classifier(weights)
    model.fc = nn.Identity()
    return model.eval()


def dinov2_small_features(weights: Path, *, size: int) -> nn.Module:
    """DINOv2 ViT-S/14 (timm) with the official checkpoint; the CLS token: 384 features.

    timm converts the original ``dinov2_vits14_pretrain.pth`` keys and resamples the
    position embeddings from 518 px to ``size``.
    """
    try:
        import timm
    except ImportError as exc:
        raise FeatureError("dinov2-s needs the timm package (pip install timm)") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(
            "vit_small_patch14_dinov2",
            pretrained=True,
            pretrained_cfg_overlay={"file": str(weights)},
            img_size=size,
            num_classes=0,
        )
    return model.eval()


class PixelEmbedder(nn.Module):
    """uint8 ``(n, H, W, 3)`` pixels -> L2-normalised float32 ``(n, dim)`` embeddings.

    Normalisation happens inside the graph, so the ONNX file takes raw pixels and the
    NHWC -> NCHW permute yields a channels-last tensor for free.
    """

    def __init__(self, extractor: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.extractor = extractor
        mean = torch.tensor(preprocessing.mean, dtype=torch.float32) * 255.0
        scale = 1.0 / (torch.tensor(preprocessing.std, dtype=torch.float32) * 255.0)
        self.mean: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("mean", mean.view(1, 3, 1, 1))
        self.register_buffer("scale", scale.view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - self.mean) * self.scale
        return F.normalize(self.extractor(x), dim=1)


class TorchRunner:
    """Runs a :class:`PixelEmbedder` eagerly: ``torch.inference_mode``, channels-last on
    the CPU (with ``threads`` intra-op threads) or float32 on CUDA."""

    def __init__(self, module: PixelEmbedder, *, device: str, threads: int) -> None:
        self.device = torch.device(device)
        if self.device.type == "cpu":
            torch.set_num_threads(threads)
            module = module.to(memory_format=torch.channels_last)
        else:
            torch.backends.cudnn.benchmark = True
        self.module = module.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.module(pixels).float().cpu().numpy()
