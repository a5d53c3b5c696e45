"""Consistent database snapshots while the server runs, and their restore.

SQLite: the online backup API (``sqlite3.Connection.backup``) copies every page
under one read transaction; in WAL mode writers carry on meanwhile.
PostgreSQL: a REPEATABLE READ transaction exports its snapshot
(``pg_export_snapshot``); the row counts, the file references and
``pg_dump --snapshot`` all read that one snapshot, so the manifest describes
exactly what the dump holds. ``pg_restore`` loads it into an empty database.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, inspect, text
from sqlalchemy.engine import make_url

from loupe.errors import ErrorCode, LoupeError
from loupe.services.backup.manifest import COUNTED_TABLES

PG_TIMEOUT_S = 6 * 3600


@dataclass
class Snapshot:
    """What was read inside the snapshot: revision, counts, referenced paths."""

    revision: str | None
    counts: dict[str, int]
    paths: list[str]  # absolute paths the database references (items, models, reports)


def engine_name(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise LoupeError(ErrorCode.INVALID, f"cannot back up a {backend} database")
    return backend


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise LoupeError(ErrorCode.INVALID, "the SQLite database has no file to back up")
    return Path(database)


def libpq_args(url: str) -> tuple[str, dict[str, str]]:
    """The libpq connection URI of ``url`` and the environment for pg_dump/pg_restore.

    The password goes in ``PGPASSWORD``, not on the command line (``ps`` shows it).
    """
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def read_snapshot(conn: Connection) -> Snapshot:
    """Revision, row counts and referenced files, read on ``conn``'s transaction."""
    tables = set(inspect(conn).get_table_names())
    revision = None
    if "alembic_version" in tables:
        revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    counts = {
        t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())  # noqa: S608
        for t in COUNTED_TABLES
        if t in tables
    }
    paths: list[str] = []
    for uri, files in conn.execute(text("SELECT uri, files FROM items")):
        paths.append(str(uri))
        if isinstance(files, str):  # SQLite returns JSON as text
            import json

            files = json.loads(files)
        paths.extend(str(f) for f in files or [])
    for (path,) in conn.execute(
        text("SELECT artifact_path FROM model_versions WHERE artifact_path IS NOT NULL")
    ):
        paths.append(str(path))
    if "reports" in tables:
        paths.extend(str(p) for (p,) in conn.execute(text("SELECT path FROM reports")))
    return Snapshot(revision=str(revision) if revision else None, counts=counts, paths=paths)


def dump_sqlite(url: str, target: Path) -> Snapshot:
    """Copy the live SQLite database to ``target`` and read the copy."""
    source = sqlite_path(url)
    if not source.is_file():
        raise LoupeError(ErrorCode.NOT_FOUND, f"no SQLite database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)  # all pages in one step: one consistent read transaction
    finally:
        dst.close()
        src.close()
    engine = create_engine(f"sqlite:///{target}")
    try:
        with engine.connect() as conn:
            return read_snapshot(conn)
    finally:
        engine.dispose()


def dump_postgres(url: str, target: Path) -> Snapshot:
    """``pg_dump -Fc`` of the snapshot whose counts and references are returned."""
    _need("pg_dump")
    uri, env = libpq_args(url)
    engine = create_engine(url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as conn:
            with conn.begin():
                snapshot_id = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                snap = read_snapshot(conn)
                # The exported snapshot lives as long as this transaction.
                _run(
                    [
                        "pg_dump",
                        "--format=custom",
                        "--no-owner",
                        "--no-privileges",
                        f"--snapshot={snapshot_id}",
                        f"--file={target}",
                        f"--dbname={uri}",
                    ],
                    env,
                )
            return snap
    finally:
        engine.dispose()


def target_has_data(url: str) -> bool:
    """True when the target database already holds Loupe tables (or any table)."""
    if engine_name(url) == "sqlite":
        path = sqlite_path(url)
        if not path.exists():
            return False
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return bool(inspect(conn).get_table_names())
    except Exception as exc:  # noqa: BLE001 - any connection failure is reported as such
        raise LoupeError(
            ErrorCode.UNAVAILABLE,
            f"cannot open the target database ({type(exc).__name__}); for PostgreSQL "
            "create an empty one first (createdb NAME)",
        ) from exc
    finally:
        engine.dispose()


def restore_sqlite(dump: Path, url: str) -> None:
    """Write the snapshot to the target SQLite file (temp name + rename)."""
    path = sqlite_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restore")
    shutil.copyfile(dump, tmp)
    for suffix in ("-wal", "-shm"):  # a replaced database's journal must not be replayed
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    tmp.replace(path)


def restore_postgres(dump: Path, url: str, *, clean: bool) -> None:
    """``pg_restore`` the dump; ``clean`` drops existing objects first (--force)."""
    _need("pg_restore")
    uri, env = libpq_args(url)
    args = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error"]
    args.append("--single-transaction")  # all or nothing
    if clean:
        args += ["--clean", "--if-exists"]
    _run([*args, f"--dbname={uri}", str(dump)], env)


@contextmanager
def connect(url: str) -> Iterator[Connection]:
    """A short-lived connection in one transaction (restore fix-ups and checks)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def _need(program: str) -> None:
    if shutil.which(program) is None:
        raise LoupeError(
            ErrorCode.UNAVAILABLE,
            f"{program} is not installed (Debian: apt-get install postgresql-client)",
        )


def _run(args: list[str], env: dict[str, Any]) -> None:
    result = subprocess.run(  # noqa: S603 - fixed program, arguments are not a shell line
        args, env=env, capture_output=True, text=True, timeout=PG_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        raise LoupeError(
            ErrorCode.UNAVAILABLE,
            f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}",
        )
