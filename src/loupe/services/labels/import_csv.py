"""Import existing labels from a CSV file, with a dry run that changes nothing.

Rows find their item by ``sha256`` (exact) or, without one, by file name
(``filename``, ``file_name``, ``file``, ``image``, ``path`` or ``name``; a path
counts by its last part). The value is ``label`` / ``class`` for class
projects (``unsure`` and ``skip`` are accepted) and one column per metric
(``<metric>`` or ``score_<metric>``) for score projects, so Loupe's own CSV
export re-imports as is. An optional ``note`` column is kept with the label.

Every row gets an outcome (``ImportRow.status``):

* ``set``: the item gets this label (dry run: would get it);
* ``unchanged``: the item already has exactly this label;
* ``conflict``: the item has a different *human* label, which is kept; with
  ``overwrite=True`` the row is ``overwrite`` and replaces it instead;
* ``unknown_item``, ``ambiguous`` (the file name matches several items),
  ``invalid`` (not a class / score of the project), ``no_label`` (empty
  value), ``duplicate`` (the item was already given by an earlier row).

Writes go through :func:`loupe.services.labels.core.set_label` with
``source='import'``, so the audit trail records each change; a label changed
by someone between planning and writing becomes a ``conflict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy.orm import Session

from loupe.db.models import Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.cells import unescape_cell
from loupe.services.labels import core as label_service
from loupe.services.labels.import_rows import KEY_COLUMNS as KEY_COLUMNS
from loupe.services.labels.import_rows import MAX_FILE_BYTES as MAX_FILE_BYTES
from loupe.services.labels.import_rows import (
    annotations_of,
    current_view,
    describe,
    import_columns,
    item_lookup,
    read_table,
    row_value,
    same_label,
    snapshot,
)
from loupe.settings import Settings

STATUSES = (
    "set",
    "overwrite",
    "unchanged",
    "conflict",
    "unknown_item",
    "ambiguous",
    "invalid",
    "no_label",
    "duplicate",
)
WRITES = frozenset({"set", "overwrite"})


@dataclass
class ImportRow:
    row: int  # 1-based line number of the data row (the header is line 1)
    key: str
    status: str
    item_id: int | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "key": self.key,
            "status": self.status,
            "item_id": self.item_id,
            "before": self.before,
            "after": self.after,
            "message": self.message,
        }


@dataclass
class ImportReport:
    dry_run: bool
    overwrite: bool
    key_column: str
    value_columns: list[str]
    rows: list[ImportRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            out[r.status] += 1
        return out

    @property
    def changed(self) -> int:
        """Labels written (dry run: that would be written)."""
        return sum(1 for r in self.rows if r.status in WRITES)

    def to_json(self, max_rows: int | None = None) -> dict[str, Any]:
        rows = self.rows if max_rows is None else self.rows[:max_rows]
        return {
            "dry_run": self.dry_run,
            "overwrite": self.overwrite,
            "key_column": self.key_column,
            "value_columns": self.value_columns,
            "total": len(self.rows),
            "changed": self.changed,
            "counts": self.counts,
            "rows": [r.to_json() for r in rows],
            "truncated": len(rows) < len(self.rows),
        }


def plan_import(
    db: Session,
    project: Project,
    header: list[str],
    rows: list[dict[str, str]],
    *,
    overwrite: bool = False,
    dry_run: bool = True,
) -> tuple[ImportReport, dict[int, tuple[label_service.LabelValue, int]]]:
    """Decide every row's outcome; return the report and ``{item_id: (value, version)}``
    for the rows to write."""
    cols = import_columns(project, header)
    report = ImportReport(
        dry_run=dry_run, overwrite=overwrite, key_column=cols.key, value_columns=cols.values
    )
    by_sha, by_name = item_lookup(db, project)
    matched: list[tuple[ImportRow, label_service.LabelValue | str | None]] = []
    for n, row in enumerate(rows, start=2):
        sha = (row.get("sha256") or "").lower() if cols.by_sha else ""
        raw_name = row.get(cols.filename) or "" if cols.filename else ""
        name = PurePosixPath(raw_name.replace("\\", "/")).name
        key = sha or name
        out = ImportRow(row=n, key=key, status="unknown_item")
        report.rows.append(out)
        if sha:
            out.item_id = by_sha.get(sha)
        elif name:
            candidates = by_name.get(name, [])
            if len(candidates) > 1:
                out.status, out.message = "ambiguous", f"{len(candidates)} items are named {name!r}"
                continue
            out.item_id = candidates[0] if candidates else None
        if out.item_id is None:
            out.message = f"no item with {'sha256' if sha else 'file name'} {key!r}"
            continue
        matched.append((out, row_value(project, cols, row)))
    current = annotations_of(db, [r.item_id for r, _ in matched if r.item_id is not None])
    planned: dict[int, tuple[label_service.LabelValue, int]] = {}
    first_row: dict[int, int] = {}
    for out, value in matched:
        assert out.item_id is not None
        if isinstance(value, str):
            out.status, out.message = "invalid", value
            continue
        if value is None:
            out.status, out.message = "no_label", "no label in this row: nothing to do"
            continue
        if out.item_id in first_row:
            out.status = "duplicate"
            out.message = f"item already given in row {first_row[out.item_id]}; row ignored"
            continue
        first_row[out.item_id] = out.row
        ann = current.get(out.item_id)
        view = current_view(ann)
        new = snapshot(value)
        out.before, out.after = view, new
        if same_label(view, new):
            out.status, out.message = "unchanged", f"already {describe(view)}"
            continue
        verb = "would" if dry_run else "did"
        if view is not None and view.get("origin") in label_service.PERSON_ORIGINS:
            if not overwrite:
                out.status = "conflict"
                out.message = (
                    f"has the human label {describe(view)}; kept (overwrite=True "
                    f"{'would replace' if dry_run else 'replaces'} it with {describe(new)})"
                )
                continue
            out.status = "overwrite"
            out.message = f"{verb} replace the human label {describe(view)} with {describe(new)}"
        else:
            out.status = "set"
            out.message = f"{verb} set {describe(new)}" + (
                f" (was the model's {describe(view)})" if view is not None else ""
            )
        planned[out.item_id] = (value, ann.version if ann is not None else 0)
    return report, planned


def import_labels(
    settings: Settings,
    project_id: int,
    source: bytes | str | Path | IO[bytes],
    *,
    dry_run: bool = False,
    overwrite: bool = False,
    user_id: int | None = None,
) -> ImportReport:
    """Import labels from a CSV (or a dataset ZIP's ``labels.csv``) into a project.

    ``dry_run`` plans only: nothing is written. Returns the per-row report.
    """
    header, rows = read_table(source)
    # A Loupe export escapes formula-like text ('=x); read it back as it was.
    header = [unescape_cell(h) for h in header]
    rows = [{unescape_cell(k): unescape_cell(v) for k, v in r.items()} for r in rows]
    with session_scope(settings.db_url, write=not dry_run) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        report, planned = plan_import(
            db, project, header, rows, overwrite=overwrite, dry_run=dry_run
        )
        if dry_run or not planned:
            return report
        apply_plan(db, project, report, planned, user_id=user_id)
    return report


def apply_plan(
    db: Session,
    project: Project,
    report: ImportReport,
    planned: dict[int, tuple[label_service.LabelValue, int]],
    *,
    user_id: int | None,
) -> None:
    """Write the planned labels (source 'import'); a label that changed since the
    plan becomes a conflict."""
    by_item = {r.item_id: r for r in report.rows if r.status in WRITES}
    for item_id, (value, version) in planned.items():
        try:
            with db.begin_nested():
                label_service.set_label(
                    db,
                    project,
                    item_id,
                    value,
                    user_id=user_id,
                    expected_version=version,
                    source="import",
                )
        except LoupeError as exc:
            if exc.code not in (ErrorCode.STALE_VERSION, ErrorCode.HUMAN_LABEL_PROTECTED):
                raise
            row = by_item[item_id]
            row.status, row.message = "conflict", f"changed by someone meanwhile: {exc.message}"
