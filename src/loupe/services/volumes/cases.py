"""Corrected volumes (the training set), model-version bookkeeping and predictions on disk."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Job, ModelVersion, Prediction, Project
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.media.masks3d import VolumeGrid
from loupe.services.labels.core import PERSON_ORIGINS
from loupe.services.volumes.store import VolumeSource, item_dir, nifti_bytes, volume_source
from loupe.settings import Settings

DEFAULT_RETRAIN_MIN_CORRECTIONS = 3
# ``volume_predict`` / ``volume_train`` run on this queue: set LOUPE_VOLUME_QUEUE=gpu where
# a ``loupe worker --queue gpu`` runs on a GPU machine; the default keeps them on the CPU.
VOLUME_QUEUE = os.environ.get("LOUPE_VOLUME_QUEUE", "cpu")


@dataclass(frozen=True)
class CorrectedCase:
    source: VolumeSource
    mask: Path


def retrain_min_corrections(project: Project) -> int:
    value = (project.settings or {}).get("retrain_min_corrections", DEFAULT_RETRAIN_MIN_CORRECTIONS)
    try:
        return max(1, int(value))
    except (TypeError, ValueError):
        return DEFAULT_RETRAIN_MIN_CORRECTIONS


def corrected_cases(db: Session, project_id: int) -> list[CorrectedCase]:
    """Volume items whose current label is a person's mask whose file exists, by item id."""
    rows = db.execute(
        select(Item, Annotation)
        .join(Annotation, Annotation.item_id == Item.id)
        .where(
            Item.project_id == project_id,
            Item.kind == "volume",
            Annotation.kind == "mask",
            Annotation.origin.in_(PERSON_ORIGINS),
        )
        .order_by(Item.id)
    ).all()
    cases = []
    for item, ann in rows:
        path = Path(str((ann.data or {}).get("mask", "")))
        if path.is_file():
            try:
                cases.append(CorrectedCase(volume_source(item), path))
            except LoupeError:
                continue  # files gone: not trainable
    return cases


def count_corrected(db: Session, project_id: int) -> int:
    return len(corrected_cases(db, project_id))


def get_project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    return project


def new_version(
    settings: Settings,
    project_id: int,
    *,
    kind: str,
    job_id: int | None,
    params: dict[str, Any],
    status: str = "training",
    artifact: str | None = None,
) -> int:
    with session_scope(settings.db_url) as db:
        number = (
            db.scalar(
                select(func.max(ModelVersion.number)).where(ModelVersion.project_id == project_id)
            )
            or 0
        ) + 1
        version = ModelVersion(
            project_id=project_id,
            number=number,
            status=status,
            kind=kind,
            members=[kind],
            params=params,
            job_id=job_id,
            artifact_path=artifact,
        )
        if status == "ready":
            version.finished_at = utcnow()
        db.add(version)
        db.flush()
        return version.id


def fail_version(settings: Settings, version_id: int, reason: str) -> None:
    with session_scope(settings.db_url) as db:
        version = db.get(ModelVersion, version_id)
        if version is not None:
            version.status = "failed"
            version.finished_at = utcnow()
            version.params = {**(version.params or {}), "error": reason[:2000]}


def store_prediction(
    settings: Settings,
    source: VolumeSource,
    grid: VolumeGrid,
    labels: np.ndarray,
    *,
    version_id: int,
    segmenter: str,
) -> Path:
    """Write the model mask file and its Prediction row (never a human label)."""
    path = item_dir(settings, source.project_id, source.item_id) / f"model-v{version_id}.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(nifti_bytes(labels.astype(np.uint8), grid, descrip="loupe model mask"))
    os.replace(tmp, path)
    values, counts = np.unique(labels, return_counts=True)
    output = {
        "mask": str(path),
        "segmenter": segmenter,
        "voxels": {str(int(v)): int(n) for v, n in zip(values, counts, strict=True)},
    }
    with session_scope(settings.db_url) as db:
        db.add(
            Prediction(
                project_id=source.project_id,
                item_id=source.item_id,
                model_version_id=version_id,
                members={segmenter: {"mask": str(path)}},
                output=output,
            )
        )
    return path


def set_job_result(settings: Settings, job_id: int | None, result: dict[str, Any]) -> None:
    """Live numbers (loss, Dice) in ``job.result`` while the job runs (the SSE stream shows it)."""
    if job_id is None:
        return
    with session_scope(settings.db_url) as db:
        job = db.get(Job, job_id)
        if job is not None:
            job.result = dict(result)
