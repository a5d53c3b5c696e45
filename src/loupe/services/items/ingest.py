"""Import images and volumes into a project (CLI, browser uploads, import jobs).

``ingest_paths`` walks files and folders; each file is probed (headers only),
hashed and thumbnailed in a thread pool (Pillow, tifffile and hashlib release
the GIL) and the items are written ``BATCH`` at a time, one short
transaction each, so a SQLite writer lock is never held while files are read.

Rules, in one place:

* **Dedupe**: an item is its content (sha256, unique per project). Importing
  the same bytes again, under any name, returns the existing item, counted in
  ``existing``. An existing item is never rewritten and its label is never
  touched; it only gains what it lacked: a case (with the parsed name fields)
  if it had none, and a new location if its file has gone from disk (a moved
  or renamed folder is re-linked).
* **Cases**, first rule that applies: an explicit ``case_name``; else a
  ``case_pattern`` (the argument, or the project's ``case_pattern`` setting)
  searched in the file name, whose group ``case`` names the case and whose
  other named groups go into ``item.meta`` (a name it misses gets no case and
  ``meta['case_pattern'] == 'no match'``); else the first folder below the
  folder given (files directly in it, or given one by one, get none). Cases
  are created on demand.
* **DICOM**: all DICOM files of one call are grouped by SeriesInstanceUID into
  one volume item per series; its sha256 is the sha256 of the sorted per-file
  hashes, its uri the first file and ``item.files`` all files, sorted.
* **Failures** (corrupt, truncated, empty, not an image, decompression bomb,
  or an unexpected error on that file) are reported per file and skipped.
* **Thumbnails**: JPEG, content-addressed in ``thumbs/``, made once.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from sqlalchemy import select

from loupe.db.models import Item, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.chunks import register_chunked_kind
from loupe.jobs.context import JobContext
from loupe.media import MediaError, iter_media_files
from loupe.services.items.ingest_files import (
    NOT_MEDIA,
    DicomFile,
    Probed,
    Source,
    group_dicom,
    prepare_file,
    prepare_series,
)
from loupe.services.items.ingest_plan import (
    CHUNK_FILES,
    plan_chunks,
    sources_from_json,
    sources_to_json,
)
from loupe.services.items.ingest_rows import (
    BATCH,
    NO_MATCH,
    CaseRule,
    IngestReport,
    ItemWriter,
)
from loupe.services.items.uploads import SavedUpload as SavedUpload
from loupe.services.items.uploads import UploadSink as UploadSink
from loupe.services.items.uploads import save_upload as save_upload
from loupe.services.items.uploads import save_upload_info as save_upload_info
from loupe.services.items.uploads import upload_folder_case
from loupe.services.projects.case_pattern import compile_case_pattern
from loupe.services.volumes.zip_series import expand_zips, is_zip, upload_zip_sources
from loupe.settings import Settings

__all__ = [
    "BATCH",
    "NOT_MEDIA",
    "NO_MATCH",
    "CaseRule",
    "IngestReport",
    "SavedUpload",
    "Source",
    "UploadSink",
    "collect_sources",
    "compile_case_pattern",
    "ingest_paths",
    "ingest_sources",
    "ingest_uploaded",
    "finish_ingest_job",
    "plan_ingest_job",
    "run_ingest_chunk",
    "save_upload",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
T = TypeVar("T")
R = TypeVar("R")


def ingest_paths(
    settings: Settings,
    project_id: int,
    paths: Iterable[str | os.PathLike[str]],
    *,
    case_pattern: str | None = None,
    case_name: str | None = None,
    user_id: int | None = None,
    progress: Progress | None = None,
    copy: bool = False,
) -> IngestReport:
    """Import files and folders (recursively) into project ``project_id``.

    Files are referenced in place (``item.uri`` is the absolute path) unless
    ``copy``, which copies them into the content-addressed media folder.
    ``progress(done, total, path)`` is called as files finish. Raises
    ``LoupeError`` only for a bad request (unknown project, invalid pattern);
    a problem with one file ends up in ``IngestReport.failed``.
    """
    rule = case_rule(settings, project_id, case_pattern=case_pattern, case_name=case_name)
    sources, missing = collect_sources(expand_zips(settings, paths))  # a ZIP of a series
    report = ingest_sources(
        settings, project_id, sources, rule=rule, user_id=user_id, progress=progress, copy=copy
    )
    report.failed[:0] = missing
    return report


def case_rule(
    settings: Settings,
    project_id: int,
    *,
    case_pattern: str | None = None,
    case_name: str | None = None,
) -> CaseRule:
    """The case rule of an import; checks that the project exists and the pattern is valid."""
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        pattern = case_pattern or (project.settings or {}).get("case_pattern") or None
    name = (case_name or "").strip() or None
    return CaseRule(name=name, pattern=compile_case_pattern(pattern) if pattern else None)


def collect_sources(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[Source], list[dict[str, str]]]:
    """Expand files and folders (recursively, sorted) into sources; missing paths fail."""
    sources: list[Source] = []
    missing: list[dict[str, str]] = []
    seen: set[Path] = set()
    for raw in paths:
        given = Path(os.path.abspath(Path(raw).expanduser()))
        if given.is_dir():
            for path in iter_media_files(given):
                parts = path.relative_to(given).parts
                if path not in seen:
                    seen.add(path)
                    folder = parts[0] if len(parts) > 1 else None
                    sources.append(Source(path, path.name, str(path), folder))
        elif given.is_file():
            if given not in seen:
                seen.add(given)
                sources.append(Source(given, given.name, str(given)))
        else:
            missing.append({"path": str(raw), "reason": "file not found"})
    return sources, missing


def ingest_sources(
    settings: Settings,
    project_id: int,
    sources: Sequence[Source],
    *,
    rule: CaseRule,
    user_id: int | None = None,
    progress: Progress | None = None,
    copy: bool = False,
    writer: ItemWriter | None = None,
) -> IngestReport:
    """Import prepared sources: the core shared by paths, uploads and jobs."""
    writer = writer or ItemWriter(settings, project_id, rule, user_id)
    report = writer.report
    total, done = len(sources), 0
    dicom: list[Source] = []

    def step(label: str, n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total, label)

    def one_file(source: Source) -> Probed | DicomFile | str:
        return _guard(source.label, lambda: prepare_file(settings, source, copy=copy))

    def one_lone_dicom(source: Source) -> Probed | DicomFile | str:
        return _guard(
            source.label, lambda: prepare_file(settings, source, copy=copy, defer_dicom=False)
        )

    def one_series(group: list[Source]) -> Probed | str:
        return _guard(group[0].label, lambda: prepare_series(settings, group, copy=copy))

    with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="ingest") as pool:
        for source, outcome in _imap(pool, one_file, sources):
            if isinstance(outcome, DicomFile):
                dicom.append(source)
                continue
            if isinstance(outcome, str):
                report.fail(source.label, outcome)
            else:
                writer.add(outcome)
            step(source.label)
        if dicom:
            series, lone = group_dicom(dicom)
            for source, outcome in _imap(pool, one_lone_dicom, lone):
                if isinstance(outcome, str):
                    report.fail(source.label, outcome)
                elif not isinstance(outcome, DicomFile):
                    writer.add(outcome)
                step(source.label)
            for group, result in _imap(pool, one_series, series):
                if isinstance(result, str):
                    for source in group:
                        report.fail(source.label, result)
                else:
                    writer.add(result)
                step(group[0].label, len(group))
        writer.flush()
    return report


def _workers() -> int:
    # A thread more than the cores hides file-system latency; the work is mostly GIL-free.
    return max(2, min(8, (os.cpu_count() or 2) + 1))


def _imap(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Sequence[T], window: int = 64
) -> Iterator[tuple[T, R]]:
    """``pool.map`` in order with at most ``window`` tasks in flight (bounded memory)."""
    pending: deque[tuple[T, Future[R]]] = deque()
    queue = iter(items)
    for item in queue:
        pending.append((item, pool.submit(fn, item)))
        if len(pending) >= window:
            break
    while pending:
        item, future = pending.popleft()
        for nxt in queue:
            pending.append((nxt, pool.submit(fn, nxt)))
            break
        yield item, future.result()


def _guard(label: str, work: Callable[[], T]) -> T | str:
    """Run one file's work; a failure becomes that file's reason, never an abort."""
    try:
        return work()
    except MediaError as exc:
        return exc.reason
    except Exception as exc:  # one bad file must not stop the others
        log.warning("ingest: unexpected error on %s", label, exc_info=True)
        return str(exc) or type(exc).__name__


# --- Uploads -------------------------------------------------------------------------


def ingest_uploaded(
    settings: Settings,
    project_id: int,
    uploads: Sequence[SavedUpload | tuple[Path, str]],
    *,
    case_pattern: str | None = None,
    case_name: str | None = None,
    user_id: int | None = None,
) -> IngestReport:
    """Import saved uploads; reports name each file by its original ``filename``.

    ``item.filename`` is the original name (without folders). A ZIP is expanded
    (:func:`~loupe.services.volumes.zip_series.upload_zip_sources`: one DICOM series
    per ZIP, its item named after the ZIP). Files this upload created that end up
    referenced by no item (failed, or already present from elsewhere) are deleted again.
    """
    saved = [u if isinstance(u, SavedUpload) else SavedUpload(u[0], u[1], False) for u in uploads]
    rule = case_rule(settings, project_id, case_pattern=case_pattern, case_name=case_name)
    writer = ItemWriter(settings, project_id, rule, user_id)
    sources: list[Source] = []
    for u in saved:
        folder_case = upload_folder_case(u.filename)
        if is_zip(u.path):  # a ZIP of one DICOM series (or of volumes): its files
            try:
                sources += upload_zip_sources(settings, u.path, u.filename, folder_case=folder_case)
            except LoupeError as exc:
                writer.report.fail(u.filename, exc.message)
            continue
        name = PurePosixPath(u.filename.replace("\\", "/")).name or u.path.name
        sources.append(Source(u.path, name, u.filename, folder_case))
    report = ingest_sources(settings, project_id, sources, rule=rule, writer=writer)
    discard_unreferenced(settings, [u.path for u in saved if u.created], keep=writer.linked)
    return report


def discard_unreferenced(settings: Settings, paths: Iterable[Path], *, keep: set[str]) -> None:
    """Delete media files no item points at (``keep``: paths known to be referenced)."""
    candidates = [p for p in paths if str(p) not in keep]
    if not candidates:
        return
    with session_scope(settings.db_url, write=False) as db:
        used = set(db.scalars(select(Item.uri).where(Item.uri.in_([str(p) for p in candidates]))))
    for path in candidates:
        if str(path) not in used:
            path.unlink(missing_ok=True)


# --- Job -----------------------------------------------------------------------------
# ``ingest`` is a chunked job (loupe.jobs.chunks): the parent walks the folders,
# chunks of ~500 files are hashed, probed and thumbnailed by any number of
# workers, and the parent sums their reports. A small import runs in one job.


def plan_ingest_job(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Walk ``params['paths']``; one chunk's params per ~``chunk_size`` files.

    Params: ``project_id``, ``paths``; optional ``case_pattern``, ``case_name``,
    ``user_id``, ``copy``, ``chunk_size`` (default 500). Paths that do not
    exist are kept for the final report (``params['_missing']`` of chunk 0).
    """
    project_id = int(params["project_id"])
    case_rule(  # fail fast on an unknown project or a bad pattern
        settings, project_id, case_pattern=params.get("case_pattern")
    )
    ctx.progress(0.0, "listing files")
    sources, missing = collect_sources(expand_zips(settings, [str(p) for p in params["paths"]]))
    size = int(params.get("chunk_size") or CHUNK_FILES)
    common = {k: params.get(k) for k in ("project_id", "case_pattern", "case_name", "user_id")}
    common["copy"] = bool(params.get("copy", False))
    chunks = [
        {**common, "files": sources_to_json(part)} for part in plan_chunks(sources, size=size)
    ]
    if not chunks:
        chunks = [{**common, "files": []}]
    chunks[0]["missing"] = missing
    return chunks


