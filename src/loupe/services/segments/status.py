"""The segment panel's status: the latest training job, the newest version, the settings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Job, ModelVersion, Project
from loupe.services.segments.train import SEGMENT_TRAIN
from loupe.tasks.segment import require_segment, segment_settings


def latest_job(db: Session, project: Project) -> Job | None:
    require_segment(project.task, project.id)
    return db.scalar(
        select(Job)
        .where(Job.project_id == project.id, Job.kind == SEGMENT_TRAIN)
        .order_by(Job.id.desc())
        .limit(1)
    )


def last_version(db: Session, project: Project) -> dict[str, Any] | None:
    """The active version, else the newest one (a failed run shows its error)."""
    version = db.scalar(
        select(ModelVersion)
        .where(ModelVersion.project_id == project.id)
        .order_by(ModelVersion.active.desc(), ModelVersion.id.desc())
        .limit(1)
    )
    if version is None:
        return None
    return {
        "id": version.id,
        "number": version.number,
        "status": version.status,
        "active": version.active,
        "metrics": version.metrics,
        "params": version.params,
        "finished_at": version.finished_at.isoformat() if version.finished_at else None,
    }


def settings_of(project: Project) -> dict[str, Any]:
    return segment_settings(project.settings)
