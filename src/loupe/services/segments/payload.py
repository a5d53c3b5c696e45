"""A 2-D segmentation annotation: points, scribbles and a mask file, one payload per item.

The payload lives in ``Annotation.data`` and every change goes through
:func:`loupe.services.labels.core.write` (optimistic version, audit event, undo):

``{"axes": "YX", "width", "height", "points": [{"x", "y", "value", "source"}],
"scribbles": [{"value", "width", "path": [[x, y], ...]}], "mask": "masks/<item>/<sha>.png"}``
plus ``"mask_region": {"x", "y", "width", "height"}`` when the change pasted a region
of the mask (:func:`save_mask_region`): the audit event's ``after`` records the box.

``kind`` is ``mask`` when a mask file is referenced, ``points`` otherwise. Point and
path coordinates are pixels, x = column, y = row. Mask files are content-addressed and
never overwritten, so an older version in the audit history still names its own file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.labels.core import HUMAN, MODEL_ACCEPTED, NONE_KIND, get_item, write
from loupe.services.segments import files
from loupe.settings import Settings
from loupe.tasks.base import LabelValue
from loupe.tasks.segment import require_segment

SOURCE = "segment"
HUMAN_POINT, EXTRACTED_POINT = "human", "extracted"
MAX_POINTS = 20_000
MAX_SCRIBBLE_VERTICES = 20_000


@dataclass
class SegmentAnnotation:
    """The API view of an item's annotation."""

    item_id: int
    version: int
    width: int
    height: int
    points: list[dict[str, Any]] = field(default_factory=list)
    scribbles: list[dict[str, Any]] = field(default_factory=list)
    has_mask: bool = False
    origin: str | None = None
    mask: str | None = None
    mask_region: dict[str, int] | None = None


def class_values(project: Project) -> dict[int, str]:
    """Label value -> class name of the project, background (0) included."""
    out = {0: "background"}
    out.update({int(c["value"]): str(c["name"]) for c in project.schema.get("classes", [])})
    return out


def _current(db: Session, item_id: int) -> Annotation | None:
    return db.scalar(select(Annotation).where(Annotation.item_id == item_id))


def _item(db: Session, project: Project, item_id: int) -> tuple[Item, int, int]:
    require_segment(project.task, project.id)
    item = get_item(db, project, item_id)
    rows, cols = files.image_shape(item)
    return item, rows, cols


def view(db: Session, project: Project, item_id: int) -> SegmentAnnotation:
    """The item's annotation (version 0 and empty lists when it has none)."""
    _item_row, rows, cols = _item(db, project, item_id)
    return _view(item_id, rows, cols, _current(db, item_id))


def _view(item_id: int, rows: int, cols: int, ann: Annotation | None) -> SegmentAnnotation:
    if ann is None:
        return SegmentAnnotation(item_id, 0, cols, rows)
    data = ann.data or {}
    live = ann.kind != NONE_KIND
    return SegmentAnnotation(
        item_id=item_id,
        version=ann.version,
        width=cols,
        height=rows,
        points=list(data.get("points", [])) if live else [],
        scribbles=list(data.get("scribbles", [])) if live else [],
        has_mask=bool(live and data.get("mask")),
        origin=ann.origin if live else None,
        mask=data.get("mask") if live else None,
        mask_region=data.get("mask_region") if live else None,
    )


