"""The backup folder's ``manifest.json``: what is in a backup and how to check it.

Layout of a backup folder::

    manifest.json         this file (written last: a folder without it is incomplete)
    database.sqlite       SQLite snapshot (online backup API), or
    database.pgdump       PostgreSQL dump (``pg_dump -Fc``)
    files/<rel path>      media, thumbs, features, models, reports, maps and
                          .secret_key, at their paths relative to LOUPE_HOME

The manifest holds the Loupe version, the Alembic revision of the snapshot,
row counts taken inside the snapshot, the LOUPE_HOME the paths in the
database point into (rewritten on restore) and a size and SHA-256 per file,
so a restore (or an operator with ``sha256sum``) can verify every byte.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loupe.errors import ErrorCode, LoupeError

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_DUMP = "database.sqlite"
PG_DUMP = "database.pgdump"
FILES = "files"
# Rows counted in the snapshot and compared after a restore.
COUNTED_TABLES = (
    "users",
    "projects",
    "memberships",
    "cases",
    "items",
    "annotations",
    "annotation_events",
    "model_versions",
    "predictions",
    "jobs",
    "reports",
)


@dataclass
class FileEntry:
    size: int
    sha256: str


@dataclass
class Manifest:
    loupe_version: str
    created_at: str
    engine: str  # "sqlite" | "postgresql"
    database_file: str
    database_sha256: str
    schema_revision: str | None
    home: str  # the resolved LOUPE_HOME the database's absolute paths point into
    counts: dict[str, int]
    files: dict[str, FileEntry] = field(default_factory=dict)
    # Files the database references that were gone when the copy ran (deleted
    # after the snapshot, or lost before it); external = referenced in place
    # outside LOUPE_HOME, which a backup does not copy.
    missing: list[str] = field(default_factory=list)
    external_files: int = 0
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, folder: Path) -> None:
        tmp = folder / f".{MANIFEST}.part"
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        tmp.replace(folder / MANIFEST)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise LoupeError(
                ErrorCode.INVALID,
                f"{folder} is not a complete Loupe backup (no {MANIFEST}; an interrupted "
                "backup leaves none)",
            ) from exc
        except (OSError, json.JSONDecodeError) as exc:
            raise LoupeError(ErrorCode.INVALID, f"cannot read {path}: {exc}") from exc
        if data.get("format") != FORMAT:
            raise LoupeError(
                ErrorCode.INVALID,
                f"backup format {data.get('format')!r} is not supported (expected {FORMAT})",
            )
        data["files"] = {k: FileEntry(**v) for k, v in data.get("files", {}).items()}
        return cls(**data)
