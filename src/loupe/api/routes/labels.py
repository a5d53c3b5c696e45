"""Labels: set / clear one, batch apply, audit history."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import select

from loupe.api.deps import AnnotatorProject, CurrentUser, SessionDep, SettingsDep, ViewerProject
from loupe.api.routes.items import item_public
from loupe.api.schemas.items import (
    BatchConflict,
    EventPublic,
    EventsPublic,
    ItemPublic,
    LabelBatch,
    LabelBatchResult,
    LabelSet,
)
from loupe.db.models import User
from loupe.services.items import query as item_query
from loupe.services.labels import core as labels
from loupe.services.training import train
from loupe.settings import Settings

router = APIRouter(prefix="/projects/{project_id}", tags=["labels"])


def _after_human_labels(db: SessionDep, settings: Settings, project_id: int, user_id: int) -> None:
    """Commit, then start a retraining when enough new labels arrived."""
    db.commit()
    train.maybe_autotrain(settings, project_id, user_id=user_id)


@router.put("/items/{item_id}/label", response_model=ItemPublic)
def set_label(
    item_id: int,
    body: LabelSet,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> ItemPublic:
    labels.set_label(
        db,
        project,
        item_id,
        labels.LabelValue(
            kind=body.kind, label=body.label, scores=body.scores, data=body.data, note=body.note
        ),
        user_id=user.id,
        expected_version=body.version,
        source="api",
    )
    _after_human_labels(db, settings, project.id, user.id)
    return item_public(item_query.item_row(db, project, item_id), settings)


@router.delete("/items/{item_id}/label", response_model=ItemPublic)
def clear_label(
    item_id: int,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    version: int | None = Query(None, ge=0),
) -> ItemPublic:
    labels.clear_label(db, project, item_id, user_id=user.id, expected_version=version)
    return item_public(item_query.item_row(db, project, item_id), settings)


@router.post("/labels/batch", response_model=LabelBatchResult)
def batch_labels(
    body: LabelBatch,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> LabelBatchResult:
    value = None
    if body.kind and body.kind != "none":
        value = labels.LabelValue(
            kind=body.kind, label=body.label, scores=body.scores, data=body.data, note=body.note
        )
    result = labels.batch_apply(
        db,
        project,
        body.item_ids,
        value,
        user_id=user.id,
        expected_versions=body.versions,
        source="batch",
    )
    if result.applied:
        _after_human_labels(db, settings, project.id, user.id)
    return LabelBatchResult(
        applied=result.applied,
        unchanged=result.unchanged,
        conflicts=[BatchConflict(**c) for c in result.conflicts],
        versions=result.versions,
    )


@router.get("/items/{item_id}/history", response_model=EventsPublic)
def item_history(item_id: int, project: ViewerProject, db: SessionDep) -> EventsPublic:
    events = labels.history(db, project, item_id)
    ids = {e.user_id for e in events if e.user_id is not None}
    emails = dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all())
    data = [
        EventPublic(
            id=e.id,
            item_id=e.item_id,
            user_id=e.user_id,
            user_email=emails.get(e.user_id) if e.user_id else None,
            at=e.at,
            action=e.action,
            source=e.source,
            before=e.before,
            after=e.after,
            version=e.version,
        )
        for e in events
    ]
    return EventsPublic(data=data, count=len(data))
