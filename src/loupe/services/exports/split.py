"""The dataset ZIP's deterministic split and the image paths inside the archive.

Each *unit* (the item's case, so one patient never straddles two splits; the
item itself when it has no case) goes to the bucket where
``sha256("<seed>:<unit>")``, read as a number in [0, 1), falls. It depends only
on the seed and the case names / file hashes, so re-exports and re-imported
projects split alike. Images go to ``images/<class>/<file>`` (ImageFolder);
see :mod:`loupe.services.exports.archive`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Row

from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.rows import ExportFilter
from loupe.tasks.base import TaskKind

SPLITS = ("train", "val", "test")
UNLABELED = "_unlabeled"


@dataclass(frozen=True)
class DatasetOptions:
    include_images: bool = False
    split_seed: int = 0
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    filter: ExportFilter = field(default_factory=ExportFilter)
    # labels.csv without the formula escaping (see loupe.services.exports.cells)
    raw: bool = False

    def __post_init__(self) -> None:
        if len(self.split) != 3 or any(f < 0 for f in self.split):
            raise LoupeError(
                ErrorCode.INVALID, f"split must be three fractions >= 0, got {self.split}"
            )
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise LoupeError(
                ErrorCode.INVALID, f"split fractions must add up to 1, got {sum(self.split)}"
            )


def assign_split(unit: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split (train | val | test) of a unit (``case:<name>`` or ``item:<sha256>``)."""
    digest = hashlib.sha256(f"{seed}:{unit}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions, strict=True):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1] if fractions[-1] > 0 else SPLITS[0]


def split_unit(case_name: str | None, sha256: str) -> str:
    return f"case:{case_name}" if case_name else f"item:{sha256}"


_UNSAFE = re.compile(r"[\x00-\x1f/\\:]+")


def safe_part(name: str, fallback: str) -> str:
    """``name`` made safe as one archive path part (``fallback`` when nothing is left)."""
    cleaned = _UNSAFE.sub("_", name).strip()
    return fallback if cleaned in ("", ".", "..") else cleaned


class ImageNamer:
    """Archive paths for images: ``images/<folder>/<file>``, unique in the archive."""

    def __init__(self, kind: TaskKind) -> None:
        self.kind = kind
        self._used: set[str] = set()

    def folder(self, row: Row[Any]) -> str:
        sub = self.kind.archive_folder(row.kind, row.label)
        return "images" if sub is None else f"images/{safe_part(sub, UNLABELED)}"

    def name(self, row: Row[Any]) -> str:
        folder = self.folder(row)
        base = safe_part(row.filename, f"item-{row.id}")
        path = f"{folder}/{base}"
        if path.lower() in self._used:
            stem, dot, ext = base.rpartition(".")
            if not dot:
                stem, ext = base, ""
            path = f"{folder}/{stem}-{row.sha256[:10]}{dot}{ext}"
            if path.lower() in self._used:
                path = f"{folder}/{stem}-{row.id}{dot}{ext}"
        self._used.add(path.lower())
        return path


def row_files(row: Row[Any]) -> list[Path]:
    """The files of an export row: a series' slices, else the item's one file."""
    return [Path(p) for p in row.files] if row.files else [Path(row.uri)]


def split3(value: Any) -> tuple[float, float, float]:
    """A job's ``split`` param as three fractions (default 0.8 / 0.1 / 0.1)."""
    parts = [float(v) for v in (value or (0.8, 0.1, 0.1))]
    if len(parts) != 3:
        raise LoupeError(ErrorCode.INVALID, f"split must be three fractions, got {value}")
    return parts[0], parts[1], parts[2]
