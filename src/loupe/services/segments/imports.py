"""Import existing masks (PNG / TIFF of label values) as the items' human masks.

A ZIP (or one PNG / TIFF) whose file names match the items' file names by stem
(``img_001.png`` or ``img_001_mask.tif`` -> the item ``img_001.jpg``). Each mask
goes through :func:`loupe.services.segments.payload.save_mask` (lossless file,
audit event); a mask of the wrong size or with unknown label values is skipped and
named in the result.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.segments import payload
from loupe.settings import Settings
from loupe.tasks.segment import require_segment

MAX_FILES = 10_000
MAX_UNCOMPRESSED = 2 * 1024**3
_SUFFIXES = (".png", ".tif", ".tiff")
_TAILS = ("_mask", "-mask", "_label", "-label", "_labels", "_seg")


@dataclass
class ImportResult:
    imported: int = 0
    skipped: list[str] = field(default_factory=list)


def _stem(name: str) -> str:
    stem = PurePosixPath(name).name.rsplit(".", 1)[0]
    for tail in _TAILS:
        if stem.lower().endswith(tail):
            return stem[: -len(tail)]
    return stem


def _entries(data: bytes) -> list[tuple[str, bytes]]:
    if not data.startswith(b"PK"):
        return [("mask.png", data)]
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise LoupeError(ErrorCode.INVALID, f"not a readable ZIP: {exc}") from exc
    infos = [i for i in zf.infolist() if not i.is_dir() and i.filename.lower().endswith(_SUFFIXES)]
    if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_UNCOMPRESSED:
        raise LoupeError(ErrorCode.TOO_LARGE, f"at most {MAX_FILES} masks and 2 GiB per import")
    return [(i.filename, zf.read(i)) for i in infos]


def import_masks(
    db: Session, settings: Settings, project: Project, data: bytes, *, user_id: int | None
) -> ImportResult:
    """Store each mask of ``data`` as the matching item's mask; return what happened."""
    require_segment(project.task, project.id)
    by_stem: dict[str, int] = {}
    for item_id, filename in db.execute(
        select(Item.id, Item.filename).where(Item.project_id == project.id).order_by(Item.id)
    ):
        by_stem.setdefault(_stem(filename), item_id)
    result = ImportResult()
    for name, blob in _entries(data):
        found = by_stem.get(_stem(name))
        if found is None:
            result.skipped.append(f"{name}: no item named {_stem(name)}.*")
            continue
        try:
            with db.begin_nested():
                payload.save_mask(
                    db, settings, project, found, version=None, mask=blob, user_id=user_id
                )
        except LoupeError as exc:
            if exc.code not in (ErrorCode.INVALID, ErrorCode.TOO_LARGE):
                raise
            result.skipped.append(f"{name}: {exc.message}")
            continue
        result.imported += 1
    return result
