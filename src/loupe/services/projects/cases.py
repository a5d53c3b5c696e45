"""Cases of a project (patient / sample / slide groups): list, create, rename, finish."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Case, Item, Project
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.core import get_case, get_or_create_case

CaseCounts = dict[int, tuple[int, int]]
"""Case id -> (items, labelled items)."""


def case_counts(db: Session, project_id: int) -> CaseCounts:
    """Items and labelled items (a label other than 'none' or 'skip') per case of a project."""
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
            .where(Item.project_id == project_id, Annotation.kind.not_in(("none", "skip")))
            .group_by(Item.case_id)
        ).all()
    )
    return {int(cid): (n, labelled.get(cid, 0)) for cid, n in items.items() if cid is not None}


def list_cases(db: Session, project: Project) -> list[Case]:
    """The project's cases by name."""
    return list(
        db.scalars(select(Case).where(Case.project_id == project.id).order_by(Case.name)).all()
    )


def create_case(db: Session, project: Project, name: str, meta: dict[str, Any]) -> Case:
    """A new case named ``name`` (stripped); CONFLICT if the project has one of that name."""
    _check_name_free(db, project, name.strip())
    case = get_or_create_case(db, project.id, name)
    case.meta = meta
    return case


def update_case(
    db: Session,
    project: Project,
    case_id: int,
    *,
    user_id: int,
    name: str | None = None,
    meta: dict[str, Any] | None = None,
    status: str | None = None,
) -> Case:
    """Rename a case, replace its metadata, or set its status (``open`` | ``finished``;
    finishing records who and when). A taken name is a CONFLICT."""
    case = get_case(db, project, case_id)
    if name is not None and name.strip() != case.name:
        _check_name_free(db, project, name.strip())
        case.name = name.strip()
    if meta is not None:
        case.meta = meta
    if status is not None and status != case.status:
        case.status = status
        finished = status == "finished"
        case.finished_at = utcnow() if finished else None
        case.finished_by = user_id if finished else None
    db.flush()
    return case


def _check_name_free(db: Session, project: Project, name: str) -> None:
    taken = db.scalar(select(Case.id).where(Case.project_id == project.id, Case.name == name))
    if taken is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"case {name!r} already exists")
