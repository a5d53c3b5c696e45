"""The dataset ZIP's ``manifest.json``, its schema file and the export's tally.

The manifest records the format, the project, the filter, the counts, the
split (seed, fractions, method) and the active model with its backbones'
weight hashes; see :mod:`loupe.services.exports.archive`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

import loupe
from loupe.db.models import ModelVersion, Project
from loupe.services.exports import rows as export_rows
from loupe.services.exports.rows import ExportLayout
from loupe.services.exports.split import SPLITS, DatasetOptions
from loupe.tasks import kind_of

FORMAT = "loupe-dataset"
FORMAT_VERSION = 1


@dataclass
class Tally:
    """What an export wrote, counted while it is written (for the manifest)."""

    rows: int = 0
    labelled: int = 0
    by_label: dict[str, int] = field(default_factory=dict)
    by_origin: dict[str, int] = field(default_factory=dict)  # human | model_accepted
    by_split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    images: int = 0
    missing: list[str] = field(default_factory=list)
    missing_count: int = 0


def schema_entry(project: Project) -> tuple[str, Any]:
    """``(file name, body)`` of the archive's ``metrics.json`` or ``classes.json``."""
    return kind_of(project.task).schema_entry(project.schema)


def backbone_hashes(members: list[Any]) -> list[dict[str, Any]]:
    """``[{name, weights_sha256}]`` for an ensemble (None for weight-free backbones)."""
    out: list[dict[str, Any]] = []
    for member in members:
        name = str(member)
        entry: dict[str, Any] = {"name": name, "weights_sha256": None}
        try:
            from loupe.features import get_backbone

            entry["weights_sha256"] = get_backbone(name).weights_sha256()
        except Exception as exc:  # missing weights must not stop an export
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        out.append(entry)
    return out


def _model_block(version: ModelVersion | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {
        "id": version.id,
        "version": version.number,
        "kind": version.kind,
        "members": version.members,
        "backbones": backbone_hashes(list(version.members or [])),
        "params": version.params,
        "trained_on": version.trained_on,
        "metrics": version.metrics,
        "calibration": version.calibration,
        "created_at": export_rows.iso(version.created_at),
        "finished_at": export_rows.iso(version.finished_at),
    }


def build_manifest(
    db: Session,
    project: Project,
    layout: ExportLayout,
    options: DatasetOptions,
    tally: Tally,
    exported_at: dt.datetime,
    columns: list[str],
) -> dict[str, Any]:
    """The body of ``manifest.json``."""
    version = export_rows.active_version(db, project.id)
    kind = kind_of(project.task)
    schema_file = kind.schema_file
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "loupe_version": loupe.__version__,
        "exported_at": export_rows.iso(exported_at),
        "project": {
            "id": project.id,
            "name": project.name,
            "task": project.task,
            "description": project.description,
            "settings": {
                k: project.settings.get(k) for k in ("ensemble", "case_pattern") if project.settings
            },
        },
        "filter": options.filter.to_json(),
        "files": {
            "labels": "labels.csv",
            "schema": schema_file,
            "images": "images/" if options.include_images else None,
        },
        "columns": columns,
        "counts": {
            "items": tally.rows,
            "labelled": tally.labelled,
            "by_label": dict(sorted(tally.by_label.items())),
            "by_origin": dict(sorted(tally.by_origin.items())),
            "by_split": tally.by_split,
            "images": tally.images,
            "missing_images": tally.missing_count,
            "missing_examples": tally.missing,
        },
        "split": {
            "seed": options.split_seed,
            "fractions": dict(zip(SPLITS, options.split, strict=True)),
            "unit": "case (items without a case: the item)",
            "method": "bucket of sha256('<seed>:case:<name>' or '<seed>:item:<sha256>') "
            "read as a fraction in [0, 1)",
        },
        "model": _model_block(version),
        "layout": kind.archive_layout(),
    }
