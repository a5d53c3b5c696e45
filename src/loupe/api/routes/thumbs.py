"""Thumbnails by signed URL (see ``services/signed_urls.py``): no session, no queries."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from loupe.api.deps import SessionDep, SettingsDep
from loupe.services.items import pixels
from loupe.services.items.signed_urls import check_thumbnail

router = APIRouter(prefix="/thumbs", tags=["items"])


@router.get(
    "/{sha256}.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def signed_thumbnail(
    sha256: str,
    settings: SettingsDep,
    db: SessionDep,
    exp: int | None = Query(None, description="expiry, Unix seconds"),
    sig: str | None = Query(None, max_length=64),
) -> Response:
    assert settings.secret_key
    check_thumbnail(settings.secret_key, sha256, exp or 0, sig or "")
    path = pixels.thumbnail_by_content(db, settings, sha256)
    return Response(
        path.read_bytes(),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=21600, immutable"},
    )
