"""Per-item inputs of the segment trainer: cached pixel features, sparse label images
and the regions the validation split holds out whole; loading a trained head."""

from __future__ import annotations

from typing import Any

import numpy as np

from loupe.db.models import Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.features.pixels import PixelFeatures
from loupe.learn.pixel_epochs import FittedPixelHead
from loupe.learn.pixel_heads import UNLABELLED, empty_labels, rasterize_clicks, rasterize_strokes
from loupe.services.segments import files
from loupe.settings import Settings
from loupe.tasks.segment import segment_settings


def label_values(data: dict[str, Any]) -> set[int]:
    """The class values a payload's points and scribbles name (masks not read)."""
    values = {int(p["value"]) for p in data.get("points", [])}
    values |= {int(s["value"]) for s in data.get("scribbles", [])}
    return values


def item_features(settings: Settings, project: Project, item: Item) -> PixelFeatures:
    """The item's cached pixel features (computed, tile by tile, when missing)."""
    feature_set = segment_settings(project.settings)["pixel_features"]
    cache = files.feature_cache(settings, project.id)
    cached = cache.get(item.sha256, files.image_shape(item), feature_set)
    if cached is not None:  # no image decode when the features are on disk
        return cached
    image = files.load_image(item)
    try:
        return cache.get_or_compute(
            item.sha256,
            image,
            feature_set,
            channel_axis=files.channel_axis(image),
            cache_dir=settings.home / "cache" / "onnx",
        )
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, f"pixel features of item {item.id}: {exc}") from exc


def sparse_labels(
    settings: Settings, project_id: int, shape: tuple[int, int], data: dict[str, Any]
) -> np.ndarray:
    """The sparse label image of a payload (mask first; scribbles, then points, on top)."""
    labels = empty_labels(shape)
    if data.get("mask"):
        mask = files.read_mask(settings, project_id, str(data["mask"]))
        if mask.shape == shape:
            labels[:] = mask
    strokes = [
        (int(s["value"]), np.asarray([[y, x] for x, y in s["path"]], dtype=np.float64))
        for s in data.get("scribbles", [])
    ]
    for s, (value, path) in zip(data.get("scribbles", []), strokes, strict=True):
        rasterize_strokes(labels, [(value, path)], width=float(s.get("width") or 6))
    points = data.get("points", [])
    if points:
        rasterize_clicks(
            labels,
            [p["y"] for p in points],
            [p["x"] for p in points],
            [int(p["value"]) for p in points],
        )
    return labels


def regions(labels: np.ndarray) -> np.ndarray:
    """One id per connected labelled region (a click disk, a scribble, a mask blob):
    the validation split holds out whole regions."""
    from scipy import ndimage

    out = np.zeros(labels.shape, dtype=np.int64)
    offset = 0
    for value in np.unique(labels[labels != UNLABELLED]):
        regions, count = ndimage.label(labels == value)
        out[regions > 0] = regions[regions > 0] + offset
        offset += count
    return out


def load_head(settings: Settings, project_id: int, version_id: int) -> FittedPixelHead:
    path = settings.models_dir / str(project_id) / str(version_id) / "pixel_head.npz"
    if not path.is_file():
        raise LoupeError(ErrorCode.NOT_FOUND, f"model version {version_id} has no pixel head")
    with np.load(path) as z:
        return FittedPixelHead.from_arrays(dict(z))
