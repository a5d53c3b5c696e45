"""What a stored prediction is used for: heatmap PNGs, extracted points, accepted masks."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from loupe.db.models import Project
from loupe.errors import ErrorCode, LoupeError
from loupe.learn.points import extract_points as pick_points
from loupe.services.items.query import active_version_id
from loupe.services.labels.core import MODEL_ACCEPTED
from loupe.services.segments import files, payload
from loupe.settings import Settings
from loupe.tasks.segment import segment_settings

LAYERS = ("probability", "uncertainty")
ACCEPT_BAND_PIXELS = 2_000_000
"""Pixels per band when a prediction is upsampled into a mask."""


def probability(
    db: Session, settings: Settings, project: Project, item_id: int
) -> files.ProbabilityMap:
    """The item's latest prediction; 404 ``no_prediction`` (NOT_FOUND) when none yet."""
    payload.view(db, project, item_id)  # the item exists and is an image
    pmap = files.read_probability(settings, project.id, item_id, active_version_id(db, project.id))
    if pmap is None:
        raise LoupeError(
            ErrorCode.NOT_FOUND,
            f"no_prediction: item {item_id} has no prediction yet; train a model first",
            item_id=item_id,
            reason="no_prediction",
        )
    return pmap


def _foreground(pmap: files.ProbabilityMap, value: int | None, grid: np.ndarray) -> np.ndarray:
    """uint8 probability (255 = 1) of class ``value`` (default: not background) on
    ``grid``, a (thinned) view of ``pmap.proba``."""
    if value is None:
        bg = np.flatnonzero(pmap.classes == 0)
        return 255 - grid[..., bg[0]] if len(bg) else grid.max(axis=2)
    return np.asarray(grid[..., pmap.column(value)])


def heatmap_png(
    pmap: files.ProbabilityMap, *, layer: str, value: int | None, max_size: int
) -> bytes:
    """RGBA PNG of the map at most ``max_size`` on its long side.

    ``probability``: red (0) .. green (1) of class ``value``; ``uncertainty``
    (1 - the top class's probability): dark .. bright. Alpha is opaque; the
    client sets the overlay's opacity.
    """
    if layer not in LAYERS:
        raise LoupeError(ErrorCode.INVALID, f"layer must be one of {list(LAYERS)}: {layer!r}")
    if not 16 <= max_size <= 8192:
        raise LoupeError(ErrorCode.INVALID, f"max_size must be 16..8192, got {max_size}")
    # A big image's grid is thinned to about twice the output size first, so the
    # float colour planes are never made at the grid's full size.
    step = max(1, max(pmap.proba.shape[:2]) // (2 * max_size))
    grid = pmap.proba[::step, ::step]
    if layer == "probability":  # in uint8 throughout: no float planes
        p = _foreground(pmap, value, grid)
        zero = np.zeros_like(p)
        rgba8 = np.stack([255 - p, p, zero, zero + 255], axis=2)
    else:
        u = 1.0 - grid.astype(np.float32).max(axis=2) / 255.0
        u = np.clip(u * (len(pmap.classes) / max(len(pmap.classes) - 1, 1)), 0, 1)
        rgba = np.stack([u, u, u * 0.6 + 0.4 * u**0.5, np.ones_like(u)], axis=2)
        rgba8 = np.rint(rgba * 255).astype(np.uint8)
    image = Image.fromarray(rgba8, mode="RGBA")
    rows, cols = pmap.shape
    scale = min(1.0, max_size / max(rows, cols))
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def extract(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    params: Mapping[str, Any],
    *,
    user_id: int | None,
) -> payload.SegmentAnnotation:
    """Replace the item's extracted points with points picked from its prediction."""
    opts = segment_settings(
        {**project.settings, **{k: v for k, v in params.items() if v is not None}}
    )
    pmap = probability(db, settings, project, item_id)
    big = files.is_big(pmap.shape)
    # A big image picks its points on the probability grid (never upsampled whole);
    # each grid cell becomes the pixel at its centre.
    scale = pmap.stride if big else 1
    try:
        classes, rows, cols = pick_points(
            pmap.proba.astype(np.float32) / 255.0 if big else pmap.pixels(),
            classes=pmap.classes,
            max_points=opts["max_points"],
            confidence_threshold=opts["confidence_threshold"],
            min_distance=opts["min_distance"] / scale,
            gradient_weight=opts["gradient_weight"],
            seed=item_id,
        )
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, f"extract-points: {exc}") from exc
    if big:
        centre = (scale - 1) / 2
        rows = np.minimum(rows * scale + centre, pmap.shape[0] - 1)
        cols = np.minimum(cols * scale + centre, pmap.shape[1] - 1)
    points = [
        {"x": float(c), "y": float(r), "value": int(k), "source": payload.EXTRACTED_POINT}
        for k, r, c in zip(classes.tolist(), rows.tolist(), cols.tolist(), strict=True)
    ]
    return payload.replace_extracted(
        db, project, item_id, points, user_id=user_id, model_version_id=pmap.model_version_id
    )


def accept_mask(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    *,
    threshold: float,
    user_id: int | None,
) -> payload.SegmentAnnotation:
    """The prediction becomes the item's mask (origin ``model_accepted``): each pixel
    takes its most likely class, or background when that class's probability is
    below ``threshold``."""
    if not 0 <= threshold <= 1:
        raise LoupeError(ErrorCode.INVALID, f"threshold must be in [0, 1], got {threshold}")
    pmap = probability(db, settings, project, item_id)
    rows, cols = pmap.shape
    mask = np.empty((rows, cols), dtype=np.uint8)
    # Upsampled band by band: a big image's full-resolution float map never exists.
    band = max(pmap.stride, ACCEPT_BAND_PIXELS // max(cols, 1) // pmap.stride * pmap.stride)
    for r0 in range(0, rows, band):
        mask[r0 : r0 + band] = _mask_of(pmap.pixel_rows(r0, min(r0 + band, rows)), pmap, threshold)
    return payload.save_mask(
        db,
        settings,
        project,
        item_id,
        version=None,
        mask=mask,
        user_id=user_id,
        origin=MODEL_ACCEPTED,
        model_version_id=_existing_version(db, pmap.model_version_id),
    )


def _mask_of(proba: np.ndarray, pmap: files.ProbabilityMap, threshold: float) -> np.ndarray:
    """Label values of ``(h, w, K)`` probabilities: the most likely class, background
    where it is below ``threshold`` (binary: the foreground probability thresholded)."""
    bg = np.flatnonzero(pmap.classes == 0)
    if len(pmap.classes) == 2 and len(bg):
        fg = 1 - int(bg[0])
        return np.where(proba[..., fg] >= threshold, pmap.classes[fg], 0).astype(np.uint8)
    best = proba.argmax(axis=2)
    mask = pmap.classes[best].astype(np.uint8)
    mask[np.take_along_axis(proba, best[..., None], axis=2)[..., 0] < threshold] = 0
    return mask


def _existing_version(db: Session, version_id: int) -> int | None:
    from loupe.db.models import ModelVersion

    version = db.get(ModelVersion, version_id)
    return version_id if version is not None and version.status == "ready" else None
