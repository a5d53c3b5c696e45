"""Files behind an item: its source file(s) and its cached thumbnail.

Thumbnails are content-addressed (``thumbs/<sha[:2]>/<sha>.jpg``), so two
projects holding the same file share one, and a missing one is simply rebuilt
from the source.
"""

from __future__ import annotations

from pathlib import Path

from loupe.db.models import Item
from loupe.errors import ErrorCode, LoupeError
from loupe.fsutil import atomic_write
from loupe.media import MediaError, make_thumbnail, thumbnail_dicom_series
from loupe.settings import Settings


def thumbnail_file(settings: Settings, sha256: str) -> Path:
    """Where the thumbnail of content ``sha256`` lives (it may not exist yet)."""
    return settings.thumbs_dir / sha256[:2] / f"{sha256}.jpg"


def store_thumbnail(settings: Settings, sha256: str, jpeg: bytes) -> Path:
    """Write a thumbnail atomically (temp file + rename): readers never see half a JPEG."""
    return atomic_write(thumbnail_file(settings, sha256), jpeg)


def item_file_path(item: Item) -> Path:
    """The item's source file (the first file of a DICOM series).

    Raises ``LoupeError(NOT_FOUND)`` when the file has been moved or deleted
    since the import (folders are referenced in place, not copied).
    """
    path = Path(item.uri)
    if not path.is_file():
        raise LoupeError(
            ErrorCode.NOT_FOUND,
            f"the file of item {item.id} ({item.filename}) is no longer on disk; "
            "re-import it to link it again",
            item_id=item.id,
        )
    return path


def item_files(item: Item) -> list[Path]:
    """All source files of an item (one, or every slice of a DICOM series)."""
    if not item.files:
        return [item_file_path(item)]
    paths = [Path(p) for p in item.files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise LoupeError(
            ErrorCode.NOT_FOUND,
            f"{len(missing)} of {len(paths)} files of item {item.id} ({item.filename}) are no "
            "longer on disk; re-import them to link them again",
            item_id=item.id,
        )
    return paths


def thumbnail_path(settings: Settings, item: Item) -> Path:
    """The item's JPEG thumbnail, rebuilt from the source file(s) if it is missing.

    Raises ``LoupeError(NOT_FOUND)`` if the source is gone and
    ``LoupeError(UNSUPPORTED_MEDIA)`` if it can no longer be read.
    """
    path = thumbnail_file(settings, item.sha256)
    if path.is_file():
        return path
    files = item_files(item)
    try:
        if item.format == "dicom" and item.kind == "volume":
            jpeg = thumbnail_dicom_series(files, size=settings.thumbnail_size)
        else:
            jpeg = make_thumbnail(
                files[0], size=settings.thumbnail_size, max_pixels=settings.max_pixels
            )
    except MediaError as exc:
        raise LoupeError(
            ErrorCode.UNSUPPORTED_MEDIA,
            f"cannot make a thumbnail of item {item.id} ({item.filename}): {exc.reason}",
            item_id=item.id,
        ) from exc
    return store_thumbnail(settings, item.sha256, jpeg)
