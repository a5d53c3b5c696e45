"""``backup`` and ``restore``: the use cases behind ``loupe backup`` / ``loupe restore``.

Order of a backup: the database snapshot first, then the files. Files are
immutable once renamed into place, so every file the snapshot references is
already complete when it is copied; files added after the snapshot may be
copied too (harmless: nothing references them). A referenced file deleted
between snapshot and copy is listed in ``missing``.

A restore goes into a fresh LOUPE_HOME and an empty database (``force``
replaces what is there), verifies every file against the manifest, rewrites
the absolute paths the database holds from the old LOUPE_HOME to the new one,
marks jobs that were queued or running in the snapshot as failed (their queue
did not travel), migrates the schema to this version's head and checks the
row counts.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loupe
from loupe.errors import ErrorCode, LoupeError
from loupe.services.backup import database, files
from loupe.services.backup.manifest import FILES, PG_DUMP, SQLITE_DUMP, FileEntry, Manifest
from loupe.settings import Settings

# progress(done, total, what): called as files are copied.
Progress = Callable[[int, int, str], None]


def _no_progress(_done: int, _total: int, _what: str) -> None:
    return None


@dataclass
class RestoreReport:
    counts: dict[str, int]
    files: int
    rewritten_paths: int
    failed_jobs: int
    schema_revision: str | None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "files": self.files,
            "rewritten_paths": self.rewritten_paths,
            "failed_jobs": self.failed_jobs,
            "schema_revision": self.schema_revision,
            "warnings": self.warnings,
        }


def backup(settings: Settings, target: Path, *, progress: Progress = _no_progress) -> Manifest:
    """Write a complete backup of ``settings``' deployment into the new folder ``target``."""
    if target.exists() and any(target.iterdir()):
        raise LoupeError(ErrorCode.CONFLICT, f"backup folder {target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    home = settings.home.resolve()
    engine = database.engine_name(settings.db_url)
    dump_name = SQLITE_DUMP if engine == "sqlite" else PG_DUMP
    dump = target / dump_name
    progress(0, 0, "database")
    if engine == "sqlite":
        snap = database.dump_sqlite(settings.db_url, dump)
    else:
        snap = database.dump_postgres(settings.db_url, dump)
    dump.chmod(0o600)

    rels = list(files.home_files(home))
    entries: dict[str, FileEntry] = {}
    for n, rel in enumerate(rels, 1):
        source = home / rel
        try:
            entries[rel.as_posix()] = files.copy_file(source, target / FILES / rel)
        except FileNotFoundError:
            continue  # removed since the listing; checked against the references below
        progress(n, len(rels), "files")

    os.sync()  # every copied byte on disk before the manifest says the backup is complete
    referenced = [files.under(p, home) for p in snap.paths]
    inside = [r for r in referenced if r is not None]
    missing = sorted({r for r in inside if not _covered(r, entries)})
    manifest = Manifest(
        loupe_version=loupe.__version__,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        engine=engine,
        database_file=dump_name,
        database_sha256=files.sha256_of(dump),
        schema_revision=snap.revision,
        home=str(home),
        counts=snap.counts,
        files=entries,
        missing=missing,
        external_files=len(referenced) - len(inside),
    )
    manifest.write(target)
    return manifest


def _covered(rel: str, entries: dict[str, FileEntry]) -> bool:
    """A referenced path is in the backup as a file, or as a folder (model artifacts)."""
    return rel in entries or any(k.startswith(rel.rstrip("/") + "/") for k in entries)


def restore(
    settings: Settings, source: Path, *, force: bool = False, progress: Progress = _no_progress
) -> RestoreReport:
    """Restore the backup folder ``source`` into ``settings``' LOUPE_HOME and database."""
    manifest = Manifest.read(source)
    _check_revision(manifest.schema_revision)
    home = settings.home.resolve()
    engine = database.engine_name(settings.db_url)
    if engine != manifest.engine:
        raise LoupeError(
            ErrorCode.INVALID,
            f"the backup holds a {manifest.engine} database; the target is {engine} "
            "(set LOUPE_DATABASE_URL to a database of the same kind)",
        )
    if not force and (not files.home_is_empty(home) or database.target_has_data(settings.db_url)):
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"the target is not empty (LOUPE_HOME {home} or its database); restore into a "
            "fresh LOUPE_HOME and an empty database, or pass --force to replace them",
        )
    dump = source / manifest.database_file
    progress(0, len(manifest.files), "checking")
    got = files.sha256_of(dump)
    if got != manifest.database_sha256:
        raise LoupeError(ErrorCode.INVALID, f"backup file {dump.name} is damaged (sha256 differs)")
    # Files first: a database that points at files not yet there would serve errors.
    for n, (rel, want) in enumerate(sorted(manifest.files.items()), 1):
        entry = files.copy_file(
            source / FILES / rel, home / rel, mode=0o600 if rel == ".secret_key" else None
        )
        files.check_entry(rel, entry, want)
        progress(n, len(manifest.files), "files")
    os.sync()  # the files are on disk before the database points at them
    progress(len(manifest.files), len(manifest.files), "database")
    if engine == "sqlite":
        database.restore_sqlite(dump, settings.db_url)
    else:
        database.restore_postgres(dump, settings.db_url, clean=force)
    from loupe.db.migrate import upgrade

    upgrade(settings.db_url)  # a backup of an older version comes up at this version's head
    rewritten, failed_jobs = _fix_up(settings.db_url, Path(manifest.home), home)
    counts, revision = _counts(settings.db_url)
    warnings = [f"{len(manifest.missing)} referenced file(s) were missing at backup time"] * bool(
        manifest.missing
    )
    if manifest.external_files:
        warnings.append(
            f"{manifest.external_files} file(s) are referenced in place outside LOUPE_HOME "
            "and were not in the backup; they must exist at the same paths"
        )
    for table, want_n in manifest.counts.items():
        if counts.get(table) != want_n:
            raise LoupeError(
                ErrorCode.INVALID,
                f"restored {table} has {counts.get(table)} rows, the backup {want_n}",
            )
    return RestoreReport(
        counts=counts,
        files=len(manifest.files),
        rewritten_paths=rewritten,
        failed_jobs=failed_jobs,
        schema_revision=revision,
        warnings=warnings,
    )


