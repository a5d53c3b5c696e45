"""Image embeddings: backbones by name, batched embedding, an on-disk feature cache.

Arrays and paths in, arrays out; nothing here knows about HTTP, the database or jobs,
and importing this package does not import torch (backbones import it when they first
run). Quick use::

    from loupe.features import FeatureStore, compute_missing, get_backbone

    backbone = get_backbone("effnet-lite0")
    matrix = backbone.embed([rgb_uint8_image])            # (1, 1280) float32, unit rows
    store = FeatureStore(root, project_id, backbone.name, backbone.dim)
    errors = compute_missing(store, backbone, [(item_id, path), ...])
"""

from loupe.features.backbones import (
    BACKBONES,
    DEFAULT_BACKBONE,
    DinoV2Small,
    EffNetLite0,
    MobileNetV2,
    ResNet18,
    available_backbones,
    build_imagenet_classifier,
    build_torch_model,
    get_backbone,
    preprocessing_of,
    register_backbone,
)
from loupe.features.base import (
    IMAGENET,
    Backbone,
    FeatureError,
    Preprocessing,
    ProgressCallback,
    WeightsNotFound,
    WeightsStatus,
    l2_normalise,
)
from loupe.features.classic import Classic
from loupe.features.cnn import CnnBackbone
from loupe.features.imaging import ImageSource, fit_square, read_rgb
from loupe.features.store import FeatureStore, compute_missing

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "IMAGENET",
    "Backbone",
    "Classic",
    "CnnBackbone",
    "DinoV2Small",
    "EffNetLite0",
    "FeatureError",
    "FeatureStore",
    "ImageSource",
    "MobileNetV2",
    "Preprocessing",
    "ProgressCallback",
    "ResNet18",
    "WeightsNotFound",
    "WeightsStatus",
    "available_backbones",
    "build_imagenet_classifier",
    "build_torch_model",
    "compute_missing",
    "fit_square",
    "get_backbone",
    "l2_normalise",
    "preprocessing_of",
    "read_rgb",
    "register_backbone",
]
