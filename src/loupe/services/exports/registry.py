"""Exporters by name: the ``format`` of ``POST /api/projects/{id}/exports``.

An exporter writes one file for a project (a dataset ZIP, a CSV, the masks of a
segmentation project, an nnU-Net raw dataset ...) inside the ``export`` job and
returns the job's result fields. Modules register theirs when imported (the
composition root imports them); ``/api/info`` lists them with the task kinds
they apply to. The registry imports no exporter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.errors import ErrorCode, LoupeError
from loupe.settings import Settings

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ExportRequest:
    """What an exporter gets: the job's params, where to write, how to report progress."""

    project_id: int
    job_id: int
    params: dict[str, Any]
    progress: Progress


# (settings, request) -> the job's result fields; the file is under settings.exports_dir.
ExportFn = Callable[[Settings, ExportRequest], dict[str, Any]]


@dataclass(frozen=True)
class Exporter:
    name: str
    title: str
    run: ExportFn
    # Task kinds it applies to (empty: every kind).
    kinds: tuple[str, ...] = field(default_factory=tuple)
    media_type: str = "application/zip"

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "kinds": list(self.kinds),
            "media_type": self.media_type,
        }


EXPORTERS: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter) -> Exporter:
    if exporter.name in EXPORTERS and EXPORTERS[exporter.name] != exporter:
        raise ValueError(f"exporter {exporter.name!r} is already registered")
    EXPORTERS[exporter.name] = exporter
    return exporter


def names() -> list[str]:
    return sorted(EXPORTERS)


def get_exporter(name: str, task: str | None = None) -> Exporter:
    """The exporter ``name`` (INVALID naming the known ones, or those for ``task``)."""
    exporter = EXPORTERS.get(name)
    usable = [e.name for e in EXPORTERS.values() if task is None or not e.kinds or task in e.kinds]
    if exporter is None:
        raise LoupeError(
            ErrorCode.INVALID, f"unknown export format {name!r}; use one of {sorted(usable)}"
        )
    if task is not None and exporter.kinds and task not in exporter.kinds:
        raise LoupeError(
            ErrorCode.INVALID,
            f"export format {name!r} is for {', '.join(exporter.kinds)} projects; "
            f"a {task} project can use {sorted(usable)}",
        )
    return exporter


def infos() -> list[dict[str, Any]]:
    return [EXPORTERS[n].info() for n in names()]


def output_path(settings: Settings, request: ExportRequest, filename: str) -> Path:
    """Where an export job writes ``filename`` (one folder per project)."""
    return settings.exports_dir / str(request.project_id) / f"job{request.job_id}-{filename}"
