"""Pixels for the viewer: DeepZoom tiles of a 2-D item, thumbnails by content hash."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Item, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.media import MediaError
from loupe.media import tiles as media_tiles
from loupe.services.items.files import item_file_path, thumbnail_file, thumbnail_path
from loupe.services.labels.core import get_item
from loupe.settings import Settings


@dataclass(frozen=True)
class TileSource:
    """What cutting tiles needs, read once so the session can be released first."""

    item_id: int
    path: Path
    sha256: str
    filename: str


def tile_source(db: Session, project: Project, item_id: int) -> TileSource:
    """The file of a 2-D image item; INVALID for volumes and series, NOT_FOUND if gone."""
    item = get_item(db, project, item_id)
    if item.kind != "image" or item.files:
        raise LoupeError(
            ErrorCode.INVALID,
            f"item {item_id} ({item.filename}) is a {item.kind}; tiles are for 2-D images",
            item_id=item_id,
        )
    return TileSource(item.id, item_file_path(item), item.sha256, item.filename)


def deepzoom_descriptor(source: TileSource) -> str:
    """The DeepZoom descriptor (XML) of the item's image."""
    try:
        rows, cols = media_tiles.image_size(source.path)
    except MediaError as exc:
        raise _unreadable(source, exc) from exc
    return media_tiles.dzi_xml(rows, cols)


def deepzoom_tile(source: TileSource, level: int, col: int, row: int) -> bytes:
    """One JPEG tile; NOT_FOUND for a level or tile outside the pyramid."""
    try:
        return media_tiles.tile_jpeg(source.path, level, col, row)
    except MediaError as exc:
        raise _unreadable(source, exc) from exc
    except ValueError as exc:
        raise LoupeError(
            ErrorCode.NOT_FOUND, f"item {source.item_id}: {exc}", item_id=source.item_id
        ) from exc


def thumbnail_by_content(db: Session, settings: Settings, sha256: str) -> Path:
    """The thumbnail of content ``sha256``, rebuilt from any item with that content if
    it is missing; NOT_FOUND if no item has it."""
    path = thumbnail_file(settings, sha256)
    if path.is_file():
        return path
    item = db.scalars(select(Item).where(Item.sha256 == sha256).limit(1)).first()
    if item is None:
        raise LoupeError(ErrorCode.NOT_FOUND, "no such thumbnail")
    return thumbnail_path(settings, item)


def cached_thumbnail(settings: Settings, sha256: str) -> bytes | None:
    """The stored thumbnail's bytes, or None when it has to be (re)built."""
    try:
        return thumbnail_file(settings, sha256).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None


def thumbnail_data_uri(settings: Settings, sha256: str) -> str | None:
    """The stored thumbnail as a ``data:image/jpeg;base64,...`` URI (None if not built)."""
    jpeg = cached_thumbnail(settings, sha256)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def rebuild_thumbnail(settings: Settings, sha256: str) -> bytes:
    """Build a missing thumbnail in a transaction of its own (NOT_FOUND if no item has it)."""
    with session_scope(settings.db_url, write=False) as db:
        return thumbnail_by_content(db, settings, sha256).read_bytes()


def _unreadable(source: TileSource, exc: MediaError) -> LoupeError:
    return LoupeError(
        ErrorCode.UNSUPPORTED_MEDIA,
        f"cannot read tiles of item {source.item_id} ({source.filename}): {exc.reason}",
        item_id=source.item_id,
    )