def _check_value(value: Any, known: dict[int, str], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in known:
        raise LoupeError(
            ErrorCode.INVALID, f"{what}: class value {value!r} is not one of {sorted(known)}"
        )
    return int(value)


def _check_xy(x: Any, y: Any, rows: int, cols: int, what: str) -> tuple[float, float]:
    try:
        fx, fy = float(x), float(y)
    except (TypeError, ValueError) as exc:
        raise LoupeError(ErrorCode.INVALID, f"{what}: x and y must be numbers") from exc
    if not (0 <= fx < cols and 0 <= fy < rows):
        raise LoupeError(
            ErrorCode.INVALID,
            f"{what} ({fx:g}, {fy:g}) is outside the {cols} x {rows} image",
        )
    return fx, fy


def clean_points(
    points: Sequence[dict[str, Any]], known: dict[int, str], rows: int, cols: int
) -> list[dict[str, Any]]:
    """Validated points (422 naming the first bad one)."""
    if len(points) > MAX_POINTS:
        raise LoupeError(ErrorCode.INVALID, f"at most {MAX_POINTS} points per item")
    out = []
    for i, p in enumerate(points):
        x, y = _check_xy(p.get("x"), p.get("y"), rows, cols, f"point {i}")
        source = p.get("source") or HUMAN_POINT
        if source not in (HUMAN_POINT, EXTRACTED_POINT):
            raise LoupeError(ErrorCode.INVALID, f"point {i}: source must be human or extracted")
        value = _check_value(p.get("value"), known, f"point {i}")
        out.append({"x": x, "y": y, "value": value, "source": source})
    return out


def clean_scribbles(
    scribbles: Sequence[dict[str, Any]], known: dict[int, str], rows: int, cols: int
) -> list[dict[str, Any]]:
    """Validated scribbles (422 naming the first bad one)."""
    out, vertices = [], 0
    for i, s in enumerate(scribbles):
        value = _check_value(s.get("value"), known, f"scribble {i}")
        width = float(s.get("width") or 6)
        if not 0 < width <= 512:
            raise LoupeError(ErrorCode.INVALID, f"scribble {i}: width must be in (0, 512]")
        path = s.get("path") or []
        if not path:
            raise LoupeError(ErrorCode.INVALID, f"scribble {i} has an empty path")
        vertices += len(path)
        if vertices > MAX_SCRIBBLE_VERTICES:
            raise LoupeError(ErrorCode.INVALID, f"at most {MAX_SCRIBBLE_VERTICES} vertices")
        clean = []
        for j, xy in enumerate(path):
            if not isinstance(xy, list | tuple) or len(xy) != 2:
                raise LoupeError(ErrorCode.INVALID, f"scribble {i} vertex {j} must be [x, y]")
            clean.append(list(_check_xy(xy[0], xy[1], rows, cols, f"scribble {i} vertex {j}")))
        out.append({"value": value, "width": width, "path": clean})
    return out


def _write(
    db: Session,
    project: Project,
    item_id: int,
    rows: int,
    cols: int,
    *,
    points: list[dict[str, Any]],
    scribbles: list[dict[str, Any]],
    mask: str | None,
    user_id: int | None,
    expected_version: int | None,
    origin: str,
    model_version_id: int | None = None,
    mask_region: dict[str, int] | None = None,
) -> SegmentAnnotation:
    data: dict[str, Any] = {
        "axes": "YX",
        "width": cols,
        "height": rows,
        "points": points,
        "scribbles": scribbles,
        "mask": mask,
    }
    if mask_region is not None:
        data["mask_region"] = mask_region
    value = LabelValue(kind="mask" if mask else "points", data=data)
    ann = write(  # validates the value against the project's kind
        db,
        project,
        item_id,
        value,
        user_id=user_id,
        expected_version=expected_version,
        source=SOURCE,
        origin=origin,
        model_version_id=model_version_id,
    )
    return _view(item_id, rows, cols, ann)


def save(
    db: Session,
    project: Project,
    item_id: int,
    *,
    version: int,
    points: Sequence[dict[str, Any]],
    scribbles: Sequence[dict[str, Any]],
    user_id: int | None,
) -> SegmentAnnotation:
    """Save the person's points and scribbles (the mask is kept); 409 on a stale version."""
    _item_row, rows, cols = _item(db, project, item_id)
    known = class_values(project)
    clean_p = clean_points(points, known, rows, cols)
    clean_s = clean_scribbles(scribbles, known, rows, cols)
    current = _view(item_id, rows, cols, _current(db, item_id))
    return _write(
        db,
        project,
        item_id,
        rows,
        cols,
        points=clean_p,
        scribbles=clean_s,
        mask=current.mask,
        user_id=user_id,
        expected_version=version,
        origin=HUMAN,
    )


def save_mask(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    *,
    version: int | None,
    mask: np.ndarray | bytes,
    user_id: int | None,
    origin: str = HUMAN,
    model_version_id: int | None = None,
) -> SegmentAnnotation:
    """Store a mask (PNG/TIFF bytes or a uint8 array) as the item's mask file."""
    _item_row, rows, cols = _item(db, project, item_id)
    array = files.decode_mask(mask, (rows, cols)) if isinstance(mask, bytes) else mask
    _check_label_values(array, project, "mask")
    return _store_mask(
        db,
        settings,
        project,
        item_id,
        rows,
        cols,
        array,
        version=version,
        user_id=user_id,
        origin=origin,
        model_version_id=model_version_id,
    )


def save_mask_region(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    *,
    x: int,
    y: int,
    version: int | None,
    region: bytes,
    user_id: int | None,
) -> SegmentAnnotation:
    """Paste a ``h x w`` PNG/TIFF of label values at column ``x``, row ``y`` of the item's
    mask (zeros when it has none) and store the result like :func:`save_mask`.

    A brush stroke on a big slide changes a few thousand pixels; the browser sends only
    their bounding box instead of the whole mask. The payload's ``mask_region``
    (``{"x", "y", "width", "height"}``) records the pasted box in this change's audit
    event; 422 when the region leaves the image or has unknown label values, 409 on a
    stale version.
    """
    _item_row, rows, cols = _item(db, project, item_id)
    patch = files.decode_mask(region, None)
    h, w = patch.shape
    if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= cols and y + h <= rows):
        raise LoupeError(
            ErrorCode.INVALID,
            f"mask region {w} x {h} at ({x}, {y}) is outside the {cols} x {rows} image",
        )
    _check_label_values(patch, project, "mask region")
    current = _view(item_id, rows, cols, _current(db, item_id))
    if current.mask:
        array = np.array(files.read_mask(settings, project.id, current.mask), dtype=np.uint8)
        if array.shape != (rows, cols):
            raise LoupeError(
                ErrorCode.CONFLICT,
                f"the stored mask of item {item_id} is {array.shape}, not the image's "
                f"{(rows, cols)}; save the whole mask instead",
            )
    else:
        array = np.zeros((rows, cols), np.uint8)
    array[y : y + h, x : x + w] = patch
    return _store_mask(
        db,
        settings,
        project,
        item_id,
        rows,
        cols,
        array,
        version=version,
        user_id=user_id,
        origin=HUMAN,
        region={"x": x, "y": y, "width": w, "height": h},
    )


