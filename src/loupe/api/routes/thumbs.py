"""Thumbnails by signed URL (see ``services/signed_urls.py``): no session, no queries."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from sqlalchemy import select

from loupe.api.deps import SessionDep, SettingsDep
from loupe.db.models import Item
from loupe.errors import ErrorCode, LoupeError
from loupe.services.items import files as item_files
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
    path = item_files.thumbnail_file(settings, sha256)
    if not path.is_file():  # rare: rebuild it from any item with this content
        item = db.scalars(select(Item).where(Item.sha256 == sha256).limit(1)).first()
        if item is None:
            raise LoupeError(ErrorCode.NOT_FOUND, "no such thumbnail")
        path = item_files.thumbnail_path(settings, item)
    return Response(
        path.read_bytes(),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=21600, immutable"},
    )
