"""Engine and session factory. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run while one writer writes; busy_timeout queues writers
    # instead of failing with 'database is locked'.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    # Writers take the write lock at BEGIN (IMMEDIATE), so two read-then-write
    # transactions queue on busy_timeout instead of failing with SQLITE_BUSY
    # when both try to upgrade; readers stay DEFERRED and never block.
    if conn.get_execution_options().get("sqlite_begin") == "immediate":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)

        @event.listens_for(engine, "connect")
        def _no_implicit_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    return make_engine(url)


@functools.lru_cache(maxsize=16)
def session_factory(url: str, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions for ``url``; ``write=True`` ones lock SQLite for writing at BEGIN."""
    engine = get_engine(url)
    if write:
        engine = engine.execution_options(sqlite_begin="immediate")
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(url: str, *, write: bool = True) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = session_factory(url, write=write)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
