"""Training, model versions (with rollback), predictions and accepting drafts."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from loupe.api.deps import (
    AnnotatorProject,
    CurrentUser,
    OwnerProject,
    ReviewerProject,
    SessionDep,
    SettingsDep,
    ViewerProject,
)
from loupe.api.params import Id
from loupe.api.routes.items import item_public
from loupe.api.schemas.items import BatchConflict, ItemPublic, LabelBatchResult
from loupe.api.schemas.jobs import JobPublic
from loupe.api.schemas.models import (
    AcceptOne,
    AcceptRequest,
    ModelVersionPublic,
    ModelVersionsPublic,
    PredictionPublic,
    PredictionsPublic,
    PredictRequest,
    TrainRequest,
)
from loupe.db.models import Job, ModelVersion
from loupe.errors import ErrorCode, LoupeError
from loupe.services.items import query as item_query
from loupe.services.labels.core import new_change_id
from loupe.services.projects.cases import ensure_cases_open
from loupe.services.training import predict, predictions, train

router = APIRouter(prefix="/projects/{project_id}", tags=["models"])


@router.post("/train", response_model=JobPublic, status_code=202)
def start_training(
    body: TrainRequest,
    project: ReviewerProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> Job:
    """Queue a training; 409 while another one is queued or running."""
    db.commit()  # release the SQLite write lock before the job's own transactions
    return train.request_training(settings, project.id, user_id=user.id, mode=body.mode)


@router.post("/predict", response_model=JobPublic, status_code=202)
def start_prediction(
    body: PredictRequest,
    project: ReviewerProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> Job:
    """Queue a ``predict`` job: the version (default: the active one) drafts every item
    it has no draft for, in chunks any worker runs. 409 without a ready version or
    while one is queued or running. Workers also start it on their own for new items
    (project setting ``draft_new_items``, default on)."""
    db.commit()  # release the SQLite write lock before the job's own transactions
    return predict.request_prediction(
        settings,
        project.id,
        user_id=user.id,
        version_id=body.version_id,
        chunk_size=body.chunk_size,
    )


@router.get("/versions", response_model=ModelVersionsPublic)
def list_versions(project: ViewerProject, db: SessionDep) -> ModelVersionsPublic:
    rows = db.scalars(
        select(ModelVersion)
        .where(ModelVersion.project_id == project.id)
        .order_by(ModelVersion.number.desc())
    ).all()
    return ModelVersionsPublic(
        data=[ModelVersionPublic.model_validate(r) for r in rows], count=len(rows)
    )


@router.get("/versions/{version_id}", response_model=ModelVersionPublic)
def get_version(version_id: Id, project: ViewerProject, db: SessionDep) -> ModelVersion:
    version = db.get(ModelVersion, version_id)
    if version is None or version.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"model version {version_id} not found")
    return version


@router.post("/versions/{version_id}/activate", response_model=ModelVersionPublic)
def activate(version_id: Id, project: OwnerProject, db: SessionDep) -> ModelVersion:
    """Make this version the active one (roll back or forward)."""
    return train.activate_version(db, project, version_id)


@router.get("/items/{item_id}/predictions", response_model=PredictionsPublic)
def item_predictions(item_id: Id, project: ViewerProject, db: SessionDep) -> PredictionsPublic:
    rows = predictions.item_predictions(db, project, item_id)
    return PredictionsPublic(
        item_id=item_id,
        active_version_id=item_query.active_version_id(db, project.id),
        data=[PredictionPublic(**predictions.prediction_dict(p)) for p in rows],
    )


@router.post("/items/{item_id}/accept", response_model=ItemPublic)
def accept_one(
    item_id: Id,
    body: AcceptOne,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> ItemPublic:
    """Accept the draft as the item's label (origin ``model_accepted``)."""
    ensure_cases_open(db, project, [item_id])  # 409 case_finished: reopen first
    expected = {item_id: body.version} if body.version is not None else None
    change_id = new_change_id()
    result = predictions.accept(
        db,
        project,
        [item_id],
        user_id=user.id,
        version_id=body.model_version_id,
        expected_versions=expected,
        group_id=change_id,
        include_novel=True,  # one item, accepted by a person who is looking at it
    )
    if result.conflicts:
        c = result.conflicts[0]
        code = ErrorCode.STALE_VERSION if c["code"] == "stale_version" else ErrorCode.CONFLICT
        raise LoupeError(code, c["message"], item_id=item_id)
    out = item_public(item_query.item_row(db, project, item_id), settings)
    out.change_id = result.change_id
    return out


@router.post("/predictions/accept", response_model=LabelBatchResult)
def accept_many(
    body: AcceptRequest,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> LabelBatchResult:
    """Accept many drafts in one change (one undo step)."""
    ensure_cases_open(db, project, body.item_ids)
    result = predictions.accept(
        db,
        project,
        body.item_ids,
        user_id=user.id,
        version_id=body.model_version_id,
        expected_versions=body.versions,
        group_id=new_change_id(),
    )
    if result.applied:
        # accepted drafts are labels that train: they count towards auto-retraining
        db.commit()
        train.maybe_autotrain(settings, project.id, user_id=user.id)
    return LabelBatchResult(
        applied=result.applied,
        unchanged=result.unchanged,
        conflicts=[BatchConflict(**c) for c in result.conflicts],
        versions=result.versions,
        change_id=result.change_id,
    )
