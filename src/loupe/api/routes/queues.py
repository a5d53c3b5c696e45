"""Active-learning queues (leased to the caller) and similar items."""

from __future__ import annotations

from fastapi import APIRouter, Query

from loupe.api.deps import (
    AnnotatorProject,
    CurrentUser,
    SessionDep,
    SettingsDep,
    ViewerProject,
)
from loupe.api.params import Id
from loupe.api.schemas.queues import (
    QueueItem,
    QueuePublic,
    ReleasePublic,
    ReleaseRequest,
    SimilarItem,
    SimilarPublic,
    SimilarRequest,
)
from loupe.services import queues

router = APIRouter(prefix="/projects/{project_id}", tags=["queues"])


@router.post("/queue", response_model=QueuePublic)
def next_items(
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    strategy: str = Query("uncertain", max_length=64, description="a name from /api/info"),
    n: int = Query(50, ge=1, le=500),
    measure: str | None = Query(None, max_length=32, description="entropy|margin|..."),
    band_class: str | None = Query(None, max_length=200, description="band: a class name"),
    band_lo: float | None = Query(None, ge=0.0, le=1.0),
    band_hi: float | None = Query(None, ge=0.0, le=1.0),
    method: str | None = Query(None, max_length=32, description="oddities: both|lof|iforest"),
    factor: float | None = Query(None, ge=1.0, le=100.0, description="hybrid: shortlist size"),
    seed: int = Query(0, ge=0, le=2**31 - 1),
) -> QueuePublic:
    """The next ``n`` items by ``strategy``, leased to you (nobody else is served them
    until the lease expires); your earlier leases in the project are replaced."""
    params = {
        "measure": measure,
        "band_class": band_class,
        "band_lo": band_lo,
        "band_hi": band_hi,
        "method": method,
        "factor": factor,
        "seed": seed,
    }
    result = queues.next_items(db, settings, project, user, strategy, n, params)
    return QueuePublic(
        strategy=result.strategy,
        strategy_used=result.strategy_used,
        fallback_reason=result.fallback_reason,
        backbone=result.backbone,
        model_version_id=result.model_version_id,
        lease_expires_at=result.lease_expires_at,
        items=[QueueItem(id=i, score=s) for i, s in result.items],
    )


@router.post("/queue/release", response_model=ReleasePublic)
def release(
    project: AnnotatorProject, user: CurrentUser, db: SessionDep, body: ReleaseRequest | None = None
) -> ReleasePublic:
    """Drop your leases in this project (all, or ``item_ids``)."""
    item_ids = body.item_ids if body is not None else None
    return ReleasePublic(released=queues.release(db, project, user.id, item_ids))


def _similar_public(result: queues.SimilarResult) -> SimilarPublic:
    return SimilarPublic(
        backbone=result.backbone,
        query=result.query,
        items=[SimilarItem(id=i, similarity=s) for i, s in result.items],
    )


@router.get("/items/{item_id}/similar", response_model=SimilarPublic)
def similar_to_item(
    item_id: Id,
    project: ViewerProject,
    db: SessionDep,
    settings: SettingsDep,
    k: int = Query(50, ge=1, le=1000),
) -> SimilarPublic:
    """The ``k`` items most like this one (cosine on the active backbone's features)."""
    return _similar_public(queues.similar(db, settings, project, [item_id], k))


@router.post("/similar", response_model=SimilarPublic)
def similar_to_items(
    body: SimilarRequest, project: ViewerProject, db: SessionDep, settings: SettingsDep
) -> SimilarPublic:
    """The ``k`` items most like several selected ones (mean or max similarity)."""
    return _similar_public(
        queues.similar(db, settings, project, body.item_ids, body.k, combine=body.combine)
    )
