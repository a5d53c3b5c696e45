"""Assemble the FastAPI application: routers, error handler, static front end."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

import loupe
from loupe.api.routes import ROUTERS
from loupe.errors import ErrorCode, LoupeError
from loupe.settings import Settings, get_settings

log = logging.getLogger(__name__)
WEB_DIST = Path(__file__).resolve().parent.parent / "web_dist"


def _loupe_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LoupeError)
    return JSONResponse(status_code=exc.http_status, content={"detail": exc.to_detail()})


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
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.ensure_dirs()
        if migrate:
            from loupe.db.migrate import upgrade

            upgrade(settings.db_url)
        yield

    app = FastAPI(
        title="Loupe",
        version=loupe.__version__,
        description="Model-assisted human-in-the-loop labeling for scientific and medical images.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.add_exception_handler(LoupeError, _loupe_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for router in ROUTERS:
        app.include_router(router, prefix="/api")
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
