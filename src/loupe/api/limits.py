"""Request body limits, applied before a route reads anything.

Every request body is capped while it streams in: JSON (and anything that is
not an upload) at ``LOUPE_MAX_JSON_BYTES`` (1 MiB), the file-import routes at
``LOUPE_MAX_UPLOAD_BYTES``. A ``Content-Length`` over the cap is refused at
once; a body without one is cut off at the first chunk past the cap (413), so
no more than the cap is ever read, buffered or spooled to disk. JSON bodies
are also refused when a string holds a NUL character (``\\u0000``): no
database column can store it the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loupe.errors import ErrorCode
from loupe.settings import Settings

# Routes that take files, and their cap; None: the route caps each file itself
# as it streams (image uploads: LOUPE_MAX_UPLOAD_BYTES per file).
UPLOAD_ROUTES: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"/api/projects/[^/]+/uploads"), None),
    (re.compile(r"/api/projects/[^/]+/labels/import"), "max_label_file_bytes"),
    (re.compile(r"/api/projects/import-dataset"), "max_upload_bytes"),
)
# A NUL escape not preceded by an escaped backslash ("\\u0000" is text, not NUL).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _too_large(limit: int) -> dict[str, Any]:
    return {
        "code": ErrorCode.TOO_LARGE.value,
        "message": f"the request body is over the limit of {limit} bytes",
        "limit": limit,
    }


def _limit_for(path: str, settings: Settings) -> tuple[int | None, bool]:
    """(cap in bytes or None, whether it is a JSON-like body)."""
    for pattern, setting in UPLOAD_ROUTES:
        if pattern.fullmatch(path):
            return (int(getattr(settings, setting)) if setting else None), False
    return settings.max_json_bytes, True


class BodyLimitMiddleware:
    """Pure ASGI middleware (streaming stays streaming; nothing is buffered but JSON)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, is_json = _limit_for(scope["path"], self.settings)
        declared = _content_length(scope)
        if limit is not None and declared is not None and declared > limit:
            response = JSONResponse(status_code=413, content={"detail": _too_large(limit)})
            await response(scope, receive, send)
            return
        received = 0
        body = bytearray() if is_json else None

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            received += len(chunk)
            if limit is not None and received > limit:
                # Raised inside the route's read: FastAPI passes HTTPException through.
                raise HTTPException(status_code=413, detail=_too_large(limit))
            if body is not None:
                body.extend(chunk)
                if not message.get("more_body", False) and _JSON_NUL.search(body):
                    raise HTTPException(
                        status_code=422,
                        detail={
                            "code": ErrorCode.INVALID.value,
                            "message": "text must not contain NUL (\\u0000) characters",
                        },
                    )
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
