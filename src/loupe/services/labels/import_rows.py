"""Reading a label file and matching its rows: columns, values, items, current labels.

The planning that decides each row's outcome is
:func:`loupe.services.labels.import_csv.plan_import`;
see :mod:`loupe.services.labels.import_csv` for the accepted columns.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.labels import core as label_service
from loupe.services.labels.safe_zip import MAX_LABELS_BYTES, check_archive, read_member
from loupe.tasks import kind_of
from loupe.tasks.base import DECISION_KINDS
from loupe.tasks.base import ImportColumns as KindColumns

KEY_COLUMNS = ("filename", "file_name", "file", "image", "path", "name")
MAX_FILE_BYTES = 512 * 1024**2
_IN_CHUNK = 900  # ids per IN (...) query: under SQLite's variable limit


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
            check_archive(zf, len(data), max_total=MAX_LABELS_BYTES)  # zip bombs
            return read_member(zf, "labels.csv", max_bytes=MAX_LABELS_BYTES)
    except KeyError:
        raise LoupeError(ErrorCode.INVALID, "the ZIP has no labels.csv") from None
    except zipfile.BadZipFile as exc:
        raise LoupeError(ErrorCode.INVALID, f"not a readable ZIP: {exc}") from exc


# --- matching --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportColumns:
    """Which columns of a label file hold the key, the values, the kind and the note."""

    key: str
    by_sha: bool
    filename: str | None
    kind_columns: KindColumns
    kind_column: str | None
    note_column: str | None

    @property
    def values(self) -> list[str]:
        return list(self.kind_columns.values)


def import_columns(project: Project, header: list[str]) -> ImportColumns:
    """The columns a project's import reads from ``header``; INVALID when one is missing."""
    by_sha = "sha256" in header
    filename = next((c for c in KEY_COLUMNS if c in header), None)
    if not by_sha and filename is None:
        raise LoupeError(
            ErrorCode.INVALID,
            f"the header needs a 'sha256' or a file-name column ({', '.join(KEY_COLUMNS)}); "
            f"found {header}",
        )
    return ImportColumns(
        key="sha256" if by_sha else str(filename),
        by_sha=by_sha,
        filename=filename,
        kind_columns=kind_of(project.task).import_columns(project.schema, header),
        kind_column="label_kind" if "label_kind" in header else None,
        note_column="note" if "note" in header else None,
    )


def row_value(
    project: Project, cols: ImportColumns, row: dict[str, str]
) -> label_service.LabelValue | str | None:
    """The row's label, None for an empty one, or a string saying why it is invalid."""
    note = (row.get(cols.note_column) or None) if cols.note_column else None
    kind_hint = (row.get(cols.kind_column) or "").lower() if cols.kind_column else ""
    if kind_hint in DECISION_KINDS:
        return label_service.LabelValue(kind=kind_hint, note=note)
    return kind_of(project.task).parse_import_row(project.schema, cols.kind_columns, row, note=note)


def snapshot(value: label_service.LabelValue) -> dict[str, Any]:
    """``{kind, label?, scores?}`` of a label to write (the report's ``after``)."""
    out: dict[str, Any] = {"kind": value.kind}
    if value.label is not None:
        out["label"] = value.label
    if value.scores is not None:
        out["scores"] = {k: float(v) for k, v in value.scores.items()}
    return out


def current_view(ann: Annotation | None) -> dict[str, Any] | None:
    """``{kind, origin, label?, scores?}`` of an item's label now; None when it has none."""
    if ann is None or ann.kind == label_service.NONE_KIND:
        return None
    out: dict[str, Any] = {"kind": ann.kind, "origin": ann.origin}
    if ann.label is not None:
        out["label"] = ann.label
    if ann.scores is not None:
        out["scores"] = {k: float(v) for k, v in ann.scores.items()}
    return out


def same_label(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether the current label already is ``new``."""
    if current is None:
        return False
    return all(current.get(k) == v for k, v in new.items()) and current["kind"] == new["kind"]


def describe(view: dict[str, Any] | None) -> str:
    """A label view as a short text for row messages."""
    if view is None:
        return "nothing"
    if "label" in view:
        return repr(view["label"])
    if "scores" in view:
        return ", ".join(f"{k}={v:g}" for k, v in sorted(view["scores"].items()))
    return str(view["kind"])


def item_lookup(db: Session, project: Project) -> tuple[dict[str, int], dict[str, list[int]]]:
    """The project's items by sha256 (lower case) and by file name (ids)."""
    by_sha: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    rows = db.execute(
        select(Item.id, Item.sha256, Item.filename).where(Item.project_id == project.id)
    )
    for item_id, sha, filename in rows:
        by_sha[sha.lower()] = item_id
        by_name.setdefault(filename, []).append(item_id)
    return by_sha, by_name


def annotations_of(db: Session, item_ids: Iterable[int]) -> dict[int, Annotation]:
    """The annotations of these items, by item id (read in chunks)."""
    ids = sorted(set(item_ids))
    out: dict[int, Annotation] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = ids[start : start + _IN_CHUNK]
        for ann in db.scalars(select(Annotation).where(Annotation.item_id.in_(chunk))):
            out[ann.item_id] = ann
    return out
