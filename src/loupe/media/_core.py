"""Shared types and small helpers of the media package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MAX_PIXELS = 200_000_000

PathLike = str | os.PathLike[str]


class MediaError(Exception):
    """A file that cannot be read as an image or volume.

    ``reason`` is a short human-readable explanation meant for end users, e.g.
    ``'empty file (0 bytes)'``, ``'truncated JPEG'`` or
    ``'not an image (unrecognised format)'``.
    """

    def __init__(self, reason: str, *, path: PathLike | None = None) -> None:
        self.reason = reason
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


class ParameterError(ValueError):
    """A bad argument (not bad file content); raised through ``translate_errors`` as is."""


@dataclass(frozen=True)
class MediaInfo:
    """What a file holds, learned from its headers only.

    ``shape`` is ``(rows, cols)`` or ``(rows, cols, channels)`` for images and
    ``(z, y, x)`` (optionally with a trailing channel/time axis) for volumes; ``axes``
    spells that order (``'YX'``, ``'YXC'``, ``'ZYX'``, ``'ZYXT'`` ...). ``dtype`` is the
    numpy dtype name of the stored pixels. ``spacing`` is the pixel/voxel size in mm in
    the same order as the spatial axes of ``shape``, or None when the file does not say.
    ``extra`` holds small JSON-serialisable facts (compression, modality, ...).
    """

    format: str
    kind: str
    shape: tuple[int, ...]
    dtype: str
    pages: int
    spacing: tuple[float, ...] | None
    axes: str
    extra: dict[str, Any] = field(default_factory=dict)


MEDIA_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".tif",
        ".tiff",
        ".fits",
        ".fit",
        ".fts",
        ".nii",
        ".nii.gz",
        ".dcm",
    }
)


def file_size(path: PathLike) -> int:
    """Size of a regular file in bytes; MediaError if it is missing, not a file or empty."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise MediaError("file not found", path=path) from None
    except OSError as exc:
        raise MediaError(f"cannot read file ({exc.strerror or exc})", path=path) from None
    if not Path(path).is_file():
        raise MediaError("not a regular file", path=path)
    if stat.st_size == 0:
        raise MediaError("empty file (0 bytes)", path=path)
    return stat.st_size


def check_max_pixels(max_pixels: int) -> None:
    if max_pixels < 1:
        raise ParameterError(f"max_pixels must be >= 1, got {max_pixels}")


def check_pixels(rows: int, cols: int, max_pixels: int, *, path: PathLike) -> None:
    """Raise MediaError when a rows x cols plane is a decompression bomb."""
    check_max_pixels(max_pixels)
    if rows <= 0 or cols <= 0:
        raise MediaError(f"invalid image size {rows}x{cols} in header", path=path)
    if rows * cols > max_pixels:
        raise MediaError(
            f"decompression bomb: {cols}x{rows} = {_mpx(rows * cols)} Mpx exceeds the limit of "
            f"{_mpx(max_pixels)} Mpx",
            path=path,
        )


def check_max_side(max_side: int | None) -> None:
    if max_side is not None and max_side < 1:
        raise ParameterError(f"max_side must be >= 1 or None, got {max_side}")


def _mpx(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


@contextmanager
def translate_errors(path: PathLike, what: str) -> Iterator[None]:
    """Turn a reader library's exceptions into ``MediaError('corrupt <what>: ...')``.

    Our own argument errors (:class:`ParameterError`) pass through untouched; a reader's
    ValueError means bad file content.
    """
    try:
        yield
    except (MediaError, ParameterError):
        raise
    except MemoryError:
        raise MediaError(f"{what} too large to decode in memory", path=path) from None
    except Exception as exc:  # any reader failure means "cannot read this file"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MediaError(f"corrupt {what}: {detail[:200]}", path=path) from exc
