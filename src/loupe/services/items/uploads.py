"""Streaming uploads into the content-addressed media folder (split from ``ingest``).

An upload is hashed while it is written to a temporary file beside its final
place, then renamed to ``media/<sha[:2]>/<sha><suffix>``; past its size limit
nothing is left on disk. :func:`loupe.services.items.ingest.ingest_uploaded`
turns saved uploads into items.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from loupe.errors import ErrorCode, LoupeError
from loupe.services.items.ingest_files import media_path
from loupe.settings import Settings


@dataclass(frozen=True)
class SavedUpload:
    """An upload stored in the media folder. ``created``: this upload wrote the file."""

    path: Path
    filename: str
    created: bool


class UploadSink:
    """Streams one upload into the media folder while hashing it.

    Bytes go to a temporary file next to their final place; ``finish`` renames
    it to ``media/<sha[:2]>/<sha><suffix>``. Past ``max_bytes`` the temporary
    file is deleted and ``LoupeError(TOO_LARGE)`` raised.
    """

    def __init__(self, settings: Settings, filename: str, *, max_bytes: int) -> None:
        self.settings = settings
        self.filename = filename
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=settings.media_dir, prefix=".upload-")
        self._tmp = Path(tmp)
        self._handle: IO[bytes] | None = os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self._handle is None:
            raise ValueError("write() after finish() or abort()")
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise LoupeError(
                ErrorCode.TOO_LARGE,
                f"{self.filename!r} is larger than the upload limit of "
                f"{_human_bytes(self.max_bytes)}",
                filename=self.filename,
                max_bytes=self.max_bytes,
            )
        self._digest.update(chunk)
        self._handle.write(chunk)

    def finish(self) -> SavedUpload:
        if self._handle is None:
            raise ValueError("finish() after finish() or abort()")
        self._handle.close()
        self._handle = None
        dest = media_path(self.settings, self._digest.hexdigest(), self.filename)
        if dest.exists():  # the same bytes were uploaded before
            self._tmp.unlink(missing_ok=True)
            return SavedUpload(dest, self.filename, created=False)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, dest)
        return SavedUpload(dest, self.filename, created=True)

    def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._tmp.unlink(missing_ok=True)


def _human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def save_upload(
    settings: Settings,
    source: IO[bytes] | Iterable[bytes],
    filename: str,
    *,
    max_bytes: int,
    chunk_size: int = 1 << 20,
) -> Path:
    """Stream a file object or an iterable of chunks into the media folder; return its path.

    Raises ``LoupeError(TOO_LARGE)`` (nothing left on disk) past ``max_bytes``.
    """
    return save_upload_info(
        settings, source, filename, max_bytes=max_bytes, chunk_size=chunk_size
    ).path


def save_upload_info(
    settings: Settings,
    source: IO[bytes] | Iterable[bytes],
    filename: str,
    *,
    max_bytes: int,
    chunk_size: int = 1 << 20,
) -> SavedUpload:
    """Like :func:`save_upload`, also saying whether this call created the file."""
    sink = UploadSink(settings, filename, max_bytes=max_bytes)
    try:
        if hasattr(source, "read"):
            while chunk := source.read(chunk_size):
                sink.write(chunk)
        else:
            for chunk in source:
                sink.write(chunk)
        return sink.finish()
    except BaseException:
        sink.abort()
        raise


def upload_folder_case(filename: str) -> str | None:
    """The case of an upload named ``root/case/.../file`` (a browser folder upload)."""
    parts = PurePosixPath(filename.replace("\\", "/")).parts
    return parts[1] if len(parts) >= 3 else None
