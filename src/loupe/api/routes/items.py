"""Items: list with filters and paging, detail, thumbnail, original file."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from loupe.api.deps import OwnerProject, SessionDep, SettingsDep, ViewerProject
from loupe.api.params import MAX_ID, Id, Offset, OptionalIdQuery
from loupe.api.schemas.common import Message
from loupe.api.schemas.items import AnnotationPublic, DraftPublic, ItemPublic, ItemsPublic
from loupe.api.security import safe_media_type
from loupe.services.items import files as item_files
from loupe.services.items import pixels, signed_urls
from loupe.services.items import query as item_query
from loupe.services.labels.core import NONE_KIND, get_item
from loupe.settings import Settings

router = APIRouter(prefix="/projects/{project_id}/items", tags=["items"])


def item_public(
    row: item_query.ItemRow, settings: Settings, *, members: bool = False
) -> ItemPublic:
    item, ann, pred = row.item, row.annotation, row.prediction
    annotation = None
    if ann is not None and ann.kind != NONE_KIND:
        annotation = AnnotationPublic(
            kind=ann.kind,
            label=ann.label,
            scores=ann.scores,
            data=ann.data,
            note=ann.note,
            origin=ann.origin,
            model_version_id=ann.model_version_id,
            version=ann.version,
            updated_by=ann.updated_by,
            updated_at=ann.updated_at,
        )
    draft = None
    if pred is not None:
        draft = DraftPublic(
            model_version_id=pred.model_version_id,
            label=pred.label,
            confidence=pred.confidence,
            uncertainty=pred.uncertainty,
            output=pred.output,
            flagged=pred.flagged,
            flag_reason=pred.flag_reason,
            members=dict(pred.members or {}) if members else None,
        )
    return ItemPublic(
        id=item.id,
        project_id=item.project_id,
        case_id=item.case_id,
        filename=item.filename,
        format=item.format,
        kind=item.kind,
        shape=item.shape,
        dtype=item.dtype,
        axes=item.axes,
        spacing=item.spacing,
        size_bytes=item.size_bytes,
        sha256=item.sha256,
        meta=item.meta,
        status=item.status,
        error=item.error,
        created_at=item.created_at,
        version=ann.version if ann is not None else 0,
        thumbnail_url=signed_urls.thumbnail_url(settings.secret_key or "", item.sha256),
        annotation=annotation,
        draft=draft,
    )


@router.get("", response_model=ItemsPublic)
def list_items(
    project: ViewerProject,
    db: SessionDep,
    settings: SettingsDep,
    case_id: OptionalIdQuery = None,
    label: str | None = Query(None, description="a class name, 'unsure' or 'skip'"),
    status: str | None = Query(None, description="labelled|unlabelled|unsure|skip|error"),
    flagged: bool | None = None,
    predicted: str | None = Query(None, description="the active model's drafted class"),
    search: str | None = Query(None, max_length=200, description="part of the file name"),
    flag_reason: str | None = Query(
        None, max_length=200, description="the draft's flag reason, or its start"
    ),
    origin: str | None = Query(None, description="the label's origin: human|model_accepted"),
    min_confidence: float | None = Query(None, ge=0, le=1),
    max_confidence: float | None = Query(None, ge=0, le=1),
    sort: str = Query(
        "id", description="id|confidence|-confidence|uncertainty|-uncertainty (drafts; none last)"
    ),
    members: bool = Query(False, description="include each ensemble member's draft"),
    limit: int = Query(100, ge=1, le=1000),
    offset: Offset = 0,
    after_id: int | None = Query(
        None, ge=0, le=MAX_ID, description="keyset paging: items after this id"
    ),
    count: bool = Query(True, description="compute the total (skip it for speed)"),
    inline_thumbnails: bool = Query(
        False,
        description="add each stored thumbnail as a data: URI (the grid's first screen: one "
        "request instead of one per tile)",
    ),
) -> ItemsPublic:
    f = item_query.ItemFilter(
        case_id=case_id,
        label=label,
        status=status,
        flagged=flagged,
        predicted=predicted,
        search=search,
        flag_reason=flag_reason,
        origin=origin,
        min_confidence=min_confidence,
        max_confidence=max_confidence,
    )
    rows, total = item_query.list_items(
        db, project, f, limit=limit, offset=offset, after_id=after_id, with_count=count, sort=sort
    )
    # keyset paging follows the id order only; other sorts page by offset
    next_after = rows[-1].item.id if len(rows) == limit and sort == "id" else None
    data = [item_public(r, settings, members=members) for r in rows]
    if inline_thumbnails:
        for out, row in zip(data, rows, strict=True):
            out.thumbnail_data = pixels.thumbnail_data_uri(settings, row.item.sha256)
    return ItemsPublic(data=data, count=total, next_after_id=next_after)


@router.get("/{item_id}", response_model=ItemPublic)
def get_item_detail(
    item_id: Id, project: ViewerProject, db: SessionDep, settings: SettingsDep
) -> ItemPublic:
    return item_public(item_query.item_row(db, project, item_id), settings)


@router.get(
    "/{item_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}},
)
def thumbnail(
    item_id: Id, project: ViewerProject, db: SessionDep, settings: SettingsDep
) -> Response:
    item = get_item(db, project, item_id)
    path = item_files.thumbnail_path(settings, item)
    # Thumbnails are a few kB: bytes in one response beat FileResponse's
    # threaded streaming (the grid loads hundreds at once).
    return Response(
        path.read_bytes(),
        media_type="image/jpeg",
        headers={"Cache-Control": "private, max-age=86400, immutable"},
    )


@router.get("/{item_id}/file", response_class=FileResponse)
def original_file(item_id: Id, project: ViewerProject, db: SessionDep) -> FileResponse:
    """The original file, by item id only (never by a client-given path)."""
    item = get_item(db, project, item_id)
    path = item_files.item_file_path(item)
    # The type comes from the detected format, never from the (user-given) name:
    # an upload called x.html must not be served as a page.
    return FileResponse(
        path,
        filename=item.filename,
        media_type=safe_media_type(item.format),
        content_disposition_type="attachment",
    )


@router.delete("/{item_id}", response_model=Message)
def delete_item(item_id: Id, project: OwnerProject, db: SessionDep) -> Message:
    item = get_item(db, project, item_id)
    db.delete(item)
    return Message(message=f"item {item_id} removed from the project (source file untouched)")
