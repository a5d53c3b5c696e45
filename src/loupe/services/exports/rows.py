"""The rows and columns of a project's export: filter, layout, keyset reading.

Rows are read in keyset pages (``WHERE items.id > :last ORDER BY items.id LIMIT
n``) inside one read transaction, so a 100,000-item project never sits in
memory and the export is a consistent snapshot. The CSV export
(:mod:`loupe.services.exports.core`) and the dataset ZIP
(:mod:`loupe.services.exports.archive`) both write these rows; the columns are
listed in :mod:`loupe.services.exports.core`.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, and_, func, select, text
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Case, Item, ModelVersion, Prediction, Project, User
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.case_pattern import compile_case_pattern
from loupe.tasks import kind_of
from loupe.tasks.base import ExportColumns, TaskKind, number_cell

PAGE = 5000  # rows per keyset page: big enough to amortise the query, small in memory
NONE_KIND = "none"
SKIP_KIND = "skip"  # a person passed on the item: not a label
N_FIXED = 21  # leading columns of every export row (see _base_query)
EXTRA_FIELDS = ("scores", "data", "pred_output")  # a kind's extra row fields, in this order


@dataclass(frozen=True)
class ExportFilter:
    """Which items an export holds.

    ``since`` / ``until`` bound the time of the human label (``labelled_at``,
    ``until`` exclusive), so a date range keeps only labelled items;
    ``labelled_only`` keeps items with a person's label (a class, scores, ...
    or unsure; not skip), as the item list's 'labelled' filter does.
    """

    case_id: int | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    labelled_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "since": iso(self.since),
            "until": iso(self.until),
            "labelled_only": self.labelled_only,
        }


def iso(value: dt.datetime | None) -> str:
    """ISO 8601 in UTC to the second (``2025-03-01T09:30:00+00:00``); '' for None."""
    if value is None:
        return ""
    if value.tzinfo is not dt.UTC:
        value = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value.replace(microsecond=0).isoformat()


def parse_when(text: str | None, *, end_of_day: bool = False) -> dt.datetime | None:
    """Parse an ISO date or date-time (naive means UTC).

    A bare date is midnight UTC; with ``end_of_day`` it is the next midnight,
    so ``until=2025-03-01`` includes the whole of 1 March.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.date.fromisoformat(text)
            value = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            return value + dt.timedelta(days=1) if end_of_day else value
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"{text!r} is not an ISO date (YYYY-MM-DD) or date-time"
        ) from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# --- columns -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportLayout:
    """The columns of one project's export and how a row becomes cells.

    The task kind decides its label and draft columns (:class:`ExportColumns`);
    the rest is the same for every kind.
    """

    task: str
    kind: TaskKind
    kind_columns: ExportColumns
    meta_fields: tuple[str, ...]
    emails: dict[int, str]
    version_number: int | None
    # model version id -> number, for the version whose draft a person accepted
    version_numbers: dict[int, int] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        cols = ["item_id", "filename", "sha256", "case"]
        cols += [f"meta_{k}" for k in self.meta_fields]
        cols += self.kind_columns.label
        cols += ["label_kind", "note", "labelled_by", "labelled_at", "label_origin"]
        cols += ["accepted_model_version"]
        cols += ["label_version", "model_version"]
        cols += self.kind_columns.draft
        cols += ["draft_confidence", "draft_uncertainty", "flagged", "flag_reason"]
        cols += ["format", "status", "imported_at"]
        return cols

    @property
    def extra_fields(self) -> tuple[str, ...]:
        """The kind's extra row fields, in the order :func:`_base_query` selects them."""
        return tuple(f for f in EXTRA_FIELDS if f in self.kind_columns.needs)

    def cells(self, r: Row[Any]) -> list[Any]:
        """One CSV row from a row of :func:`iter_rows` (read by position: it is hot)."""
        (item_id, filename, sha, fmt, status, created, case_name, kind, label, note, origin,
         version, updated_by, updated_at, pred_id, pred_label, confidence, uncertainty,
         flagged, flag_reason, accepted_version_id) = r[:N_FIXED]  # fmt: skip
        n_meta = len(self.meta_fields)
        out: list[Any] = [item_id, filename, sha, case_name or ""]
        if n_meta:
            out += [_cell(v) for v in r[N_FIXED : N_FIXED + n_meta]]
        fields = self.extra_fields
        extra = dict(zip(fields, r[N_FIXED + n_meta : N_FIXED + n_meta + len(fields)], strict=True))
        if kind == NONE_KIND:
            kind = None
        cols = self.kind_columns
        out += self.kind.label_cells(cols, kind, label, extra)
        if kind is None:
            out += ["", "", "", "", "", "", ""]
        else:
            by = self.emails.get(updated_by, "") if updated_by is not None else ""
            accepted = (
                self.version_numbers.get(accepted_version_id, "")
                if accepted_version_id is not None
                else ""
            )
            out += [kind, note or "", by, iso(updated_at), origin or "", accepted, version]
        if pred_id is None:
            out.append("")
            out += [""] * len(cols.draft)
        else:
            out.append(self.version_number)
            out += self.kind.draft_cells(cols, pred_label, extra)
        out += [
            number_cell(confidence),
            number_cell(uncertainty),
            "true" if flagged else "false",
            flag_reason or "",
            fmt,
            status,
            iso(created),
        ]
        return out


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return value


