"""``segment``: 2-D segmentation of images from points, scribbles and masks.

Labels are one payload per item (``Annotation.data``): human and extracted points,
scribbles (polyline + width) and an optional lossless mask file, written by
:mod:`loupe.services.segments`. Its trainer is the ``segment_train`` job (pixel
features + an epoch-trained pixel head), not the generic training job, so
:attr:`SegmentKind.trainable` stays False.

:func:`segment_settings` is the one place that knows the segment project settings
and their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.masks import MaskSchema, MaskTaskKind

SEGMENT_DEFAULTS: dict[str, Any] = {
    "patience": 5,
    "min_delta": 0.001,
    "heatmap_every": 2,
    "max_epochs": 100,
    "max_points": 500,
    "confidence_threshold": 0.8,
    "min_distance": 3.0,
    "gradient_weight": 0.2,
    "pixel_features": "effnet-lite0+filters",
    "pixel_head": "logistic",
}
_INT_KEYS = ("patience", "heatmap_every", "max_epochs", "max_points")
_FLOAT_KEYS = ("min_delta", "confidence_threshold", "min_distance", "gradient_weight")
PIXEL_HEAD_NAMES = ("logistic", "mlp")


def segment_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The project's segment settings with defaults filled in; INVALID names a bad one."""
    out = dict(SEGMENT_DEFAULTS)
    for key in SEGMENT_DEFAULTS:
        if settings.get(key) is not None:
            out[key] = settings[key]
    try:
        for key in _INT_KEYS:
            out[key] = int(out[key])
        for key in _FLOAT_KEYS:
            out[key] = float(out[key])
    except (TypeError, ValueError) as exc:
        raise LoupeError(ErrorCode.INVALID, f"segment setting is not a number: {exc}") from exc
    if out["patience"] < 1 or out["heatmap_every"] < 1 or out["max_epochs"] < 1:
        raise LoupeError(ErrorCode.INVALID, "patience, heatmap_every and max_epochs must be >= 1")
    if not 0 <= out["gradient_weight"] <= 1 or not 0 < out["confidence_threshold"] <= 1:
        raise LoupeError(
            ErrorCode.INVALID, "gradient_weight must be in [0, 1], confidence_threshold in (0, 1]"
        )
    if out["pixel_head"] not in PIXEL_HEAD_NAMES:
        raise LoupeError(
            ErrorCode.INVALID,
            f"pixel_head must be one of {list(PIXEL_HEAD_NAMES)}, got {out['pixel_head']!r}",
        )
    return out


def require_segment(task: str, project_id: int) -> None:
    """CONFLICT (409) unless the project is a 2-D segment project (its routes and job):
    the project exists and the caller may read it, it just has no segmentation."""
    if task != "segment":
        raise LoupeError(
            ErrorCode.CONFLICT, f"project {project_id} is a {task} project, not a 2-D segment one"
        )


class SegmentSchema(MaskSchema):
    task: Literal["segment"] = "segment"


class SegmentKind(MaskTaskKind):
    name = "segment"
    title = "Segment 2-D"
    description = "Masks of 2-D images, drawn from clicks and scribbles."
    schema_model = SegmentSchema
    heads = PIXEL_HEAD_NAMES

    def info(self) -> dict[str, Any]:
        return {**super().info(), "settings": dict(SEGMENT_DEFAULTS)}
