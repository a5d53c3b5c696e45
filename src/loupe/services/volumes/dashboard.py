"""The admin dashboard's numbers: feedback per model version and per user, Dice of
model vs. correction over time, the retrain threshold, the versions and the training job."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import AnnotationEvent, Job, ModelVersion, Project, User
from loupe.jobs.core import ACTIVE
from loupe.services.volumes.cases import count_corrected, retrain_min_corrections
from loupe.services.volumes.feedback import MASK_SOURCE
from loupe.services.volumes.training import TRAIN_KIND


def dashboard(db: Session, project: Project) -> dict[str, Any]:
    """See the module doc; ``job`` is the newest ``volume_train`` job (or None)."""
    events = db.execute(
        select(AnnotationEvent, User.email)
        .outerjoin(User, User.id == AnnotationEvent.user_id)
        .where(AnnotationEvent.project_id == project.id, AnnotationEvent.source == MASK_SOURCE)
        .order_by(AnnotationEvent.at, AnnotationEvent.id)
    ).all()
    versions = list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.project_id == project.id)
            .order_by(ModelVersion.number)
        )
    )
    numbers = {v.id: v.number for v in versions}
    per_version: dict[int | None, int] = {}
    per_user: dict[str, int] = {}
    dice_over_time = []
    for event, email in events:
        data = (event.after or {}).get("data") or {}
        version_id = data.get("model_version_id")
        per_version[version_id] = per_version.get(version_id, 0) + 1
        user = email or "unknown"
        per_user[user] = per_user.get(user, 0) + 1
        if data.get("dice_vs_model") is not None:
            dice_over_time.append(
                {
                    "at": event.at,
                    "dice": float(data["dice_vs_model"]),
                    "model_version_id": version_id,
                }
            )
    corrected = count_corrected(db, project.id)
    needed = retrain_min_corrections(project)
    job = db.scalars(
        select(Job)
        .where(Job.project_id == project.id, Job.kind == TRAIN_KIND)
        .order_by(Job.id.desc())
        .limit(1)
    ).first()
    running = job is not None and job.status in ACTIVE
    return {
        "feedback_per_version": [
            {"model_version_id": vid, "number": numbers.get(vid) if vid else None, "count": n}
            for vid, n in per_version.items()
        ],
        "feedback_per_user": [{"user": u, "count": n} for u, n in sorted(per_user.items())],
        "dice_over_time": dice_over_time,
        "corrected_volumes": corrected,
        "retrain_min_corrections": needed,
        "can_retrain": corrected >= max(needed, 2) and not running,
        "versions": [
            {
                "id": v.id,
                "number": v.number,
                "status": v.status,
                "active": v.active,
                "kind": v.kind,
                "metrics": {"val_dice": (v.metrics or {}).get("val_dice", {})},
                "created_at": v.created_at,
            }
            for v in versions
        ],
        "job": job,
    }