# --- reading rows ----------------------------------------------------------------------


def _base_query(
    project: Project,
    layout: ExportLayout,
    f: ExportFilter,
    version_id: int | None,
    *,
    with_files: bool = False,
) -> Any:
    """The export's SELECT: only the columns this project's layout needs.

    Metadata fields are read with the database's JSON operators (``json_extract``
    / ``->>``), so no row's JSON is decoded in Python for a class project.
    """
    pred_join = and_(Prediction.item_id == Item.id, Prediction.model_version_id == version_id)
    # The first N_FIXED columns, in this order, are what ExportLayout.cells unpacks.
    cols: list[Any] = [
        Item.id,
        Item.filename,
        Item.sha256,
        Item.format,
        Item.status,
        Item.created_at,
        Case.name.label("case_name"),
        Annotation.kind,
        Annotation.label,
        Annotation.note,
        Annotation.origin,
        Annotation.version,
        Annotation.updated_by,
        Annotation.updated_at,
        Prediction.id.label("pred_id"),
        Prediction.label.label("pred_label"),
        Prediction.confidence,
        Prediction.uncertainty,
        Prediction.flagged,
        Prediction.flag_reason,
        Annotation.model_version_id.label("accepted_version_id"),
    ]
    cols += [Item.meta[k].as_string().label(f"meta_{n}") for n, k in enumerate(layout.meta_fields)]
    extra = {
        "scores": Annotation.scores,
        "data": Annotation.data,
        "pred_output": Prediction.output.label("pred_output"),
    }
    cols += [extra[f] for f in layout.extra_fields]
    if with_files:
        cols += [Item.uri, Item.files]
    # Without a case filter, match the project through an expression so that the
    # planner walks the primary key in id order (keyset pages stay O(page))
    # instead of sorting the whole project for every page.
    project_match = (
        Item.project_id == project.id
        if f.case_id is not None
        else (Item.project_id + 0) == project.id
    )
    stmt = (
        select(*cols)
        .select_from(Item)
        .outerjoin(Case, Case.id == Item.case_id)
        .outerjoin(Annotation, Annotation.item_id == Item.id)
        .outerjoin(Prediction, pred_join)
        .where(project_match)
    )
    return _apply_filter(stmt, f)


def _apply_filter(stmt: Any, f: ExportFilter) -> Any:
    if f.case_id is not None:
        stmt = stmt.where(Item.case_id == f.case_id)
    if f.labelled_only or f.since is not None or f.until is not None:
        stmt = stmt.where(Annotation.kind.is_not(None), Annotation.kind != NONE_KIND)
    if f.labelled_only:
        stmt = stmt.where(Annotation.kind != SKIP_KIND)
    if f.since is not None:
        stmt = stmt.where(Annotation.updated_at >= f.since)
    if f.until is not None:
        stmt = stmt.where(Annotation.updated_at < f.until)
    return stmt


