"""Format detection and file-system helpers (no pixel decoding here)."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from loupe.media._core import PathLike

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_HEAD_BYTES = 544  # enough for a NIfTI-2 header start and the DICOM preamble


def media_suffix(path: PathLike) -> str:
    """Lower-case suffix, with ``.nii.gz`` treated as one suffix."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def detect_format(path: PathLike) -> str | None:
    """Name the format of ``path`` from its leading bytes, or None if we do not handle it.

    Returns one of ``'jpeg' 'png' 'bmp' 'tiff' 'fits' 'nifti' 'dicom'``. Magic bytes decide;
    the suffix is consulted only where a format has no mandatory signature, i.e. ``.dcm``
    files written without the 128-byte preamble and ``DICM`` marker. A file whose content
    contradicts its suffix (a text file named ``.png``) is therefore not an image.
    Missing or unreadable files give None.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return None
    if head[:2] == b"\x1f\x8b":  # gzip: only gzipped NIfTI is ours
        return "nifti" if _is_nifti_header(gunzip_prefix(path, 548)) else None
    found = detect_format_from_bytes(head)
    if found is not None:
        return found
    if media_suffix(path) == ".dcm" and _looks_like_raw_dicom(head):
        return "dicom"
    return None


def detect_format_from_bytes(head: bytes) -> str | None:
    """Like :func:`detect_format` for the first (up to 544) bytes of a file, without suffix."""
    # DICM first: DICOM preambles may themselves hold a TIFF header (dual-format files)
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(_PNG_SIGNATURE):
        return "png"
    if head[:4] in _TIFF_SIGNATURES:
        return "tiff"
    if head.startswith(b"SIMPLE  =") and head[29:30] == b"T":
        return "fits"
    if _is_nifti_header(head):
        return "nifti"
    if head[:2] == b"\x1f\x8b" and _is_nifti_header(_gunzip_head(head)):
        return "nifti"
    if head.startswith(b"BM") and len(head) >= 18:
        (header_size,) = struct.unpack_from("<I", head, 14)
        if header_size in _BMP_HEADER_SIZES:
            return "bmp"
    return None


def _is_nifti_header(head: bytes) -> bool:
    if len(head) >= 348 and head[344:348] == b"n+1\x00":
        return struct.unpack_from("<i", head)[0] == 348 or struct.unpack_from(">i", head)[0] == 348
    if len(head) >= 8 and head[4:8] == b"n+2\x00":
        return struct.unpack_from("<i", head)[0] == 540 or struct.unpack_from(">i", head)[0] == 540
    return False


def _gunzip_head(head: bytes) -> bytes:
    """Decompress what we can of a gzip stream's first bytes (for sniffing only)."""
    try:
        return zlib.decompressobj(wbits=zlib.MAX_WBITS | 16).decompress(head, 548)
    except zlib.error:
        return b""


def gunzip_prefix(path: PathLike, size: int) -> bytes:
    """First ``size`` uncompressed bytes of a gzip file (b'' if it is not valid gzip)."""
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read(size)
    except (OSError, EOFError, zlib.error):
        return b""


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less DICOM stream starts with a group 0x0002 or 0x0008 element."""
    if len(head) < 8:
        return False
    group_le = struct.unpack_from("<H", head)[0]
    group_be = struct.unpack_from(">H", head)[0]
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def iter_media_files(root: PathLike) -> Iterator[Path]:
    """Yield every regular file under ``root`` recursively, sorted by path.

    Hidden files and directories (name starting with ``.``) are skipped. All regular
    files are yielded, not only known image suffixes, so that the caller can report
    files it cannot read instead of skipping them silently. Symbolic links to files are
    yielded; symbolic links to directories are not followed (no cycles).
    """
    root_path = Path(root)
    if root_path.is_file():
        yield root_path
        return
    if not root_path.is_dir():
        raise ValueError(f"root must be an existing directory or file, got {root!s}")
    yield from _walk(root_path)


def _walk(directory: Path) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _walk(Path(entry.path))
            elif entry.is_file(follow_symlinks=True):
                yield Path(entry.path)
        except OSError:
            continue


def sha256_file(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file's bytes, read ``chunk`` bytes at a time."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
