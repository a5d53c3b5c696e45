"""Engine and session factory. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import functools
import threading
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


class _Writers:
    """Write transactions of one process on one SQLite database, one at a time.

    SQLite has one writer at a time; its busy handler waits for the lock by
    sleeping (1, 2, 5, 10 ... ms), so threads of one process that write at once
    (four annotators labelling) lose milliseconds per collision. They queue on
    this lock first, taken before ``BEGIN IMMEDIATE`` and given back right
    after ``COMMIT`` / ``ROLLBACK``, which wakes the next writer at once. Other
    processes still meet SQLite's own lock (and busy_timeout).
    """

    WAIT_S = 30.0  # as busy_timeout: after that SQLite decides

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holder: int | None = None  # id() of the DBAPI connection holding it

    def acquire(self, dbapi_conn: Any) -> None:
        if self._holder == _raw_id(dbapi_conn):
            return
        if self._lock.acquire(timeout=self.WAIT_S):
            self._holder = _raw_id(dbapi_conn)

    def release(self, dbapi_conn: Any) -> None:
        if self._holder is not None and self._holder == _raw_id(dbapi_conn):
            self._holder = None
            self._lock.release()


def _raw_id(conn: Any) -> int:
    """The id of the driver's connection behind a pool proxy (or of it itself)."""
    return id(getattr(conn, "dbapi_connection", None) or conn)


def _serialise_writers(engine: Engine) -> None:
    writers = _Writers()
    dialect = engine.dialect
    do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

    def begin(conn: Any) -> None:
        # Writers take the write lock at BEGIN (IMMEDIATE), so two read-then-write
        # transactions queue instead of failing with SQLITE_BUSY when both try
        # to upgrade; readers stay DEFERRED and never block.
        if conn.get_execution_options().get("sqlite_begin") != "immediate":
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        writers.acquire(dbapi_conn)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(dbapi_conn)
            raise

    def commit(dbapi_conn: Any) -> None:
        try:
            do_commit(dbapi_conn)
        finally:
            writers.release(dbapi_conn)

    def rollback(dbapi_conn: Any) -> None:
        try:
            do_rollback(dbapi_conn)
        finally:
            writers.release(dbapi_conn)

    def checkin(dbapi_conn: Any, _record: Any) -> None:
        writers.release(dbapi_conn)  # a pooled connection holds no transaction

    dialect.do_commit = commit  # type: ignore[method-assign,assignment]
    dialect.do_rollback = rollback  # type: ignore[method-assign,assignment]
    event.listen(engine, "begin", begin)
    event.listen(engine.pool, "checkin", checkin)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=8,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        _serialise_writers(engine)

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
