"""Masks of volume items: the human mask (a versioned Annotation) and model masks.

A submitted correction becomes a new version of the item's Annotation (kind
``mask``), its file stored losslessly under ``LOUPE_HOME``; the audit event
(``AnnotationEvent``, who and when) carries in its ``after`` snapshot the model
version that was corrected, how many voxels changed and the Dice between the
model's mask and the correction.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, ModelVersion, Prediction, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.fsutil import atomic_write
from loupe.services.labels.core import HUMAN, get_item, set_label
from loupe.services.volumes.store import (
    VolumeSource,
    class_values,
    item_dir,
    load_mask,
    nifti_bytes,
    parse_mask_upload,
    read_grid_of,
    volume_source,
)
from loupe.settings import Settings
from loupe.tasks.types import LabelValue

MASK_SOURCE = "volume_editor"


@dataclass(frozen=True)
class SavedMask:
    item_id: int
    version: int
    voxels_changed: int
    dice_vs_model: float | None
    model_version_id: int | None


def dice_score(a: np.ndarray, b: np.ndarray, values: list[int] | None = None) -> float:
    """Mean Dice over the label values present in either mask (1.0 when both are empty)."""
    labels = values if values is not None else sorted(set(np.unique(a)) | set(np.unique(b)))
    scores = []
    for value in labels:
        if value == 0:
            continue
        x, y = a == value, b == value
        total = int(x.sum()) + int(y.sum())
        if total:
            scores.append(2.0 * int(np.logical_and(x, y).sum()) / total)
    return float(np.mean(scores)) if scores else 1.0


def dice_per_class(a: np.ndarray, b: np.ndarray, classes: dict[int, str]) -> dict[str, float]:
    """Dice per class name (1.0 for a class absent from both)."""
    return {name: dice_score(a, b, [value]) for value, name in classes.items()}


def volume_item(db: Session, project: Project, item_id: int) -> VolumeSource:
    """The item as a :class:`VolumeSource` (NOT_FOUND outside the project, INVALID if 2-D)."""
    return volume_source(get_item(db, project, item_id))


def human_mask_path(db: Session, project: Project, item_id: int) -> Path | None:
    """The file of the item's current human mask, or None."""
    get_item(db, project, item_id)
    ann = db.scalars(select(Annotation).where(Annotation.item_id == item_id)).first()
    if ann is None or ann.kind != "mask" or not ann.data or "mask" not in ann.data:
        return None
    path = Path(str(ann.data["mask"]))
    return path if path.is_file() else None


def active_version(db: Session, project_id: int) -> ModelVersion | None:
    return db.scalars(
        select(ModelVersion).where(
            ModelVersion.project_id == project_id, ModelVersion.active.is_(True)
        )
    ).first()


def model_mask(
    db: Session, project: Project, item_id: int, model_version_id: int | None = None
) -> tuple[Path, int] | None:
    """(file, model version id) of the newest prediction of ``model_version_id`` (default:
    the active version) for the item, or None."""
    get_item(db, project, item_id)
    if model_version_id is None:
        active = active_version(db, project.id)
        if active is None:
            return None
        model_version_id = active.id
    prediction = db.scalars(
        select(Prediction)
        .where(Prediction.item_id == item_id, Prediction.model_version_id == model_version_id)
        .order_by(Prediction.id.desc())
        .limit(1)
    ).first()
    if prediction is None or "mask" not in (prediction.output or {}):
        return None
    path = Path(str(prediction.output["mask"]))
    return (path, model_version_id) if path.is_file() else None


def mask_file(db: Session, project: Project, item_id: int, source: str) -> tuple[Path, int | None]:
    """The mask served as ``mask.nii.gz``: ``human`` or ``model`` (NOT_FOUND when none)."""
    if source == "human":
        path = human_mask_path(db, project, item_id)
        if path is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} has no human mask yet")
        return path, None
    if source == "model":
        found = model_mask(db, project, item_id)
        if found is None:
            raise LoupeError(
                ErrorCode.NOT_FOUND,
                f"item {item_id} has no prediction of the active model version",
            )
        return found
    raise LoupeError(ErrorCode.INVALID, f"source {source!r}: use human or model")


def save_mask(
    db: Session,
    settings: Settings,
    project: Project,
    item_id: int,
    body: bytes,
    *,
    user_id: int,
    expected_version: int | None,
    model_version_id: int | None,
) -> SavedMask:
    """Store a corrected mask as the item's new Annotation version (see module doc).

    INVALID when the mask does not lie on the image grid or holds a value that is not
    a class of the project; STALE_VERSION when ``expected_version`` is not current;
    NOT_FOUND for an unknown ``model_version_id``.
    """
    item = get_item(db, project, item_id)
    source = volume_source(item)
    grid = read_grid_of(source)
    labels = parse_mask_upload(body, grid)
    classes = class_values(project)
    unknown = sorted(set(np.unique(labels).tolist()) - {0, *classes})
    if unknown:
        raise LoupeError(
            ErrorCode.INVALID,
            f"the mask holds label value(s) {unknown} that are not classes of the project "
            f"(known: {sorted(classes)})",
        )
    if model_version_id is not None:
        version = db.get(ModelVersion, model_version_id)
        if version is None or version.project_id != project.id:
            raise LoupeError(ErrorCode.NOT_FOUND, f"model version {model_version_id} not found")
    dice: float | None = None
    per_class: dict[str, float] | None = None
    base: np.ndarray | None = None
    found = (
        model_mask(db, project, item_id, model_version_id) if model_version_id is not None else None
    )
    if found is not None:
        base = load_mask(found[0])
        if base.shape == labels.shape:
            dice = dice_score(base, labels)
            per_class = dice_per_class(base, labels, classes)
        else:
            base = None
    if base is None:
        previous = human_mask_path(db, project, item_id)
        base = load_mask(previous) if previous is not None else np.zeros_like(labels)
    changed = int(np.count_nonzero(base != labels)) if base.shape == labels.shape else labels.size
    payload = nifti_bytes(labels.astype(np.uint8), grid, descrip="loupe label mask")
    digest = hashlib.sha256(payload).hexdigest()
    path = atomic_write(
        item_dir(settings, project.id, item_id) / f"human-{digest[:16]}.nii.gz", payload
    )
    counts = {
        str(int(v)): int(n) for v, n in zip(*np.unique(labels, return_counts=True), strict=True)
    }
    data: dict[str, Any] = {
        "mask": str(path),
        "sha256": digest,
        "axes": "zyx",
        "shape": list(labels.shape),
        "voxels": counts,
        "model_version_id": model_version_id,
        "voxels_changed": changed,
        "dice_vs_model": dice,
        "dice_per_class": per_class,
    }
    ann = set_label(
        db,
        project,
        item_id,
        LabelValue(kind="mask", data=data),
        user_id=user_id,
        expected_version=expected_version,
        source=MASK_SOURCE,
        origin=HUMAN,
    )
    return SavedMask(item_id, ann.version, changed, dice, model_version_id)
