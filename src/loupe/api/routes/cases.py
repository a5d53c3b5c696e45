"""Cases (patient / sample / slide groups) of a project."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import func, select

from loupe.api.deps import AnnotatorProject, CurrentUser, SessionDep, ViewerProject
from loupe.api.schemas.projects import CaseCreate, CasePublic, CasesPublic, CaseUpdate
from loupe.db.models import Annotation, Case, Item
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects import core as svc

router = APIRouter(prefix="/projects/{project_id}/cases", tags=["cases"])


def _counts(db: SessionDep, project_id: int) -> dict[int, tuple[int, int]]:
    items = dict(
        db.execute(
            select(Item.case_id, func.count(Item.id))
            .where(Item.project_id == project_id, Item.case_id.is_not(None))
            .group_by(Item.case_id)
        ).all()
    )
    labelled = dict(
        db.execute(
            select(Item.case_id, func.count(Annotation.id))
            .join(Annotation, Annotation.item_id == Item.id)
            .where(Item.project_id == project_id, Annotation.kind != "none")
            .group_by(Item.case_id)
        ).all()
    )
    return {int(cid): (n, labelled.get(cid, 0)) for cid, n in items.items() if cid is not None}


def _public(case: Case, counts: dict[int, tuple[int, int]]) -> CasePublic:
    n, lab = counts.get(case.id, (0, 0))
    return CasePublic.model_validate(case).model_copy(update={"items": n, "labelled": lab})


@router.get("", response_model=CasesPublic)
def list_cases(project: ViewerProject, db: SessionDep) -> CasesPublic:
    cases = db.scalars(select(Case).where(Case.project_id == project.id).order_by(Case.name)).all()
    counts = _counts(db, project.id)
    return CasesPublic(data=[_public(c, counts) for c in cases], count=len(cases))


@router.post("", response_model=CasePublic, status_code=201)
def create_case(body: CaseCreate, project: AnnotatorProject, db: SessionDep) -> CasePublic:
    exists = db.scalar(
        select(Case.id).where(Case.project_id == project.id, Case.name == body.name.strip())
    )
    if exists is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"case {body.name!r} already exists")
    case = svc.get_or_create_case(db, project.id, body.name)
    case.meta = body.meta
    return _public(case, {})


@router.get("/{case_id}", response_model=CasePublic)
def get_case(case_id: int, project: ViewerProject, db: SessionDep) -> CasePublic:
    return _public(svc.get_case(db, project, case_id), _counts(db, project.id))


@router.patch("/{case_id}", response_model=CasePublic)
def update_case(
    case_id: int, body: CaseUpdate, project: AnnotatorProject, user: CurrentUser, db: SessionDep
) -> CasePublic:
    case = svc.get_case(db, project, case_id)
    if body.name is not None and body.name.strip() != case.name:
        taken = db.scalar(
            select(Case.id).where(Case.project_id == project.id, Case.name == body.name.strip())
        )
        if taken is not None:
            raise LoupeError(ErrorCode.CONFLICT, f"case {body.name!r} already exists")
        case.name = body.name.strip()
    if body.meta is not None:
        case.meta = body.meta
    if body.status is not None and body.status != case.status:
        case.status = body.status
        case.finished_at = utcnow() if body.status == "finished" else None
        case.finished_by = user.id if body.status == "finished" else None
    db.flush()
    return _public(case, _counts(db, project.id))
