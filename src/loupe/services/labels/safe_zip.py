"""Reading uploaded ZIPs without trusting them (zip bombs, lying headers).

:func:`check_archive` looks at the central directory only, before a byte is
inflated: the recorded sizes must stay under the limit, the archive may not
expand more than :data:`MAX_RATIO` times its own size (an overlapping-entry
bomb turns 300 kB into gigabytes), and entries may not share compressed data.
:func:`read_member` and :func:`copy_member` then inflate through a reader
that stops at the recorded size (and at the caller's cap), so a member whose
data inflates to more than its header says fails with 422, never with a 500
or a full disk.
"""

from __future__ import annotations

import zipfile
import zlib
from typing import BinaryIO

from loupe.errors import ErrorCode, LoupeError

# Deflate cannot do better than ~1032:1; real datasets (PNG, JPEG, CSV) stay far below.
MAX_RATIO = 200
_RATIO_SLACK = 10 << 20  # tiny archives of text may compress well: allow 10 MB regardless
_CHUNK = 1 << 20
# A label file inside a ZIP (label import): far more than any real one needs.
MAX_LABELS_BYTES = 256 << 20
# Errors an inflating ZipExtFile raises on corrupt or lying data.
CORRUPT = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError)


def check_archive(zf: zipfile.ZipFile, archive_bytes: int, *, max_total: int) -> None:
    """Refuse the archive before reading it when its members would expand too far.

    ``archive_bytes`` is the size of the ZIP file; ``max_total`` the limit on
    the sum of the members' uncompressed sizes (``LOUPE_MAX_UNZIPPED_BYTES``).
    """
    members = [m for m in zf.infolist() if not m.is_dir()]
    total = sum(m.file_size for m in members)
    if total > max_total:
        raise LoupeError(
            ErrorCode.TOO_LARGE,
            f"the ZIP expands to {total} bytes, over the limit of {max_total} bytes",
            limit=max_total,
        )
    if total > MAX_RATIO * archive_bytes + _RATIO_SLACK:
        raise LoupeError(
            ErrorCode.TOO_LARGE,
            f"the ZIP expands {total // max(archive_bytes, 1)} times its size "
            f"(at most {MAX_RATIO}): refused as a zip bomb",
        )
    if sum(m.compress_size for m in members) > archive_bytes:
        raise LoupeError(ErrorCode.INVALID, "the ZIP's entries overlap: refused as a zip bomb")
    starts = [m.header_offset for m in members]
    if len(set(starts)) != len(starts):
        raise LoupeError(ErrorCode.INVALID, "the ZIP's entries overlap: refused as a zip bomb")


def _too_big(name: str, max_bytes: int) -> LoupeError:
    return LoupeError(
        ErrorCode.TOO_LARGE, f"{name} in the ZIP is over the limit of {max_bytes} bytes"
    )


def _corrupt(name: str) -> LoupeError:
    return LoupeError(ErrorCode.INVALID, f"{name} in the ZIP is damaged or lies about its size")


def read_member(zf: zipfile.ZipFile, name: str, *, max_bytes: int) -> bytes:
    """The bytes of member ``name`` (KeyError if absent), at most ``max_bytes``."""
    info = zf.getinfo(name)
    if info.file_size > max_bytes:
        raise _too_big(name, max_bytes)
    try:
        with zf.open(info) as src:
            data = src.read(max_bytes + 1)
            if len(data) > max_bytes or len(data) != info.file_size:
                raise _corrupt(name)
            return data
    except CORRUPT as exc:
        raise _corrupt(name) from exc


def copy_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dst: BinaryIO, *, max_bytes: int
) -> int:
    """Inflate ``info`` into ``dst`` in chunks; return the bytes written."""
    if info.file_size > max_bytes:
        raise _too_big(info.filename, max_bytes)
    written = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > min(max_bytes, info.file_size):
                    raise _corrupt(info.filename)
                dst.write(chunk)
    except CORRUPT as exc:
        raise _corrupt(info.filename) from exc
    if written != info.file_size:
        raise _corrupt(info.filename)
    return written