def run_ingest_chunk(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Import one chunk's files; return its report JSON (with ``missing`` paths first)."""
    sources = sources_from_json(params["files"])

    def progress(done: int, total: int, label: str) -> None:
        ctx.check_cancelled()
        ctx.progress(done / total if total else 1.0, f"{done}/{total} {Path(label).name}")

    rule = case_rule(
        settings,
        int(params["project_id"]),
        case_pattern=params.get("case_pattern"),
        case_name=params.get("case_name"),
    )
    report = ingest_sources(
        settings,
        int(params["project_id"]),
        sources,
        rule=rule,
        user_id=params.get("user_id"),
        progress=progress,
        copy=bool(params.get("copy", False)),
    )
    report.failed[:0] = list(params.get("missing") or [])
    return report.to_json()


def finish_ingest_job(
    settings: Settings,
    ctx: JobContext,
    params: dict[str, Any],
    results: list[dict[str, Any] | None],
) -> dict[str, Any]:
    """The import's report: the chunks' reports summed (failures in file order)."""
    total: dict[str, Any] = {"imported": 0, "existing": 0, "failed": []}
    for part in results:
        part = part or {}
        total["imported"] += int(part.get("imported", 0))
        total["existing"] += int(part.get("existing", 0))
        total["failed"].extend(part.get("failed", []))
    if len(results) > 1:
        total["chunks"] = len(results)
    return total


register_chunked_kind(
    "ingest", plan=plan_ingest_job, chunk=run_ingest_chunk, finalize=finish_ingest_job
)
