"""Splitting a big import into chunks that workers run in parallel (no database).

A chunk is a list of files, about ``size`` of them. Files that may be DICOM
(suffix ``.dcm``, ``.dicom``, ``.ima`` or none) stay together with the other
such files of their folder, because a series becomes one item only if all its
files are imported by the same chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loupe.services.items.ingest_files import Source

CHUNK_FILES = 500  # ~1-2 s of work per chunk at 250-650 files/s
_MAYBE_DICOM = frozenset({".dcm", ".dicom", ".ima", ""})


def plan_chunks(sources: Sequence[Source], *, size: int = CHUNK_FILES) -> list[list[Source]]:
    """Split ``sources`` (in order) into chunks of about ``size`` files.

    A folder's possible DICOM files form one unit that is never split (a unit
    larger than ``size`` is a chunk of its own).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    units: list[list[Source]] = []
    dicom_units: dict[Path, list[Source]] = {}
    for source in sources:
        if source.path.suffix.lower() in _MAYBE_DICOM:
            unit = dicom_units.get(source.path.parent)
            if unit is None:
                unit = dicom_units[source.path.parent] = []
                units.append(unit)
            unit.append(source)
        else:
            units.append([source])
    chunks: list[list[Source]] = []
    current: list[Source] = []
    for unit in units:
        if current and len(current) + len(unit) > size:
            chunks.append(current)
            current = []
        current.extend(unit)
    if current:
        chunks.append(current)
    return chunks


def sources_to_json(sources: Sequence[Source]) -> list[list[Any]]:
    """A chunk's files as job params: ``[[path, name, label, folder case], ...]``."""
    return [[str(s.path), s.name, s.label, s.folder_case] for s in sources]


def sources_from_json(rows: Sequence[Sequence[Any]]) -> list[Source]:
    """The inverse of :func:`sources_to_json`."""
    return [Source(Path(path), name, label, folder) for path, name, label, folder in rows]