def _check_label_values(array: np.ndarray, project: Project, what: str) -> None:
    known = class_values(project)
    unknown = sorted(set(files.label_values(array)) - set(known))
    if unknown:
        raise LoupeError(
            ErrorCode.INVALID, f"{what} has label values {unknown[:10]} not in {sorted(known)}"
        )


def _store_mask(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    rows: int,
    cols: int,
    array: np.ndarray,
    *,
    version: int | None,
    user_id: int | None,
    origin: str,
    model_version_id: int | None = None,
    region: dict[str, int] | None = None,
) -> SegmentAnnotation:
    """Write a checked, image-sized mask file and make it the item's mask (one version,
    one audit event); the points and scribbles are kept."""
    rel = files.store_mask(settings, project.id, item_id, array)
    current = _view(item_id, rows, cols, _current(db, item_id))
    return _write(
        db,
        project,
        item_id,
        rows,
        cols,
        points=current.points,
        scribbles=current.scribbles,
        mask=rel,
        user_id=user_id,
        expected_version=version,
        origin=origin,
        model_version_id=model_version_id,
        # An unchanged mask keeps the payload as it is: no version, no event.
        mask_region=region if rel != current.mask else current.mask_region,
    )


def preview(db: Session, project: Project, item_id: int, *, max_size: int) -> bytes:
    """JPEG of the item at most ``max_size`` px on its long side (see files.preview_jpeg)."""
    item, _rows, _cols = _item(db, project, item_id)
    return files.preview_jpeg(item, max_size)


def mask_png(db: Session, settings: Settings, project: Project, item_id: int) -> bytes:
    """The stored mask as a PNG of label values; NOT_FOUND when the item has none."""
    current = view(db, project, item_id)
    if not current.mask:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} has no mask", item_id=item_id)
    path = files.mask_path(settings, project.id, current.mask)
    if not path.is_file():
        raise LoupeError(ErrorCode.NOT_FOUND, f"the mask file of item {item_id} is missing")
    if path.suffix == ".tif":  # a big image's mask: stored as TIFF, served as PNG
        return files.encode_png(files.read_mask(settings, project.id, current.mask))
    return path.read_bytes()


def replace_extracted(
    db: Session,
    project: Project,
    item_id: int,
    extracted: list[dict[str, Any]],
    *,
    user_id: int | None,
    model_version_id: int,
) -> SegmentAnnotation:
    """Replace the extracted points with ``extracted``; human points stay as they are."""
    _item_row, rows, cols = _item(db, project, item_id)
    current = _view(item_id, rows, cols, _current(db, item_id))
    human = [p for p in current.points if p.get("source") != EXTRACTED_POINT]
    return _write(
        db,
        project,
        item_id,
        rows,
        cols,
        points=human + extracted,
        scribbles=current.scribbles,
        mask=current.mask,
        user_id=user_id,
        expected_version=None,
        origin=current.origin or HUMAN,
        model_version_id=model_version_id if current.origin == MODEL_ACCEPTED else None,
    )
