"""Per-item inputs of the segment trainer: cached pixel features, sparse label images
and the regions the validation split holds out whole; loading a trained head."""

from __future__ import annotations

from typing import Any

import numpy as np

from loupe.db.models import Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.features.pixels import PixelFeatures
from loupe.learn.pixel_epochs import FittedPixelHead
from loupe.learn.pixel_heads import (
    CLICK_RADIUS,
    UNLABELLED,
    empty_labels,
    rasterize_clicks,
    rasterize_strokes,
    training_pixels,
)
from loupe.services.segments import files
from loupe.settings import Settings
from loupe.tasks.segment import segment_settings

LABEL_TILE = 2048
"""Big images are labelled in tiles of this side (:func:`training_samples`)."""


def label_values(data: dict[str, Any]) -> set[int]:
    """The class values a payload's points and scribbles name (masks not read)."""
    values = {int(p["value"]) for p in data.get("points", [])}
    values |= {int(s["value"]) for s in data.get("scribbles", [])}
    return values


def item_features(settings: Settings, project: Project, item: Item) -> PixelFeatures:
    """The item's cached pixel features (computed, tile by tile, when missing; a big
    TIFF is read region by region, see :func:`files.feature_geometry`)."""
    feature_set = segment_settings(project.settings)["pixel_features"]
    geo = files.feature_geometry(item, feature_set)
    cache = files.feature_cache(settings, project.id)
    cached = cache.get(geo.key, files.image_shape(item), feature_set, strides=geo.strides)
    if cached is not None:  # no image decode when the features are on disk
        return cached
    image = files.open_image(item)
    try:
        return cache.get_or_compute(
            geo.key,
            image,
            feature_set,
            channel_axis=files.channel_axis(image) if isinstance(image, np.ndarray) else None,
            strides=geo.strides,
            cache_dir=settings.home / "cache" / "onnx",
            pixel_scale=geo.pixel_scale,
        )
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, f"pixel features of item {item.id}: {exc}") from exc


def training_samples(
    settings: Settings,
    project_id: int,
    shape: tuple[int, int],
    data: dict[str, Any],
    *,
    max_per_class: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, values, groups)`` of at most ``max_per_class`` labelled pixels per
    class of a payload, with the id of the labelled region each lies in.

    An image up to ``files.BIG_PIXELS`` is labelled whole (:func:`sparse_labels`,
    :func:`regions`). A big one is labelled in tiles of :data:`LABEL_TILE`,
    only where it has labels, and each class keeps the pixels with the smallest random
    keys across tiles (a uniform sample, never a whole-image label array); a region
    cut by a tile border counts as two regions.
    """
    rows, cols = int(shape[0]), int(shape[1])
    if not files.is_big((rows, cols)):
        labels = sparse_labels(settings, project_id, shape, data)
        rr, cc, values = training_pixels(labels, max_per_class=max_per_class, seed=seed)
        return rr, cc, values, regions(labels)[rr, cc]
    mask = files.read_mask(settings, project_id, str(data["mask"])) if data.get("mask") else None
    if mask is not None and mask.shape != (rows, cols):
        mask = None
    rng = np.random.default_rng(seed)
    kept: dict[int, tuple[np.ndarray, ...]] = {}
    offset = 0
    for r0 in range(0, rows, LABEL_TILE):
        for c0 in range(0, cols, LABEL_TILE):
            window = (r0, min(r0 + LABEL_TILE, rows), c0, min(c0 + LABEL_TILE, cols))
            tile_labels = _window_labels(mask, window, data)
            if tile_labels is None:
                continue
            rr, cc, values = training_pixels(tile_labels)
            if not len(rr):
                continue
            groups = regions(tile_labels)[rr, cc] + offset
            offset = int(groups.max()) + 1
            keys = rng.random(len(rr))
            for value in np.unique(values):
                pick = np.flatnonzero(values == value)
                both: tuple[np.ndarray, ...] = (
                    keys[pick],
                    rr[pick] + r0,
                    cc[pick] + c0,
                    groups[pick],
                )
                old = kept.get(int(value))
                if old is not None:
                    both = tuple(np.concatenate(p) for p in zip(old, both, strict=True))
                if len(both[0]) > max_per_class:
                    best = np.argpartition(both[0], max_per_class)[:max_per_class]
                    both = tuple(p[best] for p in both)
                kept[int(value)] = both
    if not kept:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    out_r, out_c, out_v, out_g = [], [], [], []
    for value, (_keys, rr, cc, gg) in sorted(kept.items()):
        out_r.append(rr)
        out_c.append(cc)
        out_v.append(np.full(len(rr), value, np.int64))
        out_g.append(gg)
    return (
        np.concatenate(out_r).astype(np.int64),
        np.concatenate(out_c).astype(np.int64),
        np.concatenate(out_v),
        np.concatenate(out_g).astype(np.int64),
    )


def _window_labels(
    mask: np.ndarray | None, window: tuple[int, int, int, int], data: dict[str, Any]
) -> np.ndarray | None:
    """The sparse labels of pixels ``[r0, r1) x [c0, c1)`` (mask, then scribbles, then
    points on top, as :func:`sparse_labels`), or None when nothing touches it."""
    r0, r1, c0, c1 = window
    strokes = []
    for s in data.get("scribbles", []):
        path = np.asarray([[y, x] for x, y in s["path"]], dtype=np.float64)
        reach = float(s.get("width") or 6) / 2 + 2
        if (
            path[:, 0].max() + reach >= r0
            and path[:, 0].min() - reach < r1
            and path[:, 1].max() + reach >= c0
            and path[:, 1].min() - reach < c1
        ):
            strokes.append((int(s["value"]), path - [r0, c0], float(s.get("width") or 6)))
    reach = CLICK_RADIUS + 2
    points = [
        p
        for p in data.get("points", [])
        if r0 - reach <= p["y"] < r1 + reach and c0 - reach <= p["x"] < c1 + reach
    ]
    if mask is None and not strokes and not points:
        return None
    labels = empty_labels((r1 - r0, c1 - c0))
    if mask is not None:
        labels[:] = mask[r0:r1, c0:c1]
    for value, path, width in strokes:
        rasterize_strokes(labels, [(value, path)], width=width)
    if points:
        rasterize_clicks(
            labels,
            [p["y"] - r0 for p in points],
            [p["x"] - c0 for p in points],
            [int(p["value"]) for p in points],
        )
    return labels


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
