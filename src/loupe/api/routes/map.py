"""The 2-D map (a job, cached) and loading a list of item ids into the grid."""

from __future__ import annotations

from fastapi import APIRouter, Query

from loupe.api.deps import AnnotatorProject, CurrentUser, SessionDep, SettingsDep, ViewerProject
from loupe.api.routes.items import item_public
from loupe.api.schemas.jobs import JobPublic
from loupe.api.schemas.map import ItemsByIdPublic, ItemsByIdRequest, MapPublic
from loupe.db.models import Job
from loupe.services.queues import map as project_map

router = APIRouter(prefix="/projects/{project_id}", tags=["map"])

METHOD = Query("umap", pattern="^(umap|tsne)$", description="umap | tsne")


@router.post("/map", response_model=JobPublic, status_code=202)
def start_map(
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    method: str = METHOD,
) -> Job:
    """Queue the map job (reuses the cached map while the features are unchanged);
    409 while one is queued or running, or when the project has no features yet."""
    db.commit()  # release the SQLite write lock before the job's own transactions
    return project_map.request_map(settings, project.id, user_id=user.id, method=method)


@router.get("/map", response_model=MapPublic)
def get_map(
    project: ViewerProject,
    db: SessionDep,
    settings: SettingsDep,
    method: str | None = Query(None, pattern="^(umap|tsne)$", description="default: newest"),
) -> MapPublic:
    """The map as parallel arrays, coloured by today's labels and drafts; before the
    first map is computed, ``computed: false`` and a message saying whether a job runs."""
    m = project_map.read_map(db, settings, project, method)
    return MapPublic(
        method=m.method,
        backbone=m.backbone,
        model_version_id=m.model_version_id,
        classes=m.classes,
        item_ids=m.item_ids,
        x=m.x,
        y=m.y,
        human=m.human,
        draft=m.draft,
        uncertainty=m.uncertainty,
        flagged=m.flagged,
        stale=m.stale,
        job=JobPublic.model_validate(m.job) if m.job is not None else None,
        computed=m.computed,
        message=m.message,
    )


@router.post("/items/by-ids", response_model=ItemsByIdPublic)
def items_by_ids(
    body: ItemsByIdRequest, project: ViewerProject, db: SessionDep, settings: SettingsDep
) -> ItemsByIdPublic:
    """Items in the order given (a lasso on the map, a queue, similar items) for the grid."""
    rows = project_map.items_by_ids(db, project, body.item_ids)
    return ItemsByIdPublic(data=[item_public(r, settings) for r in rows])
