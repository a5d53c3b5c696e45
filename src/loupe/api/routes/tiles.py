"""DeepZoom tiles of an item's image, for the zoomable viewer (OpenSeadragon).

``GET .../dzi`` is the descriptor, ``GET .../tiles/{level}/{col}_{row}.jpeg`` one
JPEG tile of 254 pixels plus one pixel of overlap (the DeepZoom convention). Items
never change their pixels (an item is its content hash), so tiles are cached by the
browser for a day and answer 304 to a matching ``If-None-Match``.
"""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from loupe.api.deps import SessionDep, ViewerProject
from loupe.api.params import MAX_ID, Id
from loupe.services.items import pixels
from loupe.services.items.pixels import TileSource

router = APIRouter(prefix="/projects/{project_id}/items/{item_id}", tags=["tiles"])

CACHE_CONTROL = "private, max-age=86400, immutable"


def _source(db: SessionDep, project: ViewerProject, item_id: int) -> TileSource:
    source = pixels.tile_source(db, project, item_id)
    db.close()  # decoding can take a while: do not hold a database connection meanwhile
    return source


def _not_modified(request: Request, etag: str) -> bool:
    return etag in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}


@router.get(
    "/dzi",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "DeepZoom descriptor"}},
)
def deepzoom_descriptor(
    item_id: Id, request: Request, project: ViewerProject, db: SessionDep
) -> Response:
    source = _source(db, project, item_id)
    etag = f'"{source.sha256}-dzi"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    xml = pixels.deepzoom_descriptor(source)
    return Response(xml, media_type="application/xml", headers=headers)


@router.get(
    "/tiles/{level}/{col}_{row}.jpeg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "one DeepZoom tile"}},
)
def deepzoom_tile(
    item_id: Id,
    request: Request,
    project: ViewerProject,
    db: SessionDep,
    level: int = Path(ge=0, le=40),
    col: int = Path(ge=0, le=MAX_ID),
    row: int = Path(ge=0, le=MAX_ID),
) -> Response:
    source = _source(db, project, item_id)
    etag = f'"{source.sha256}-{level}-{col}-{row}"'
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag}
    if _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    jpeg = pixels.deepzoom_tile(source, level, col, row)
    return Response(jpeg, media_type="image/jpeg", headers=headers)
