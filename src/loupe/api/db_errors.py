"""Database exceptions as HTTP answers: never a 500 for a busy or conflicting database.

- transient (SQLite 'database is locked', lost connections, PostgreSQL
  serialization failures and deadlocks, a full connection pool): 503 with
  ``Retry-After`` (the client should send the same request again);
- a unique or foreign-key violation from a concurrent write: 409;
- a value the column cannot hold (too long, out of range, a NUL character): 422;
- no space left on LOUPE_HOME's disk (ENOSPC, EDQUOT): 503 naming the cause.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc

from loupe.api.security import scrub_paths
from loupe.errors import ErrorCode, LoupeError

log = logging.getLogger(__name__)
RETRY_AFTER_S = 2
_SQLITE_TRANSIENT = ("locked", "busy")


def is_transient(error: BaseException) -> bool:
    """True when the same request may well succeed if sent again shortly."""
    if isinstance(error, sa_exc.TimeoutError):  # no free pooled connection
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, sa_exc.OperationalError):
        return False
    if isinstance(error.orig, sqlite3.OperationalError):
        text = str(error.orig).lower()
        return any(word in text for word in _SQLITE_TRANSIENT)
    # psycopg's OperationalError family: connection failures, serialization
    # failures, deadlocks, lock and statement time-outs, server shutdown.
    return True


def as_loupe_error(error: BaseException) -> LoupeError | None:
    """The LoupeError a database exception stands for, or None for a real bug."""
    if is_transient(error):
        return LoupeError(
            ErrorCode.UNAVAILABLE,
            "the database is busy; send the request again in a moment",
            retry_after=RETRY_AFTER_S,
        )
    if isinstance(error, sa_exc.IntegrityError):
        return LoupeError(
            ErrorCode.CONFLICT,
            "the change conflicts with another one saved at the same time; reload and retry",
        )
    if isinstance(error, sa_exc.DataError):
        return LoupeError(
            ErrorCode.INVALID,
            "a value does not fit its database column (too long, out of range "
            "or containing a NUL character)",
        )
    return None


def loupe_error_response(exc: LoupeError, *, roots: Iterable[Path] = ()) -> JSONResponse:
    """The JSON answer for ``exc``; server paths (under ``roots`` or absolute) are cut."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    detail = exc.to_detail()
    detail["message"] = scrub_paths(exc.message, roots)
    return JSONResponse(status_code=exc.http_status, content={"detail": detail}, headers=headers)


def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    mapped = as_loupe_error(exc)
    if mapped is None:
        log.error("database error", exc_info=exc)
        return JSONResponse(
            status_code=500,
            content={"detail": {"code": "internal", "message": "internal server error"}},
        )
    log.warning("database error answered %s: %s", mapped.http_status, exc)
    return loupe_error_response(mapped)


def _storage_error(_request: Request, exc: Exception) -> JSONResponse:
    """A full disk (or quota) under LOUPE_HOME: a clear 503, not an internal error."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("storage full: %s", exc)
        return loupe_error_response(
            LoupeError(
                ErrorCode.UNAVAILABLE,
                "no space left on the server's storage (LOUPE_HOME); nothing was saved. "
                "Ask an administrator to free space, then send it again",
            )
        )
    raise exc  # any other OS error stays an internal error, handled as before


def add_database_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app`` (one per SQLAlchemy exception family, and
    one for a full disk, the other resource a write can run out of)."""
    app.add_exception_handler(sa_exc.DBAPIError, _database_error)
    app.add_exception_handler(sa_exc.TimeoutError, _database_error)
    app.add_exception_handler(OSError, _storage_error)
