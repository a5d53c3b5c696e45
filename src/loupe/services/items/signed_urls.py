"""Signed, expiring thumbnail URLs.

The grid shows hundreds of thumbnails at once. Checking the session, the
project role and the item for each of them costs several queries per image;
instead the (already authorised) item listing hands out URLs signed with the
server secret, and the thumbnail route checks only the signature. A URL gives
access to one thumbnail, to whoever holds it, until it expires (the same model
as a presigned object-store URL). Expiry is rounded up to a window so the
same URL is reused across page loads and the browser cache hits.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from loupe.errors import ErrorCode, LoupeError

WINDOW_S = 6 * 3600  # URLs stay the same within a window; valid 1-2 windows
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _sig(secret: str, sha256: str, expires: int) -> str:
    msg = f"thumb:{sha256}:{expires}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()[:32]


def thumbnail_url(secret: str, sha256: str, *, now: float | None = None) -> str:
    now = time.time() if now is None else now
    expires = (int(now) // WINDOW_S + 2) * WINDOW_S
    return f"/api/thumbs/{sha256}.jpg?exp={expires}&sig={_sig(secret, sha256, expires)}"


def check_thumbnail(
    secret: str, sha256: str, expires: int, sig: str, *, now: float | None = None
) -> None:
    """Raise FORBIDDEN unless ``sig`` is this server's signature and not expired."""
    now = time.time() if now is None else now
    if not _SHA.match(sha256):
        raise LoupeError(ErrorCode.NOT_FOUND, "no such thumbnail")
    if expires < now or not hmac.compare_digest(sig, _sig(secret, sha256, expires)):
        raise LoupeError(ErrorCode.FORBIDDEN, "invalid or expired thumbnail link; reload the page")
