"""Uploads from the browser and server-side folder imports.

The multipart body is parsed as it streams in: each file goes straight to the
media folder in chunks (hashed on the way), so neither memory nor a spool file
ever holds a whole upload, and a file past the size limit stops the request
with 413 the moment it crosses the limit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from loupe.api.deps import AdminUser, AnnotatorProject, CurrentUser, SessionDep, SettingsDep
from loupe.api.schemas.common import ErrorResponse
from loupe.api.schemas.uploads import ImportCreate, ImportJobPublic, IngestReportPublic
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs import core as job_service
from loupe.services.items import ingest
from loupe.settings import Settings

router = APIRouter(tags=["uploads"])

FILE_FIELDS = frozenset({"files", "file"})
TEXT_FIELDS = frozenset({"case", "case_pattern"})
MAX_FILES = 10_000
MAX_TEXT_BYTES = 4096
_WRITE_BUFFER = 1 << 20  # hand file data to a thread 1 MiB at a time

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more image files; a name 'root/case/x.tif' "
                            "(a folder upload) puts the file in case 'case'",
                        },
                        "case": {"type": "string", "description": "Put every file in this case"},
                        "case_pattern": {
                            "type": "string",
                            "description": "Regex on file names with a group (?P<case>...)",
                        },
                    },
                }
            }
        },
    }
}


class _StreamingForm:
    """Multipart callbacks that write file parts to ``UploadSink`` objects.

    The parser's callbacks are synchronous; file bytes are buffered and written
    by :meth:`drain` in a worker thread so the event loop never waits on disk.
    """

    def __init__(self, settings: Settings, charset: str = "utf-8") -> None:
        self.settings = settings
        self.charset = charset
        self.fields: dict[str, str] = {}
        self.saved: list[ingest.SavedUpload] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._text: bytearray | None = None
        self._sink: ingest.UploadSink | None = None
        self._part_bytes = 0  # bytes of the current file part received so far
        self._buffer = bytearray()
        self._ops: list[tuple[ingest.UploadSink, bytes | None]] = []  # None: finish
        self._open: list[ingest.UploadSink] = []  # sinks not finished yet

    # -- parser callbacks (sync, no I/O) --
    def on_part_begin(self) -> None:
        self._disposition = b""
        self._name = ""
        self._text = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = self._decode(options.get(b"name", b""))
        if b"filename" in options:
            if self._name not in FILE_FIELDS:
                raise LoupeError(ErrorCode.INVALID, f"unexpected file field {self._name!r}")
            if len(self._open) + len(self.saved) >= MAX_FILES:
                raise LoupeError(ErrorCode.TOO_LARGE, f"at most {MAX_FILES} files per upload")
            filename = self._decode(options[b"filename"]) or "upload"
            self._sink = ingest.UploadSink(
                self.settings, filename, max_bytes=self.settings.max_upload_bytes
            )
            self._open.append(self._sink)
            self._part_bytes = 0
        else:
            self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._buffer += data[start:end]
            self._part_bytes += end - start
            if self._part_bytes > self._sink.max_bytes:
                # Stop now, not when the buffer reaches the sink: no byte past the limit.
                self._sink.write(bytes(self._buffer))  # raises TOO_LARGE, removes the file
            if len(self._buffer) >= _WRITE_BUFFER:
                self._queue_buffer()
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_BYTES:
                raise LoupeError(ErrorCode.INVALID, f"form field {self._name!r} is too long")

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._queue_buffer()
            self._ops.append((self._sink, None))
            self._sink = None
        elif self._text is not None and self._name in TEXT_FIELDS:
            self.fields[self._name] = self._decode(bytes(self._text))

    def _queue_buffer(self) -> None:
        assert self._sink is not None
        if self._buffer:
            self._ops.append((self._sink, bytes(self._buffer)))
            self._buffer.clear()

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except (UnicodeDecodeError, LookupError):
            return raw.decode("latin-1")

    @property
    def has_pending(self) -> bool:
        return bool(self._ops)

    @property
    def unfinished(self) -> bool:
        return bool(self._open)

    # -- I/O, in a worker thread --
    def drain(self) -> None:
        ops, self._ops = self._ops, []
        for sink, chunk in ops:
            if chunk is None:
                self.saved.append(sink.finish())
                self._open.remove(sink)
            else:
                sink.write(chunk)

    def abort(self) -> None:
        """Remove everything this request wrote: partial files and finished ones."""
        for sink in self._open:
            sink.abort()
        for upload in self.saved:
            if upload.created:
                upload.path.unlink(missing_ok=True)
        self._open.clear()
        self._ops.clear()


MAX_CASE_NAME = 300  # Case.name's column


def _check_text_fields(fields: dict[str, str]) -> None:
    """Refuse what the database would refuse, before any item is written."""
    if "\x00" in fields.get("case", "") + fields.get("case_pattern", ""):
        raise LoupeError(ErrorCode.INVALID, "form fields must not contain NUL characters")
    if len(fields.get("case", "")) > MAX_CASE_NAME:
        raise LoupeError(ErrorCode.INVALID, f"case names have at most {MAX_CASE_NAME} characters")


async def _receive_files(request: Request, settings: Settings) -> _StreamingForm:
    ctype, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise LoupeError(
            ErrorCode.INVALID, "send the files as multipart/form-data in the field 'files'"
        )
    charset = options.get(b"charset", b"utf-8").decode("latin-1")
    form = _StreamingForm(settings, charset)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": form.on_part_begin,
            "on_part_data": form.on_part_data,
            "on_part_end": form.on_part_end,
            "on_header_field": form.on_header_field,
            "on_header_value": form.on_header_value,
            "on_header_end": form.on_header_end,
            "on_headers_finished": form.on_headers_finished,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if form.has_pending:
                await run_in_threadpool(form.drain)
        parser.finalize()
        await run_in_threadpool(form.drain)
        if form.unfinished:
            raise LoupeError(
                ErrorCode.INVALID, "incomplete multipart body (a file part never ended)"
            )
    except FormParserError as exc:
        await run_in_threadpool(form.abort)
        raise LoupeError(ErrorCode.INVALID, f"malformed multipart body: {exc}") from exc
    except BaseException:
        await run_in_threadpool(form.abort)
        raise
    return form


@router.post(
    "/projects/{project_id}/uploads",
    response_model=IngestReportPublic,
    openapi_extra=_UPLOAD_BODY,
    responses={413: {"model": ErrorResponse, "description": "A file is over the size limit"}},
)
async def upload_files(
    request: Request,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> IngestReportPublic:
    """Upload image files (multipart field ``files``) and import them into the project.

    Optional form fields: ``case`` (put every file in that case) and
    ``case_pattern``. Files that cannot be read are listed in ``failed`` with
    their original names; the rest are imported.
    """
    # End the request's transaction now: on SQLite it holds the write lock, and the
    # import writes its batches in transactions of its own.
    await run_in_threadpool(db.commit)
    project_id, user_id = project.id, user.id
    form = await _receive_files(request, settings)
    if not form.saved:
        raise LoupeError(ErrorCode.INVALID, "no files in the upload (use the form field 'files')")
    try:
        _check_text_fields(form.fields)
        report = await run_in_threadpool(
            ingest.ingest_uploaded,
            settings,
            project_id,
            form.saved,
            case_pattern=form.fields.get("case_pattern") or None,
            case_name=form.fields.get("case") or None,
            user_id=user_id,
        )
    except LoupeError:
        await run_in_threadpool(form.abort)  # e.g. an invalid case_pattern
        raise
    return IngestReportPublic.model_validate({**report.to_json(), "item_ids": report.items})


@router.post(
    "/projects/{project_id}/imports",
    response_model=ImportJobPublic,
    status_code=202,
)
def import_server_paths(
    body: ImportCreate,
    project: AnnotatorProject,
    admin: AdminUser,
    db: SessionDep,
    settings: SettingsDep,
) -> ImportJobPublic:
    """Import folders or files already on the server, as an ``ingest`` job (site admins).

    The paths are read by the server, so only site administrators may name them.
    """
    missing = [p for p in body.paths if not os.path.exists(p) or not os.path.isabs(p)]
    if missing:
        raise LoupeError(
            ErrorCode.INVALID,
            f"{len(missing)} path(s) are not absolute or do not exist on the server: {missing[:5]}",
        )
    if body.case_pattern:
        ingest.compile_case_pattern(body.case_pattern)
    db.commit()  # job_service.submit writes in its own transaction (SQLite write lock)
    job = job_service.submit(
        settings,
        kind="ingest",
        project_id=project.id,
        params={
            "project_id": project.id,
            "paths": [str(Path(p)) for p in body.paths],
            "case_name": body.case,
            "case_pattern": body.case_pattern,
            "copy": body.copy_files,
            "user_id": admin.id,
        },
        user_id=admin.id,
    )
    return ImportJobPublic(job_id=job.id, status=job.status)
