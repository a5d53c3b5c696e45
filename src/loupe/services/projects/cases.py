"""Cases of a project (patient / sample / slide groups): list, create, rename, finish,
reopen, and move items between them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Case, Item, Project, Report
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.core import get_case, get_or_create_case

audit = logging.getLogger("loupe.audit")

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
        if not finished:
            mark_reports_stale(db, case.id)
    db.flush()
    return case


def reopen_case(db: Session, project: Project, case_id: int, *, user_id: int) -> Case:
    """Mark a case open again; its stored reports become stale (see :func:`mark_reports_stale`)."""
    return update_case(db, project, case_id, user_id=user_id, status="open")


def mark_reports_stale(db: Session, case_id: int) -> int:
    """Flag every stored report of a case ``stale`` (its labels may change); returns how many.

    A regenerated report is a new row without the flag.
    """
    reports = db.scalars(select(Report).where(Report.case_id == case_id)).all()
    for report in reports:
        if not report.params.get("stale"):
            report.params = {**report.params, "stale": True}  # a new dict: JSON is not tracked
    return len(reports)


def ensure_cases_open(db: Session, project: Project, item_ids: Sequence[int]) -> None:
    """CASE_FINISHED (409) when any of the items belongs to a finished case.

    The error names the cases (``case_ids``) so that a client can reopen them and retry.
    """
    if not item_ids:
        return
    finished = db.execute(
        select(Case.id, Case.name)
        .join(Item, Item.case_id == Case.id)
        .where(
            Item.project_id == project.id,
            Item.id.in_(list(item_ids)),
            Case.status == "finished",
        )
        .distinct()
        .order_by(Case.id)
    ).all()
    if finished:
        raise case_finished(project.id, [(int(cid), str(name)) for cid, name in finished])


def case_finished(project_id: int, finished: Sequence[tuple[int, str]]) -> LoupeError:
    """The CASE_FINISHED error for ``(case id, name)`` pairs (the client reopens, retries)."""
    names = ", ".join(repr(name) for _, name in finished)
    return LoupeError(
        ErrorCode.CASE_FINISHED,
        f"case {names} is finished; reopen it to change its labels",
        project_id=project_id,
        case_ids=[cid for cid, _ in finished],
    )


def move_items(
    db: Session,
    project: Project,
    item_ids: Sequence[int],
    *,
    user_id: int,
    case_id: int | None = None,
    case_name: str | None = None,
) -> Case:
    """Move items to the case ``case_id`` or the case named ``case_name`` (created if new).

    Items of finished cases, and a finished target case, are CASE_FINISHED: reopen first.
    Every move is written to the ``loupe.audit`` log. Returns the target case.
    """
    if (case_id is None) == (case_name is None):
        raise LoupeError(ErrorCode.INVALID, "give exactly one of case_id and case_name")
    ids = list(dict.fromkeys(item_ids))
    if not ids:
        raise LoupeError(ErrorCode.INVALID, "no items to move")
    rows = db.execute(
        select(Item.id, Item.case_id).where(Item.project_id == project.id, Item.id.in_(ids))
    ).all()
    missing = sorted(set(ids) - {r[0] for r in rows})
    if missing:
        raise LoupeError(
            ErrorCode.NOT_FOUND,
            f"{len(missing)} item(s) not in project {project.id}: {missing[:10]}",
        )
    if case_id is not None:
        target = get_case(db, project, case_id)
    else:
        target = get_or_create_case(db, project.id, str(case_name))
    if target.status == "finished":
        raise LoupeError(
            ErrorCode.CASE_FINISHED,
            f"case {target.name!r} is finished; reopen it to add items",
            project_id=project.id,
            case_ids=[target.id],
        )
    ensure_cases_open(db, project, ids)
    db.execute(
        update(Item)
        .where(Item.project_id == project.id, Item.id.in_(ids))
        .values(case_id=target.id)
        .execution_options(synchronize_session="fetch")
    )
    for item_id, old in rows:
        if old != target.id:
            audit.info(
                "move item=%s project=%s from_case=%s to_case=%s user=%s",
                item_id,
                project.id,
                old,
                target.id,
                user_id,
            )
    db.flush()
    return target


def _check_name_free(db: Session, project: Project, name: str) -> None:
    taken = db.scalar(select(Case.id).where(Case.project_id == project.id, Case.name == name))
    if taken is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"case {name!r} already exists")
