"""Training as a job: features for every ensemble member, heads fitted on the
human labels, a new ModelVersion, predictions for every item, then activation.

Only a finished version becomes active; a failed or killed training leaves the
previous model in force. Predictions are written to ``predictions``, never to
annotations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, AnnotationEvent, Job, ModelVersion, Project
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind, register_periodic
from loupe.services.labels.core import PERSON_ORIGINS
from loupe.services.training.versions import make_active
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.base import TrainingData
from loupe.tasks.embedding import ensemble_members

log = logging.getLogger(__name__)
TRAIN_KIND = "train"
Progress = Callable[[float, str], None]


def _project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    return project


def load_training_data(db: Session, project_id: int) -> TrainingData:
    """The project's items and human labels, as its task kind reads them."""
    project = _project(db, project_id)
    return kind_of(project.task).load_training_data(db, project)


def check_trainable(data: TrainingData) -> None:
    """Raise a clear 422 when the labels cannot train a model yet."""
    kind_of(data.task).check_trainable(data)


def request_training(
    settings: Settings, project_id: int, *, user_id: int | None, mode: str = "frozen"
) -> Job:
    """Submit a training job (409 when one is already queued or running)."""
    if mode not in ("frozen", "finetune"):
        raise LoupeError(ErrorCode.INVALID, f"mode {mode!r}: use frozen or finetune")
    with session_scope(settings.db_url, write=False) as db:
        check_trainable(load_training_data(db, project_id))
    return submit(
        settings,
        kind=TRAIN_KIND,
        project_id=project_id,
        params={"project_id": project_id, "mode": mode},
        user_id=user_id,
        exclusive=True,
    )


@register_job_kind(TRAIN_KIND, exclusive=True)
def run_train_job(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    def progress(fraction: float, message: str) -> None:
        ctx.check_cancelled()
        ctx.progress(fraction, message)

    return train_project(
        settings,
        int(params["project_id"]),
        progress=progress,
        job_id=ctx.job_id,
        mode=str(params.get("mode", "frozen")),
    )


def _new_version(settings: Settings, data: TrainingData, *, job_id: int | None, mode: str) -> int:
    members = ensemble_members(data.settings)
    with session_scope(settings.db_url) as db:
        number = (
            db.scalar(
                select(func.max(ModelVersion.number)).where(
                    ModelVersion.project_id == data.project_id
                )
            )
            or 0
        ) + 1
        version = ModelVersion(
            project_id=data.project_id,
            number=number,
            status="training",
            kind=mode,
            members=members,
            job_id=job_id,
        )
        db.add(version)
        db.flush()
        return version.id


def _fail_version(settings: Settings, version_id: int, reason: str) -> None:
    with session_scope(settings.db_url) as db:
        db.execute(
            update(ModelVersion)
            .where(ModelVersion.id == version_id)
            .values(status="failed", finished_at=utcnow(), params={"error": reason})
        )


def train_project(
    settings: Settings,
    project_id: int,
    *,
    progress: Progress | None = None,
    job_id: int | None = None,
    mode: str = "frozen",
) -> dict[str, Any]:
    """Train, predict every item and activate the new version; return a summary."""
    report = progress or (lambda _f, _m: None)
    with session_scope(settings.db_url, write=False) as db:
        data = load_training_data(db, project_id)
    kind = kind_of(data.task)
    kind.check_trainable(data)
    version_id = _new_version(settings, data, job_id=job_id, mode=mode)
    try:
        outcome = kind.fit_and_predict(settings, data, version_id, mode=mode, report=report)
        report(0.9, "writing predictions")
        kind.write_predictions(settings, data.project_id, version_id, outcome)
        artifact = _save_artifact(settings, data.project_id, version_id, outcome.state)
        _activate(settings, data.project_id, version_id, outcome, artifact)
    except BaseException as exc:
        _fail_version(settings, version_id, f"{type(exc).__name__}: {exc}")
        raise
    report(1.0, "done")
    return {
        "model_version_id": version_id,
        "labelled": len(outcome.trained_on_ids),
        "predicted": len(outcome.predictions),
        "unreadable": len(outcome.errors),
        "metrics": outcome.metrics.get("ensemble", {}),
    }


def _save_artifact(
    settings: Settings, project_id: int, version_id: int, state: dict[str, Any]
) -> Path:
    folder = settings.models_dir / str(project_id) / str(version_id)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    np.savez(folder / "heads.npz", allow_pickle=False, **arrays)
    (folder / "heads.json").write_text(json.dumps(meta, indent=1, default=float))
    return folder


def load_artifact(folder: Path) -> dict[str, Any]:
    """A version's artifact as :func:`_save_artifact` wrote it: ``heads.npz`` arrays and
    ``heads.json`` values, by key."""
    state: dict[str, Any] = json.loads((folder / "heads.json").read_text())
    with np.load(folder / "heads.npz", allow_pickle=False) as arrays:
        state.update({key: arrays[key] for key in arrays.files})
    return state


def _activate(
    settings: Settings,
    project_id: int,
    version_id: int,
    outcome: Any,
    artifact: Path,
) -> None:
    with session_scope(settings.db_url) as db:
        make_active(
            db,
            project_id,
            version_id,
            status="ready",
            finished_at=utcnow(),
            metrics=outcome.metrics,
            calibration=outcome.calibration,
            params=outcome.params,
            trained_on={
                "items": len(outcome.trained_on_ids),
                "label_counts": outcome.label_counts,
                "item_ids_sha256": outcome.trained_on_digest,
            },
            artifact_path=str(artifact),
        )


def activate_version(db: Session, project: Project, version_id: int) -> ModelVersion:
    """Make an older (or newer) finished version the active one (rollback)."""
    version = db.get(ModelVersion, version_id)
    if version is None or version.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"model version {version_id} not found")
    if version.status != "ready":
        raise LoupeError(
            ErrorCode.CONFLICT, f"version {version.number} is {version.status}, not ready"
        )
    make_active(db, project.id, version.id)
    return version


