"""Cases (patient / sample / slide groups) of a project; moving items between them."""

from __future__ import annotations

from fastapi import APIRouter

from loupe.api.deps import AnnotatorProject, CurrentUser, SessionDep, ViewerProject
from loupe.api.params import Id
from loupe.api.schemas.projects import (
    CaseCreate,
    CaseMove,
    CasePublic,
    CasesPublic,
    CaseUpdate,
)
from loupe.db.models import Case
from loupe.services.projects import cases as svc
from loupe.services.projects.cases import CaseCounts

router = APIRouter(prefix="/projects/{project_id}/cases", tags=["cases"])


def _public(case: Case, counts: CaseCounts) -> CasePublic:
    n, lab = counts.get(case.id, (0, 0))
    return CasePublic.model_validate(case).model_copy(update={"items": n, "labelled": lab})


@router.get("", response_model=CasesPublic)
def list_cases(project: ViewerProject, db: SessionDep) -> CasesPublic:
    cases = svc.list_cases(db, project)
    counts = svc.case_counts(db, project.id)
    return CasesPublic(data=[_public(c, counts) for c in cases], count=len(cases))


@router.post("", response_model=CasePublic, status_code=201)
def create_case(body: CaseCreate, project: AnnotatorProject, db: SessionDep) -> CasePublic:
    return _public(svc.create_case(db, project, body.name, body.meta), {})


@router.post("/move", response_model=CasePublic)
def move_items(
    body: CaseMove, project: AnnotatorProject, user: CurrentUser, db: SessionDep
) -> CasePublic:
    """Move items to a case (by id, or by name: a new name creates it); 409 ``case_finished``
    when the target or a source case is finished."""
    case = svc.move_items(
        db, project, body.item_ids, user_id=user.id, case_id=body.case_id, case_name=body.case_name
    )
    return _public(case, svc.case_counts(db, project.id))


@router.get("/{case_id}", response_model=CasePublic)
def get_case(case_id: Id, project: ViewerProject, db: SessionDep) -> CasePublic:
    return _public(svc.get_case(db, project, case_id), svc.case_counts(db, project.id))


@router.patch("/{case_id}", response_model=CasePublic)
def update_case(
    case_id: Id, body: CaseUpdate, project: AnnotatorProject, user: CurrentUser, db: SessionDep
) -> CasePublic:
    case = svc.update_case(
        db,
        project,
        case_id,
        user_id=user.id,
        name=body.name,
        meta=body.meta,
        status=body.status,
    )
    return _public(case, svc.case_counts(db, project.id))


@router.post("/{case_id}/reopen", response_model=CasePublic)
def reopen_case(
    case_id: Id, project: AnnotatorProject, user: CurrentUser, db: SessionDep
) -> CasePublic:
    """Mark a finished case open again; its stored reports are flagged ``stale``."""
    case = svc.reopen_case(db, project, case_id, user_id=user.id)
    return _public(case, svc.case_counts(db, project.id))
