"""DeepZoom tiles of an item's image, for the zoomable viewer (OpenSeadragon).

``GET .../dzi`` is the descriptor, ``GET .../tiles/{level}/{col}_{row}.jpeg`` one
JPEG tile of 254 pixels plus one pixel of overlap (the DeepZoom convention). Items
never change their pixels (an item is its content hash), so tiles are cached by the
browser for a day and answer 304 to a matching ``If-None-Match``.
"""

from __future__ import annotations

from pathlib import Path as FilePath

from fastapi import APIRouter, Path, Request, Response

from loupe.api.deps import SessionDep, ViewerProject
from loupe.errors import ErrorCode, LoupeError
from loupe.media import MediaError
from loupe.media import tiles as media_tiles
from loupe.services.items import files as item_files
from loupe.services.labels.core import get_item

router = APIRouter(prefix="/projects/{project_id}/items/{item_id}", tags=["tiles"])

CACHE_CONTROL = "private, max-age=86400, immutable"


def _source(db: SessionDep, project: ViewerProject, item_id: int) -> tuple[FilePath, str, str]:
    """(file, etag base, file name) of a 2-D item; the session is released afterwards."""
    item = get_item(db, project, item_id)
    if item.kind != "image" or item.files:
        raise LoupeError(
            ErrorCode.INVALID,
            f"item {item_id} ({item.filename}) is a {item.kind}; tiles are for 2-D images",
            item_id=item_id,
        )
    path = item_files.item_file_path(item)
    facts = (path, item.sha256, item.filename)
    db.close()  # decoding can take a while: do not hold a database connection meanwhile
    return facts


def _media_error(exc: MediaError, item_id: int, filename: str) -> LoupeError:
    return LoupeError(
        ErrorCode.UNSUPPORTED_MEDIA,
        f"cannot read tiles of item {item_id} ({filename}): {exc.reason}",
        item_id=item_id,
    )


def _not_modified(request: Request, etag: str) -> bool:
    return etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}


@router.get(
    "/dzi",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "DeepZoom descriptor"}},
)
def deepzoom_descriptor(
    item_id: int, request: Request, project: ViewerProject, db: SessionDep
) -> Response:
    path, sha, filename = _source(db, project, item_id)
    etag = f'"{sha}-dzi"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    try:
        rows, cols = media_tiles.image_size(path)
    except MediaError as exc:
        raise _media_error(exc, item_id, filename) from exc
    return Response(media_tiles.dzi_xml(rows, cols), media_type="application/xml", headers=headers)


@router.get(
    "/tiles/{level}/{col}_{row}.jpeg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "one DeepZoom tile"}},
)
def deepzoom_tile(
    item_id: int,
    request: Request,
    project: ViewerProject,
    db: SessionDep,
    level: int = Path(ge=0, le=40),
    col: int = Path(ge=0),
    row: int = Path(ge=0),
) -> Response:
    path, sha, filename = _source(db, project, item_id)
    etag = f'"{sha}-{level}-{col}-{row}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    try:
        jpeg = media_tiles.tile_jpeg(path, level, col, row)
    except MediaError as exc:
        raise _media_error(exc, item_id, filename) from exc
    except ValueError as exc:  # a level or tile outside the pyramid
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id}: {exc}", item_id=item_id) from exc
    return Response(jpeg, media_type="image/jpeg", headers=headers)
