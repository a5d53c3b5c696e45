"""``/api/docs``: Swagger UI served from this server, without inline script.

FastAPI's default page loads Swagger UI from a CDN and starts it with an
inline ``<script>``; both break the Content-Security-Policy (and offline
use). The assets come from the ``swagger-ui-bundle`` package instead, and the
start-up code is a small file of its own. Without the package the page falls
back to FastAPI's, with a CSP that allows exactly what that page needs.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/api/docs"
_ASSETS = DOCS_URL + "/assets"
_INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "%s",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
});
"""
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%s - API</title>
<link rel="stylesheet" href="%s/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="%s/swagger-ui-bundle.js"></script>
<script src="%s/swagger-ui-standalone-preset.js"></script>
<script src="%s/init.js"></script>
</body></html>
"""
# Only for the fallback page (CDN assets and FastAPI's inline start-up script).
_CDN_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "frame-ancestors 'none'"
)


def mount_docs(app: FastAPI, openapi_url: str) -> None:
    """Add ``GET /api/docs`` (and its assets) to ``app``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None

    if swagger_ui_path is None:

        @app.get(DOCS_URL, include_in_schema=False)
        def cdn_docs() -> HTMLResponse:
            page = get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - API")
            page.headers["Content-Security-Policy"] = _CDN_CSP
            return page

        return

    @app.get(_ASSETS + "/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(_INIT_JS % openapi_url, media_type="text/javascript")

    app.mount(_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE % (app.title, _ASSETS, _ASSETS, _ASSETS, _ASSETS))
