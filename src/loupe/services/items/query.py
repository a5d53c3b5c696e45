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
ORIGINS = ("human", "model_accepted")
# sort key -> (column, descending); every sort ends on the item id so pages are stable
SORTS: dict[str, tuple[Any, bool]] = {
    "id": (Item.id, False),
    "confidence": (Prediction.confidence, False),
    "-confidence": (Prediction.confidence, True),
    "uncertainty": (Prediction.uncertainty, False),
    "-uncertainty": (Prediction.uncertainty, True),
}


@dataclass(frozen=True)
class ItemFilter:
    case_id: int | None = None
    label: str | None = None
    status: str | None = None
    flagged: bool | None = None
    predicted: str | None = None
    search: str | None = None
    flag_reason: str | None = None  # a reason, or its start ('wide interval' for any metric)
    origin: str | None = None  # human | model_accepted
    min_confidence: float | None = None
    max_confidence: float | None = None

    def reads_draft(self) -> bool:
        return (
            self.flagged is not None
            or self.predicted is not None
            or self.flag_reason is not None
            or self.min_confidence is not None
            or self.max_confidence is not None
        )


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
    if (
        f.label is not None
        or f.origin is not None
        or (f.status is not None and f.status != "error")
    ):
        stmt = stmt.outerjoin(Annotation, Annotation.item_id == Item.id)
    if f.reads_draft():
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
    if f.flag_reason is not None:
        stmt = stmt.where(Prediction.flag_reason.startswith(f.flag_reason, autoescape=True))
    if f.min_confidence is not None:
        stmt = stmt.where(Prediction.confidence >= f.min_confidence)
    if f.max_confidence is not None:
        stmt = stmt.where(Prediction.confidence <= f.max_confidence)
    if f.origin is not None:
        if f.origin not in ORIGINS:
            raise LoupeError(
                ErrorCode.INVALID, f"origin {f.origin!r} is not one of {list(ORIGINS)}"
            )
        stmt = stmt.where(
            Annotation.origin == f.origin,
            Annotation.kind.is_not(None),
            Annotation.kind.not_in(NOT_LABELLED),
        )
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
    sort: str = "id",
) -> tuple[list[ItemRow], int | None]:
    """A page of items in ``sort`` order (a key of :data:`SORTS`; items without a
    draft last); ``after_id`` gives keyset paging for big projects, by id only."""
    if sort not in SORTS:
        raise LoupeError(ErrorCode.INVALID, f"sort {sort!r} is not one of {list(SORTS)}")
    if after_id is not None and sort != "id":
        raise LoupeError(ErrorCode.INVALID, f"after_id pages by id only; use offset with {sort!r}")
    version_id = active_version_id(db, project.id)
    stmt = _filtered(project, f, version_id)
    count = None
    if with_count:
        count = db.scalar(_count_stmt(project, f, version_id)) or 0
    if sort != "id":
        rows = _sorted_page(
            db, project, f, version_id, stmt, SORTS[sort], limit=limit, offset=offset
        )
        return rows, count
    page = stmt.order_by(Item.id)
    if after_id is not None:
        page = page.where(Item.id > after_id)
    else:
        page = page.offset(offset)
    rows_ = db.execute(page.limit(limit)).all()
    return [ItemRow(item=i, annotation=a, prediction=p) for i, a, p in rows_], count


def _sorted_page(
    db: Session,
    project: Project,
    f: ItemFilter,
    version_id: int | None,
    stmt: Select[Item, Annotation, Prediction],
    sort: tuple[Any, bool],
    *,
    limit: int,
    offset: int,
) -> list[ItemRow]:
    """One offset page in draft-value order: the items with a value first (read in
    index order, ties by id), then those without a draft or value, by id.

    Two queries rather than one ``NULLS LAST`` sort over the outer join: that one
    sorts every row (~150 ms a page at 100k items); the head here starts from the
    predictions and reads them in ``(version, value, item)`` index order (~10 ms).
    """
    column, descending = sort
    head = (
        select(Item, Annotation, Prediction)
        .select_from(Prediction)
        .join(Item, Item.id == Prediction.item_id)
        .outerjoin(Annotation, Annotation.item_id == Item.id)
        .where(
            Prediction.model_version_id == version_id,
            Item.project_id == project.id,
            column.is_not(None),
        )
    )
    head = _where(head, f).order_by(
        column.desc() if descending else column.asc(),
        Prediction.item_id.desc() if descending else Prediction.item_id.asc(),
    )
    rows = list(db.execute(head.offset(offset).limit(limit)).all())
    if len(rows) < limit:
        # where the tail starts: every valued item comes before it
        valued = (
            offset + len(rows)
            if rows
            else db.scalar(select(func.count()).select_from(head.order_by(None).subquery())) or 0
        )
        tail = stmt.where(column.is_(None)).order_by(Item.id)
        rows += db.execute(tail.offset(max(0, offset - valued)).limit(limit - len(rows))).all()
    return [ItemRow(item=i, annotation=a, prediction=p) for i, a, p in rows]


def item_row(db: Session, project: Project, item_id: int) -> ItemRow:
    version_id = active_version_id(db, project.id)
    row = db.execute(_filtered(project, ItemFilter(), version_id).where(Item.id == item_id)).first()
    if row is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} not found in project {project.id}")
    return ItemRow(item=row[0], annotation=row[1], prediction=row[2])


def row_after_write(db: Session, item: Item, ann: Annotation | None) -> ItemRow:
    """An item's row right after its label was written in this transaction.

    The item and the annotation are already in hand (no query); only the
    active model's draft is read, in one statement. The label path uses it to
    answer without reading back what it just wrote.
    """
    draft = db.scalar(
        select(Prediction)
        .join(
            ModelVersion,
            and_(ModelVersion.id == Prediction.model_version_id, ModelVersion.active.is_(True)),
        )
        .where(Prediction.item_id == item.id)
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
