"""Response hardening: security headers on every response, safe types for user
files, and error messages without server paths.

The Content-Security-Policy fits the built app: scripts and style sheets come
from ``/assets`` only (no inline script; ``index.html`` has none).
``style-src 'unsafe-inline'`` stays because Svelte writes ``style="..."``
attributes (class colours, overlay positions); images may be ``data:``/``blob:``
URLs (canvas overlays, OpenSeadragon, NiiVue). ``/api/docs`` serves Swagger UI
from the ``swagger-ui-bundle`` package with an initialiser file of its own, so
the same policy holds there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

# Item files are served with one of these types, never one a browser renders
# as a page (text/html, image/svg+xml, ...): anything else is a download.
SAFE_MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "fits": "application/fits",
    "nifti": "application/octet-stream",
    "dicom": "application/dicom",
}


def safe_media_type(fmt: str | None) -> str:
    """The Content-Type to serve an item file of format ``fmt`` with."""
    return SAFE_MEDIA_TYPES.get(fmt or "", "application/octet-stream")


class SecurityHeadersMiddleware:
    """Add :data:`SECURITY_HEADERS` to every HTTP response (a route's own value wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# An absolute file path: '/' then at least two components; '/api/...' URLs are not paths.
_ABS_PATH = re.compile(r"(?<![\w/.:])/(?!api/)(?:[^\s/'\"<>:,;()\[\]]+/)+([^\s/'\"<>:,;()\[\]]+)")


def scrub_paths(text: str, roots: Iterable[Path] = ()) -> str:
    """``text`` with absolute server paths cut down to their file names.

    ``roots`` (e.g. ``LOUPE_HOME``) are removed first, wherever they occur,
    also inside relative spellings; then any other absolute path loses its
    folders. ``'cannot read /srv/loupe/media/ab/x.png: truncated'`` becomes
    ``'cannot read x.png: truncated'``.
    """
    for root in roots:
        for spelling in {str(root), str(root.resolve())}:
            if len(spelling) > 1:
                text = text.replace(spelling.rstrip("/") + "/", "")
    return _ABS_PATH.sub(lambda m: m.group(1), text)