def _check_revision(revision: str | None) -> None:
    from alembic.script import ScriptDirectory

    from loupe.db.migrate import MIGRATIONS_DIR

    if revision is None:
        return
    scripts = ScriptDirectory(str(MIGRATIONS_DIR))
    known = {s.revision for s in scripts.walk_revisions()}
    if revision not in known:
        raise LoupeError(
            ErrorCode.INVALID,
            f"the backup's schema revision {revision} is unknown to Loupe {loupe.__version__}: "
            "restore it with the (newer) version that made it",
        )


def _rebase(path: str, old: Path, new: Path) -> str | None:
    rel = files.under(path, old)
    return None if rel is None else str(new / rel)


def _fix_up(url: str, old: Path, new: Path) -> tuple[int, int]:
    """Point absolute paths from ``old`` LOUPE_HOME to ``new``; fail orphaned jobs."""
    from sqlalchemy import select, update
    from sqlalchemy.orm import Session

    from loupe.db.models import Item, Job, JobStatus, ModelVersion, Report, utcnow

    changed = 0
    with database.connect(url) as conn, Session(bind=conn) as db:
        if old != new:
            for item in db.scalars(select(Item)):
                uri = _rebase(item.uri, old, new)
                listed = [_rebase(str(f), old, new) or f for f in item.files or []]
                if uri is None and listed == (item.files or []):
                    continue
                item.uri = uri or item.uri
                item.files = listed if item.files is not None else None
                changed += 1
            for version in db.scalars(select(ModelVersion)):
                moved = _rebase(version.artifact_path or "", old, new)
                if version.artifact_path and moved:
                    version.artifact_path = moved
                    changed += 1
            for report in db.scalars(select(Report)):
                moved = _rebase(report.path, old, new)
                if moved:
                    report.path = moved
                    changed += 1
        result: Any = db.execute(
            update(Job)
            .where(Job.status.in_([JobStatus.queued.value, JobStatus.running.value]))
            .values(
                status=JobStatus.failed.value,
                error="interrupted: the deployment was restored from a backup; run it again",
                finished_at=utcnow(),
            )
        )
        db.flush()
    return changed, int(result.rowcount or 0)


def _counts(url: str) -> tuple[dict[str, int], str | None]:
    with database.connect(url) as conn:
        snap = database.read_snapshot(conn)
    return snap.counts, snap.revision


def describe(manifest: Manifest) -> dict[str, Any]:
    """A short summary of a backup for the CLI."""
    return {
        "engine": manifest.engine,
        "schema_revision": manifest.schema_revision,
        "counts": manifest.counts,
        "files": len(manifest.files),
        "bytes": sum(e.size for e in manifest.files.values()),
        "missing": len(manifest.missing),
        "external_files": manifest.external_files,
    }
