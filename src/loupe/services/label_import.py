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

Writes go through :func:`loupe.services.labels.set_label` with
``source='import'``, so the audit trail records each change; a label changed
by someone between planning and writing becomes a ``conflict``.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services import labels as label_service
from loupe.services.project_schema import class_names, validate_label
from loupe.settings import Settings

KEY_COLUMNS = ("filename", "file_name", "file", "image", "path", "name")
LABEL_COLUMNS = ("label", "class")
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
MAX_FILE_BYTES = 512 * 1024**2
_IN_CHUNK = 900  # ids per IN (...) query: under SQLite's variable limit


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


# --- reading the file ------------------------------------------------------------------


def read_table(source: bytes | str | Path | IO[bytes]) -> tuple[list[str], list[dict[str, str]]]:
    """Header (lower-cased, stripped) and rows of a CSV (UTF-8, BOM optional).

    A ZIP (Loupe's dataset export) is read through its ``labels.csv``.
    """
    if isinstance(source, Path):
        data = source.read_bytes()
    elif isinstance(source, str):
        data = source.encode("utf-8")
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise LoupeError(ErrorCode.TOO_LARGE, f"label files are limited to {MAX_FILE_BYTES} bytes")
    if data[:4] == b"PK\x03\x04":
        data = _labels_from_zip(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"the file is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise LoupeError(ErrorCode.INVALID, "the file is empty: it needs a header row") from None
    rows = [dict(zip(header, (c.strip() for c in cells), strict=False)) for cells in reader]
    return header, [r for r in rows if any(r.values())]


def _labels_from_zip(data: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return zf.read("labels.csv")
    except KeyError:
        raise LoupeError(ErrorCode.INVALID, "the ZIP has no labels.csv") from None
    except zipfile.BadZipFile as exc:
        raise LoupeError(ErrorCode.INVALID, f"not a readable ZIP: {exc}") from exc


# --- planning --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    key: str
    by_sha: bool
    filename: str | None
    values: list[str]
    metric_columns: dict[str, str]
    kind_column: str | None
    note_column: str | None


def _columns(project: Project, header: list[str]) -> _Columns:
    by_sha = "sha256" in header
    filename = next((c for c in KEY_COLUMNS if c in header), None)
    if not by_sha and filename is None:
        raise LoupeError(
            ErrorCode.INVALID,
            f"the header needs a 'sha256' or a file-name column ({', '.join(KEY_COLUMNS)}); "
            f"found {header}",
        )
    kind_column = "label_kind" if "label_kind" in header else None
    note_column = "note" if "note" in header else None
    if project.task == "classify":
        label = next((c for c in LABEL_COLUMNS if c in header), None)
        if label is None:
            raise LoupeError(
                ErrorCode.INVALID, f"the header needs a 'label' column; found {header}"
            )
        values, metric_columns = [label], dict[str, str]()
    elif project.task == "score":
        metric_columns = dict[str, str]()
        for m in (m["name"] for m in project.schema.get("metrics", [])):
            for candidate in (f"score_{m}".lower(), m.lower()):
                if candidate in header:
                    metric_columns[m] = candidate
                    break
        if not metric_columns:
            raise LoupeError(
                ErrorCode.INVALID,
                "the header names none of the project's metrics "
                f"({[m['name'] for m in project.schema.get('metrics', [])]}); found {header}",
            )
        values = list(metric_columns.values())
    else:
        raise LoupeError(
            ErrorCode.INVALID,
            f"CSV label import is for class and score projects, not {project.task}",
        )
    return _Columns(
        key="sha256" if by_sha else str(filename),
        by_sha=by_sha,
        filename=filename,
        values=values,
        metric_columns=metric_columns,
        kind_column=kind_column,
        note_column=note_column,
    )


def _value(
    project: Project, cols: _Columns, row: dict[str, str], classes: dict[str, str]
) -> label_service.LabelValue | str | None:
    """The row's label, None for an empty one, or a string saying why it is invalid."""
    note = (row.get(cols.note_column) or None) if cols.note_column else None
    kind_hint = (row.get(cols.kind_column) or "").lower() if cols.kind_column else ""
    if kind_hint in ("unsure", "skip"):
        return label_service.LabelValue(kind=kind_hint, note=note)
    if project.task == "classify":
        raw = row.get(cols.values[0], "")
        if not raw:
            return None
        if raw.lower() in ("unsure", "skip"):
            return label_service.LabelValue(kind=raw.lower(), note=note)
        name = classes.get(raw) or classes.get(raw.casefold())
        if name is None:
            known = ", ".join(sorted(set(classes.values())))
            return f"{raw!r} is not a class of this project ({known})"
        return label_service.LabelValue(kind="class", label=name, note=note)
    scores: dict[str, float] = {}
    for metric, column in cols.metric_columns.items():
        raw = row.get(column, "")
        if not raw:
            continue
        try:
            value = float(raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw)
        except ValueError:
            return f"score {metric!r}={raw!r} is not a number"
        if math.isnan(value):
            return f"score {metric!r} is NaN"
        scores[metric] = value
    if not scores:
        return None
    try:
        validate_label(project.task, project.schema, kind="scores", scores=scores)
    except LoupeError as exc:
        return exc.message
    return label_service.LabelValue(kind="scores", scores=scores, note=note)


def _snapshot(value: label_service.LabelValue) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": value.kind}
    if value.label is not None:
        out["label"] = value.label
    if value.scores is not None:
        out["scores"] = {k: float(v) for k, v in value.scores.items()}
    return out


def _current_view(ann: Annotation | None) -> dict[str, Any] | None:
    if ann is None or ann.kind == label_service.NONE_KIND:
        return None
    out: dict[str, Any] = {"kind": ann.kind, "origin": ann.origin}
    if ann.label is not None:
        out["label"] = ann.label
    if ann.scores is not None:
        out["scores"] = {k: float(v) for k, v in ann.scores.items()}
    return out


def _same(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if current is None:
        return False
    return all(current.get(k) == v for k, v in new.items()) and current["kind"] == new["kind"]


def _describe(view: dict[str, Any] | None) -> str:
    if view is None:
        return "nothing"
    if "label" in view:
        return repr(view["label"])
    if "scores" in view:
        return ", ".join(f"{k}={v:g}" for k, v in sorted(view["scores"].items()))
    return str(view["kind"])


def _lookup(db: Session, project: Project) -> tuple[dict[str, int], dict[str, list[int]]]:
    by_sha: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    rows = db.execute(
        select(Item.id, Item.sha256, Item.filename).where(Item.project_id == project.id)
    )
    for item_id, sha, filename in rows:
        by_sha[sha.lower()] = item_id
        by_name.setdefault(filename, []).append(item_id)
    return by_sha, by_name


def _annotations(db: Session, item_ids: Iterable[int]) -> dict[int, Annotation]:
    ids = sorted(set(item_ids))
    out: dict[int, Annotation] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for ann in db.scalars(select(Annotation).where(Annotation.item_id.in_(chunk))):
            out[ann.item_id] = ann
    return out


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
    cols = _columns(project, header)
    report = ImportReport(
        dry_run=dry_run, overwrite=overwrite, key_column=cols.key, value_columns=cols.values
    )
    classes: dict[str, str] = {}
    if project.task == "classify":
        for name in class_names(project.schema):
            classes[name] = name
            classes.setdefault(name.casefold(), name)
    by_sha, by_name = _lookup(db, project)
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
        matched.append((out, _value(project, cols, row, classes)))
    current = _annotations(db, [r.item_id for r, _ in matched if r.item_id is not None])
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
        view = _current_view(ann)
        new = _snapshot(value)
        out.before, out.after = view, new
        if _same(view, new):
            out.status, out.message = "unchanged", f"already {_describe(view)}"
            continue
        verb = "would" if dry_run else "did"
        if view is not None and view.get("origin") == label_service.HUMAN:
            if not overwrite:
                out.status = "conflict"
                out.message = (
                    f"has the human label {_describe(view)}; kept (overwrite=True "
                    f"{'would replace' if dry_run else 'replaces'} it with {_describe(new)})"
                )
                continue
            out.status = "overwrite"
            out.message = f"{verb} replace the human label {_describe(view)} with {_describe(new)}"
        else:
            out.status = "set"
            out.message = f"{verb} set {_describe(new)}" + (
                f" (was the model's {_describe(view)})" if view is not None else ""
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