def labels_since_last_version(db: Session, project_id: int) -> int:
    """Distinct items a person labelled since the newest version started training.

    Counts items, not events: relabelling one item ten times is one. An item
    counts only while it has a label (not cleared, not skipped).
    """
    since = db.scalar(
        select(func.max(ModelVersion.created_at)).where(
            ModelVersion.project_id == project_id, ModelVersion.status != "failed"
        )
    )
    stmt = (
        select(func.count(func.distinct(AnnotationEvent.item_id)))
        .join(Annotation, Annotation.item_id == AnnotationEvent.item_id)
        .where(
            AnnotationEvent.project_id == project_id,
            AnnotationEvent.source.not_in(("model",)),
            AnnotationEvent.action == "set",
            Annotation.kind.not_in(("none", "skip")),
            Annotation.origin.in_(PERSON_ORIGINS),
        )
    )
    if since is not None:
        stmt = stmt.where(AnnotationEvent.at > since)
    return db.scalar(stmt) or 0


AUTOTRAIN_EVERY_S = 2.0


@register_periodic("autotrain", every_s=AUTOTRAIN_EVERY_S)
def autotrain_sweep(settings: Settings) -> list[int]:
    """Start the trainings that are due: run by every job worker every few seconds.

    The label path itself never checks (it stays lean); a project whose
    ``retrain_every`` new labels arrived gets a training within a few seconds.
    Returns the ids of the jobs it started.
    """
    with session_scope(settings.db_url, write=False) as db:
        candidates = [
            pid
            for pid, project_settings in db.execute(select(Project.id, Project.settings))
            if int((project_settings or {}).get("retrain_every") or 0) > 0
        ]
    started = []
    for project_id in candidates:
        job_id = maybe_autotrain(settings, project_id, user_id=None)
        if job_id is not None:
            started.append(job_id)
    return started


def maybe_autotrain(settings: Settings, project_id: int, *, user_id: int | None) -> int | None:
    """Start a training when ``retrain_every`` new human labels arrived; return the job id.

    Call it after the labels are committed. Quiet when training is not
    possible yet or one is already queued or running.
    """
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None or not kind_of(project.task).trainable:
            return None
        every = int(project.settings.get("retrain_every") or 0)
        if every <= 0 or labels_since_last_version(db, project_id) < every:
            return None
        busy = db.scalar(
            select(Job.id).where(
                Job.project_id == project_id,
                Job.kind == TRAIN_KIND,
                Job.status.in_(("queued", "running")),
            )
        )
        if busy is not None:
            return None
    try:
        return request_training(settings, project_id, user_id=user_id).id
    except LoupeError as exc:
        if exc.code in (ErrorCode.INVALID, ErrorCode.BUSY):
            return None
        raise
