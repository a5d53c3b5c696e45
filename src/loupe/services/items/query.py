"""Listing items with their label and the active model's draft, filtered and paged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, ModelVersion, Prediction, Project
from loupe.errors import ErrorCode, LoupeError

LABEL_STATUSES = ("labelled", "unlabelled", "unsure", "skip", "error")
# Kinds that are not a label: cleared, or skipped (a person passed on the item).
NOT_LABELLED = ("none", "skip")


@dataclass(frozen=True)
class ItemFilter:
    case_id: int | None = None
    label: str | None = None
    status: str | None = None
    flagged: bool | None = None
    predicted: str | None = None
    search: str | None = None


@dataclass
class ItemRow:
    item: Item
    annotation: Annotation | None
    prediction: Prediction | None


def active_version_id(db: Session, project_id: int) -> int | None:
    return db.scalar(
        select(ModelVersion.id).where(
            ModelVersion.project_id == project_id, ModelVersion.active.is_(True)
        )
    )


def _pred_join(version_id: int | None) -> Any:
    return and_(Prediction.item_id == Item.id, Prediction.model_version_id == version_id)


def _filtered(
    project: Project, f: ItemFilter, version_id: int | None
) -> Select[Item, Annotation, Prediction]:
    stmt = (
        select(Item, Annotation, Prediction)
        .outerjoin(Annotation, Annotation.item_id == Item.id)
        .outerjoin(Prediction, _pred_join(version_id))
        .where(Item.project_id == project.id)
    )
    return _where(stmt, f)


def _count_stmt(project: Project, f: ItemFilter, version_id: int | None) -> Select[int]:
    """The total for a filter, joining only the tables the filter reads (a count
    over items alone is ~20x faster than over the three-table join at 100k)."""
    stmt = select(func.count(Item.id)).select_from(Item).where(Item.project_id == project.id)
    if f.label is not None or (f.status is not None and f.status != "error"):
        stmt = stmt.outerjoin(Annotation, Annotation.item_id == Item.id)
    if f.flagged is not None or f.predicted is not None:
        stmt = stmt.outerjoin(Prediction, _pred_join(version_id))
    return _where(stmt, f)


SelectT = TypeVar("SelectT", Select[Item, Annotation, Prediction], Select[int])


def _where(stmt: SelectT, f: ItemFilter) -> SelectT:
    if f.case_id is not None:
        stmt = stmt.where(Item.case_id == f.case_id)
    if f.label is not None:
        if f.label in ("unsure", "skip"):
            stmt = stmt.where(Annotation.kind == f.label)
        else:
            stmt = stmt.where(Annotation.label == f.label)
    if f.status is not None:
        if f.status not in LABEL_STATUSES:
            raise LoupeError(
                ErrorCode.INVALID, f"status {f.status!r} is not one of {list(LABEL_STATUSES)}"
            )
        if f.status == "labelled":
            stmt = stmt.where(Annotation.kind.is_not(None), Annotation.kind.not_in(NOT_LABELLED))
        elif f.status == "unlabelled":
            stmt = stmt.where(or_(Annotation.id.is_(None), Annotation.kind == "none"))
        elif f.status == "error":
            stmt = stmt.where(Item.status == "error")
        else:
            stmt = stmt.where(Annotation.kind == f.status)
    if f.flagged is not None:
        if f.flagged:
            stmt = stmt.where(Prediction.flagged.is_(True))
        else:
            stmt = stmt.where(or_(Prediction.id.is_(None), Prediction.flagged.is_(False)))
    if f.predicted is not None:
        stmt = stmt.where(Prediction.label == f.predicted)
    if f.search:
        stmt = stmt.where(Item.filename.contains(f.search, autoescape=True))
    return stmt


def list_items(
    db: Session,
    project: Project,
    f: ItemFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    after_id: int | None = None,
    with_count: bool = True,
) -> tuple[list[ItemRow], int | None]:
    """A page of items ordered by id; ``after_id`` gives keyset paging for big projects."""
    version_id = active_version_id(db, project.id)
    stmt = _filtered(project, f, version_id)
    count = None
    if with_count:
        count = db.scalar(_count_stmt(project, f, version_id)) or 0
    page = stmt.order_by(Item.id)
    if after_id is not None:
        page = page.where(Item.id > after_id)
    else:
        page = page.offset(offset)
    rows = db.execute(page.limit(limit)).all()
    return [ItemRow(item=i, annotation=a, prediction=p) for i, a, p in rows], count


def item_row(db: Session, project: Project, item_id: int) -> ItemRow:
    version_id = active_version_id(db, project.id)
    row = db.execute(_filtered(project, ItemFilter(), version_id).where(Item.id == item_id)).first()
    if row is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} not found in project {project.id}")
    return ItemRow(item=row[0], annotation=row[1], prediction=row[2])


def row_after_write(db: Session, project: Project, item_id: int, ann: Annotation | None) -> ItemRow:
    """An item's row right after its label was written in this transaction.

    The item and the annotation are already in the session (no query); only
    the active model's draft is read, in one statement. The label path uses it
    to answer without reading back what it just wrote.
    """
    item = db.get(Item, item_id)  # the identity map holds it: loaded by the write
    if item is None or item.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} not found in project {project.id}")
    draft = db.scalar(
        select(Prediction)
        .join(
            ModelVersion,
            and_(ModelVersion.id == Prediction.model_version_id, ModelVersion.active.is_(True)),
        )
        .where(Prediction.item_id == item_id)
        .limit(1)
    )
    return ItemRow(item=item, annotation=ann, prediction=draft)


def label_counts(db: Session, project: Project, case_id: int | None = None) -> dict[str, Any]:
    stmt = (
        select(Annotation.kind, Annotation.label, func.count(Annotation.id))
        .join(Item, Item.id == Annotation.item_id)
        .where(Annotation.project_id == project.id, Annotation.kind != "none")
        .group_by(Annotation.kind, Annotation.label)
    )
    if case_id is not None:
        stmt = stmt.where(Item.case_id == case_id)
    out: dict[str, int] = {}
    for kind, label, n in db.execute(stmt):
        key = str(label if kind == "class" else kind)
        out[key] = out.get(key, 0) + n
    return out
