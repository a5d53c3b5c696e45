"""Assemble the FastAPI application: routers, error handler, static front end."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import loupe
from loupe.api.db_errors import add_database_error_handlers, loupe_error_response
from loupe.api.docs import mount_docs
from loupe.api.housekeeping import housekeeping
from loupe.api.limits import BodyLimitMiddleware
from loupe.api.routes import ROUTERS
from loupe.api.schemas.common import ERROR_RESPONSES
from loupe.api.security import SecurityHeadersMiddleware
from loupe.api.timing import ServerTimingMiddleware
from loupe.errors import ErrorCode, LoupeError
from loupe.media.budget import set_decode_limits
from loupe.settings import Settings, get_settings

log = logging.getLogger(__name__)
WEB_DIST = Path(__file__).resolve().parent.parent / "web_dist"


def _loupe_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LoupeError)
    return loupe_error_response(exc, roots=getattr(request.app.state, "private_roots", ()))


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (404, 405, body limits) in the shape of every other error."""
    assert isinstance(exc, StarletteHTTPException)
    detail: Any = exc.detail
    if not isinstance(detail, dict):
        detail = {"code": f"http_{exc.status_code}", "message": str(detail)}
    return JSONResponse(
        status_code=exc.status_code, content={"detail": detail}, headers=exc.headers
    )


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    parts = [
        f"{'.'.join(str(x) for x in e['loc'] if x != 'body') or 'body'}: {e['msg']}" for e in errors
    ]
    return JSONResponse(
        status_code=422,
        content={
            "detail": {
                "code": ErrorCode.INVALID.value,
                "message": "; ".join(parts),
                "errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in errors],
            }
        },
    )


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    """Build the app. With ``migrate`` the database is upgraded on start-up."""
    from loupe.plugins import load_plugins

    load_plugins()
    settings = settings or get_settings()
    set_decode_limits(
        max_bytes=settings.max_decode_bytes, concurrent=settings.max_concurrent_decodes
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        from loupe.services.items.temp_files import remove_stale_temp_files

        remove_stale_temp_files(settings)  # left by a crashed process
        if migrate:
            from loupe.db.migrate import upgrade

            upgrade(settings.db_url)
        async with housekeeping(settings):
            yield

    app = FastAPI(
        title="Loupe",
        version=loupe.__version__,
        description="Model-assisted human-in-the-loop labeling for scientific and medical images.",
        docs_url=None,  # loupe.api.docs serves it without a CDN
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.add_exception_handler(LoupeError, _loupe_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    add_database_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(ServerTimingMiddleware)  # outermost: times everything inside
    app.state.private_roots = (settings.home,)  # never shown in error messages
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for router in ROUTERS:
        app.include_router(router, prefix="/api", responses=ERROR_RESPONSES)
    mount_docs(app, "/api/openapi.json")
    _mount_front_end(app)
    return app


_NO_FRONT_END = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Loupe</title><style>body{font:16px system-ui;margin:4rem auto;max-width:40rem}</style>
</head><body><h1>Loupe</h1><p>The API is running. The browser app has not been built into
<code>src/loupe/web_dist</code> in this installation.</p>
<p><a href="/api/docs">API documentation</a> &middot; <a href="/api/info">server info</a></p>
</body></html>"""


def _mount_front_end(app: FastAPI) -> None:
    index = WEB_DIST / "index.html"
    if not index.exists():

        @app.get("/", include_in_schema=False)
        def no_front_end() -> HTMLResponse:
            return HTMLResponse(_NO_FRONT_END)

        return
    assets = WEB_DIST / "assets"
    if assets.is_dir():
        app.mount("/assets", StaticFiles(directory=assets), name="assets")

    # Any non-API path serves the single-page app (client-side routing).
    @app.get("/{path:path}", include_in_schema=False)
    def spa(path: str) -> FileResponse:
        if path.startswith("api/"):
            raise LoupeError(ErrorCode.NOT_FOUND, f"no API route /{path}")
        candidate = (WEB_DIST / path).resolve()
        if path and candidate.is_file() and WEB_DIST in candidate.parents:
            return FileResponse(candidate)
        return FileResponse(index)
