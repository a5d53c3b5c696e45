"""Labels: set / clear one, batch apply, undo / redo a change, audit history."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from loupe.api.deps import (
    ANNOTATOR,
    AnnotatorProject,
    CredentialsSent,
    CurrentUser,
    ProjectIdPath,
    SessionDep,
    SettingsDep,
    ViewerProject,
    parse_body,
    project_transaction,
)
from loupe.api.params import MAX_ID, Id
from loupe.api.routes.items import item_public
from loupe.api.schemas.items import (
    BatchConflict,
    EventPublic,
    EventsPublic,
    ItemPublic,
    LabelBatch,
    LabelBatchResult,
    LabelSet,
    UndoRequest,
    UndoResult,
)
from loupe.services.items import query as item_query
from loupe.services.labels import core as labels
from loupe.services.labels import history as label_history
from loupe.services.labels import lean
from loupe.services.labels import undo as label_undo
from loupe.services.projects.cases import ensure_cases_open
from loupe.services.training import train
from loupe.settings import Settings

router = APIRouter(prefix="/projects/{project_id}", tags=["labels"])


def _after_human_labels(db: SessionDep, settings: Settings, project_id: int, user_id: int) -> None:
    """Commit, then start a retraining when enough new labels arrived."""
    db.commit()
    train.maybe_autotrain(settings, project_id, user_id=user_id)


@router.put(
    "/items/{item_id}/label",
    response_model=ItemPublic,
    dependencies=[CredentialsSent],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LabelSet.model_json_schema()}},
        }
    },
)
async def set_label(
    project_id: ProjectIdPath, item_id: Id, request: Request, settings: SettingsDep
) -> ItemPublic:
    """Set a person's label (``LabelSet``; the label hot path).

    The caller, the role, the body and the write are handled in one worker-thread
    call, in that order (a stranger learns nothing from validation errors),
    instead of a chain of dependencies with a thread hop each; the transaction
    commits before the response is sent. Auto-retraining is checked by the job
    worker, not here.
    """
    raw = await request.body()
    out = await run_in_threadpool(_set_label, request, settings, project_id, item_id, raw)
    # Built from validated parts: sent as is, not validated again against ItemPublic.
    return Response(out.model_dump_json(by_alias=True), media_type="application/json")  # type: ignore[return-value]


def _set_label(
    request: Request, settings: Settings, project_id: int, item_id: int, raw: bytes
) -> ItemPublic:
    change_id = labels.new_change_id()
    with project_transaction(request, settings, project_id, ANNOTATOR) as (db, user, project):
        body = parse_body(LabelSet, raw)
        row = lean.set_one(
            db,
            project,
            item_id,
            labels.LabelValue(
                kind=body.kind, label=body.label, scores=body.scores, data=body.data, note=body.note
            ),
            user_id=user.id,
            expected_version=body.version,
            group_id=change_id,
        )
        out = item_public(row, settings)
    out.change_id = change_id
    return out


@router.delete("/items/{item_id}/label", response_model=ItemPublic)
def clear_label(
    item_id: Id,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    version: int | None = Query(None, ge=0, le=MAX_ID),
) -> ItemPublic:
    change_id = labels.new_change_id()
    ensure_cases_open(db, project, [item_id])
    labels.clear_label(
        db, project, item_id, user_id=user.id, expected_version=version, group_id=change_id
    )
    out = item_public(item_query.item_row(db, project, item_id), settings)
    out.change_id = change_id
    return out


@router.post("/labels/batch", response_model=LabelBatchResult)
def batch_labels(
    body: LabelBatch,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> LabelBatchResult:
    ensure_cases_open(db, project, body.item_ids)
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
        group_id=labels.new_change_id(),
    )
    if result.applied:
        _after_human_labels(db, settings, project.id, user.id)
    return LabelBatchResult(
        applied=result.applied,
        unchanged=result.unchanged,
        conflicts=[BatchConflict(**c) for c in result.conflicts],
        versions=result.versions,
        change_id=result.change_id,
    )


def _undo_public(result: label_undo.UndoResult) -> UndoResult:
    return UndoResult(
        action=result.action,
        reverted_change_id=result.reverted,
        what=result.what,
        change_id=result.change_id,
        applied=result.applied,
        unchanged=result.unchanged,
        conflicts=[BatchConflict(**c) for c in result.conflicts],
        versions=result.versions,
    )


@router.post("/undo", response_model=UndoResult)
def undo_change(
    project: AnnotatorProject, user: CurrentUser, db: SessionDep, body: UndoRequest | None = None
) -> UndoResult:
    """Undo one of your changes (default: the latest), whatever the grid shows.

    Items changed since by anyone are reported as conflicts and kept; 409 when
    there is nothing to undo.
    """
    change_id = body.change_id if body is not None else None
    return _undo_public(label_undo.undo(db, project, user_id=user.id, change_id=change_id))


@router.post("/redo", response_model=UndoResult)
def redo_change(
    project: AnnotatorProject, user: CurrentUser, db: SessionDep, body: UndoRequest | None = None
) -> UndoResult:
    """Re-apply your latest undone change; 409 when there is nothing to redo."""
    change_id = body.change_id if body is not None else None
    return _undo_public(label_undo.redo(db, project, user_id=user.id, change_id=change_id))


@router.get("/items/{item_id}/history", response_model=EventsPublic)
def item_history(item_id: Id, project: ViewerProject, db: SessionDep) -> EventsPublic:
    data = [
        EventPublic(
            id=e.id,
            item_id=e.item_id,
            user_id=e.user_id,
            user_email=email,
            at=e.at,
            action=e.action,
            source=e.source,
            before=e.before,
            after=e.after,
            version=e.version,
            change_id=e.group_id,
            reverts=e.reverts,
        )
        for e, email in label_history.history_with_authors(db, project, item_id)
    ]
    return EventsPublic(data=data, count=len(data))
