"""Thumbnails by signed URL (see ``services/signed_urls.py``): no session, no queries.

The grid's first paint asks for 200 of these at once, so the route is async and
does no database work when the thumbnail is stored (the signature proves the
caller may see it): a small file read in the event loop instead of a
thread-pool hop per dependency. Only a missing thumbnail is rebuilt, in a
worker thread with a transaction of its own.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from loupe.api.deps import SettingsDep
from loupe.services.items import pixels
from loupe.services.items.signed_urls import check_thumbnail

router = APIRouter(prefix="/thumbs", tags=["items"])


@router.get(
    "/{sha256}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
async def signed_thumbnail(
    sha256: str,
    settings: SettingsDep,
    exp: int | None = Query(None, description="expiry, Unix seconds"),
    sig: str | None = Query(None, max_length=64),
) -> Response:
    assert settings.secret_key
    check_thumbnail(settings.secret_key, sha256, exp or 0, sig or "")
    jpeg = pixels.cached_thumbnail(settings, sha256)
    if jpeg is None:
        jpeg = await run_in_threadpool(pixels.rebuild_thumbnail, settings, sha256)
    return Response(
        jpeg,
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=21600, immutable"},
    )
