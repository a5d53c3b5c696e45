"""CSV export of a project: one row per item, streamed with flat memory.

Rows are read in keyset pages inside one read transaction (see
:mod:`loupe.services.exports.rows`, which also builds each row's cells), so a
100,000-item project never sits in memory and the export is a consistent
snapshot. The same rows feed the dataset ZIP (:mod:`loupe.services.exports.archive`).

Columns (``export_columns``): ``item_id, filename, sha256, case``, one
``meta_<field>`` per metadata field parsed from the file names, the human label
(``label`` for class projects, ``score_<metric>`` for score projects,
``label_data`` as JSON for masks and points), ``label_kind`` (class | scores |
unsure | skip | mask | points, empty when unlabelled), ``note``,
``labelled_by`` (e-mail), ``labelled_at``, ``label_origin`` (human, or
model_accepted: a person accepted a model's draft), ``accepted_model_version``
(that model's version number), ``label_version``,
the active model's draft (``model_version``, ``draft_label`` or
``draft_<metric>``, ``draft_confidence``, ``draft_uncertainty``), ``flagged``,
``flag_reason``, then ``format``, ``status`` and ``imported_at``. Dates are ISO
8601 in UTC; booleans are ``true``/``false``; the file is UTF-8 with a header
(and, by default, a byte-order mark so spreadsheet programs detect UTF-8).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.cells import escape_row
from loupe.services.exports.rows import (
    N_FIXED,
    NONE_KIND,
    PAGE,
    ExportFilter,
    ExportLayout,
    active_version,
    check_case,
    count_rows,
    get_project,
    iso,
    iter_rows,
    layout_for,
    meta_fields,
    parse_when,
)
from loupe.settings import Settings

CHUNK_BYTES = 1 << 16  # bytes per streamed chunk
BOM = "\ufeff"
Progress = Callable[[int, int], None]


# --- writing CSV ---------------------------------------------------------------------


class _Buffer:
    """A text sink that hands out what was written since the last ``take``."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        self._parts.append(text)
        self.size += len(text)
        return len(text)

    def take(self) -> str:
        out = "".join(self._parts)
        self._parts.clear()
        self.size = 0
        return out


def csv_text_chunks(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True, raw: bool = False
) -> Iterator[str]:
    """CSV text (``\\r\\n`` line ends, RFC 4180 quoting) in chunks of about 64 KiB.

    Text cells a spreadsheet would run as a formula get a leading ``'``
    (:mod:`loupe.services.exports.cells`) unless ``raw``.
    """
    buffer = _Buffer()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if bom:
        buffer.write(BOM)
    writer.writerow(header if raw else escape_row(header))
    for row in rows:
        writer.writerow(row if raw else escape_row(row))
        if buffer.size >= CHUNK_BYTES:
            yield buffer.take()
    tail = buffer.take()
    if tail:
        yield tail


def stream_csv(
    settings: Settings,
    project_id: int,
    f: ExportFilter = ExportFilter(),
    *,
    bom: bool = True,
    raw: bool = False,
    progress: Progress | None = None,
) -> Iterator[bytes]:
    """The project's CSV as UTF-8 byte chunks, read in a session of its own.

    Checks (project, case) happen on the first ``next()``; call
    :func:`check_export` first to fail before a response has started.
    """
    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        check_case(db, project, f.case_id)
        layout = layout_for(db, project, f)
        total = count_rows(db, project, f) if progress is not None else 0
        done = 0

        def cells() -> Iterator[list[Any]]:
            nonlocal done
            for row in iter_rows(db, project, layout, f):
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress(done, total)
                yield layout.cells(row)

        for text in csv_text_chunks(layout.columns, cells(), bom=bom, raw=raw):
            yield text.encode("utf-8")
        if progress is not None:
            progress(done, total)


def check_export(settings: Settings, project_id: int, f: ExportFilter) -> None:
    """Raise ``LoupeError`` now for a missing project or a case of another project."""
    if f.since is not None and f.until is not None and f.until <= f.since:
        raise LoupeError(ErrorCode.INVALID, f"until ({iso(f.until)}) must be after since")
    with session_scope(settings.db_url, write=False) as db:
        check_case(db, get_project(db, project_id), f.case_id)


def write_csv(
    settings: Settings,
    project_id: int,
    out: Path,
    f: ExportFilter = ExportFilter(),
    *,
    bom: bool = True,
    raw: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Write the CSV to ``out`` (through a temporary file, renamed when complete)."""
    check_export(settings, project_id, f)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        with tmp.open("wb") as handle:
            for chunk in stream_csv(settings, project_id, f, bom=bom, raw=raw, progress=progress):
                handle.write(chunk)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def export_basename(project_name: str, suffix: str, when: dt.datetime | None = None) -> str:
    """A safe file name such as ``Fibrosis-study-20250301-093000.csv``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", project_name).strip("-._") or "project"
    stamp = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{slug[:60]}-{stamp}{suffix}"


__all__ = [
    "BOM",
    "NONE_KIND",
    "N_FIXED",
    "PAGE",
    "ExportFilter",
    "ExportLayout",
    "active_version",
    "check_case",
    "check_export",
    "count_rows",
    "csv_text_chunks",
    "export_basename",
    "get_project",
    "iso",
    "iter_rows",
    "layout_for",
    "meta_fields",
    "parse_when",
    "stream_csv",
    "write_csv",
]
