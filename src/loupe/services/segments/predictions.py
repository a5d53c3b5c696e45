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


def _foreground(pmap: files.ProbabilityMap, value: int | None) -> np.ndarray:
    """Probability grid (float32, 0..1) of class ``value`` (default: not background)."""
    proba = pmap.proba.astype(np.float32) / 255.0
    if value is None:
        bg = np.flatnonzero(pmap.classes == 0)
        return 1.0 - proba[..., bg[0]] if len(bg) else proba.max(axis=2)
    return proba[..., pmap.column(value)]


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
    if layer == "probability":
        p = _foreground(pmap, value)
        rgba = np.stack([1.0 - p, p, np.zeros_like(p), np.ones_like(p)], axis=2)
    else:
        u = 1.0 - pmap.proba.astype(np.float32).max(axis=2) / 255.0
        u = np.clip(u * (len(pmap.classes) / max(len(pmap.classes) - 1, 1)), 0, 1)
        rgba = np.stack([u, u, u * 0.6 + 0.4 * u**0.5, np.ones_like(u)], axis=2)
    image = Image.fromarray(np.rint(rgba * 255).astype(np.uint8), mode="RGBA")
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
    try:
        classes, rows, cols = pick_points(
            pmap.pixels(),
            classes=pmap.classes,
            max_points=opts["max_points"],
            confidence_threshold=opts["confidence_threshold"],
            min_distance=opts["min_distance"],
            gradient_weight=opts["gradient_weight"],
            seed=item_id,
        )
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, f"extract-points: {exc}") from exc
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
    proba = pmap.pixels()
    best = proba.argmax(axis=2)
    mask = pmap.classes[best].astype(np.uint8)
    mask[np.take_along_axis(proba, best[..., None], axis=2)[..., 0] < threshold] = 0
    bg = np.flatnonzero(pmap.classes == 0)
    if len(pmap.classes) == 2 and len(bg):  # binary: threshold the foreground probability
        fg = 1 - int(bg[0])
        mask = np.where(proba[..., fg] >= threshold, pmap.classes[fg], 0).astype(np.uint8)
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


def _existing_version(db: Session, version_id: int) -> int | None:
    from loupe.db.models import ModelVersion

    version = db.get(ModelVersion, version_id)
    return version_id if version is not None and version.status == "ready" else None