def iter_rows(
    db: Session,
    project: Project,
    layout: ExportLayout,
    f: ExportFilter,
    *,
    page: int = PAGE,
    with_files: bool = False,
) -> Iterator[Row[Any]]:
    """Every matching item with its label and draft, in id order, one page at a time."""
    version = active_version(db, project.id)
    stmt = _base_query(project, layout, f, version.id if version else None, with_files=with_files)
    conn = db.connection()  # Core rows: no ORM loading layer on the hot path
    last = 0
    while True:
        rows = conn.execute(stmt.where(Item.id > last).order_by(Item.id).limit(page)).all()
        yield from rows
        if len(rows) < page:
            return
        last = rows[-1].id


def count_rows(db: Session, project: Project, f: ExportFilter) -> int:
    stmt = (
        select(func.count(Item.id))
        .select_from(Item)
        .outerjoin(Annotation, Annotation.item_id == Item.id)
        .where(Item.project_id == project.id)
    )
    return db.scalar(_apply_filter(stmt, f)) or 0


def active_version(db: Session, project_id: int) -> ModelVersion | None:
    return db.scalar(
        select(ModelVersion).where(
            ModelVersion.project_id == project_id, ModelVersion.active.is_(True)
        )
    )


def meta_fields(db: Session, project: Project) -> list[str]:
    """Metadata fields parsed from file names (sorted): the project's file-name
    pattern groups plus every other top-level key on its items (but ``media``).

    The same for every export of a project, whatever the filter.
    """
    fields: set[str] = set()
    pattern = (project.settings or {}).get("case_pattern")
    if pattern:
        try:
            fields.update(k for k in compile_case_pattern(pattern).groupindex if k != "case")
        except LoupeError:
            pass
    dialect = db.get_bind().dialect.name
    keys: Iterable[Any]
    if dialect == "sqlite":
        keys = db.execute(
            text(
                "SELECT DISTINCT j.key FROM items, json_each(items.meta) AS j "
                "WHERE items.project_id = :pid AND json_type(items.meta) = 'object'"
            ),
            {"pid": project.id},
        )
    elif dialect == "postgresql":
        keys = db.execute(
            text(
                "SELECT DISTINCT jsonb_object_keys(meta) FROM items "
                "WHERE project_id = :pid AND jsonb_typeof(meta) = 'object'"
            ),
            {"pid": project.id},
        )
    else:  # pragma: no cover - other databases: read the column
        keys = (
            (k,)
            for m in db.scalars(select(Item.meta).where(Item.project_id == project.id))
            for k in (m or {})
        )
    fields.update(str(k) for (k,) in keys)
    fields.discard("media")
    return sorted(fields)


def layout_for(db: Session, project: Project, f: ExportFilter) -> ExportLayout:
    version = active_version(db, project.id)
    kind = kind_of(project.task)
    emails: dict[int, str] = dict(db.execute(select(User.id, User.email)).all())
    return ExportLayout(
        task=project.task,
        kind=kind,
        kind_columns=kind.export_columns(project.schema),
        meta_fields=tuple(meta_fields(db, project)),
        emails=emails,
        version_number=version.number if version else None,
        version_numbers=dict(
            db.execute(
                select(ModelVersion.id, ModelVersion.number).where(
                    ModelVersion.project_id == project.id
                )
            ).all()
        ),
    )


def get_project(db: Session, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    return project


def check_case(db: Session, project: Project, case_id: int | None) -> None:
    if case_id is None:
        return
    case = db.get(Case, case_id)
    if case is None or case.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"case {case_id} not found in project {project.id}")


__all__ = [
    "NONE_KIND",
    "N_FIXED",
    "PAGE",
    "ExportFilter",
    "ExportLayout",
    "active_version",
    "check_case",
    "count_rows",
    "get_project",
    "iso",
    "iter_rows",
    "layout_for",
    "meta_fields",
    "parse_when",
]
