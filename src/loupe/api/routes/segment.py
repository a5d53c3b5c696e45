"""2-D segmentation of a project's items: annotation, mask, heatmap, training.

Contract shared with ``web/src/tasks/segment/`` (changes are noted here first):

- ``GET/PUT /items/{item_id}/annotation``: points, scribbles, has_mask, origin, version
  (409 stale version; 422 point/scribble outside the image or unknown class value);
- ``PUT /items/{item_id}/mask?version=N`` (body: PNG of label values) and
  ``GET /items/{item_id}/mask.png``;
- ``PUT /items/{item_id}/mask/region?x=&y=&version=N`` (body: PNG of a w x h region of
  label values pasted at column x, row y; 422 outside the image);
- ``GET /items/{item_id}/preview.jpg?max_size=`` (the image downscaled for the editor's
  base layer: big TIFFs are read from a pyramid level, never whole);
- ``GET /items/{item_id}/heatmap.png?layer=probability|uncertainty&value=V&max_size=``
  (404 ``not_found`` with ``reason: no_prediction`` before the first prediction; header
  ``X-Model-Version``; during a training it is the running version's live heatmap);
- ``POST /items/{item_id}/extract-points``, ``POST /items/{item_id}/accept-mask``;
- ``POST /train`` (202 job ``segment_train``; 409 ``conflict`` while one runs; the job's
  ``message`` is JSON ``{"epoch", "loss", "val_loss", "val_dice", "heatmap_rev"}``
  during the epochs and its ``result`` carries the same keys at the end);
- ``GET /status``;
- ``GET /export.zip`` (extra: masks, COCO RLE JSON, points CSV);
- ``POST /masks/import`` (extra: a ZIP or single PNG/TIFF of masks named like the items).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import FileResponse

from loupe.api.deps import AnnotatorProject, CurrentUser, SessionDep, SettingsDep, ViewerProject
from loupe.api.params import Id
from loupe.api.schemas.jobs import JobPublic
from loupe.api.schemas.segment import (
    AcceptMaskRequest,
    ExtractPointsRequest,
    MaskImportResult,
    SegmentAnnotationPublic,
    SegmentAnnotationUpdate,
    SegmentStatus,
    SegmentTrainRequest,
)
from loupe.db.models import Job
from loupe.services.segments import exports, imports, payload, predictions, status, train
from loupe.services.segments.payload import SegmentAnnotation

router = APIRouter(prefix="/projects/{project_id}/segment", tags=["segment"])

PNG = "image/png"
# the OpenAPI request body of the routes that take a raw PNG (whole mask, region)
PNG_BODY = {
    "requestBody": {
        "required": True,
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _public(ann: SegmentAnnotation) -> SegmentAnnotationPublic:
    return SegmentAnnotationPublic.model_validate(
        {
            "item_id": ann.item_id,
            "version": ann.version,
            "width": ann.width,
            "height": ann.height,
            "points": ann.points,
            "scribbles": ann.scribbles,
            "has_mask": ann.has_mask,
            "origin": ann.origin,
        }
    )


@router.get("/items/{item_id}/annotation", response_model=SegmentAnnotationPublic)
def get_annotation(item_id: Id, project: ViewerProject, db: SessionDep) -> SegmentAnnotationPublic:
    """The item's points, scribbles and mask flag (version 0 before the first save)."""
    return _public(payload.view(db, project, item_id))


@router.put("/items/{item_id}/annotation", response_model=SegmentAnnotationPublic)
def put_annotation(
    item_id: Id,
    body: SegmentAnnotationUpdate,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
) -> SegmentAnnotationPublic:
    """Save the points and scribbles (the mask is kept); 409 on a stale version."""
    ann = payload.save(
        db,
        project,
        item_id,
        version=body.version,
        points=[p.model_dump() for p in body.points],
        scribbles=[s.model_dump() for s in body.scribbles],
        user_id=user.id,
    )
    return _public(ann)


@router.put(
    "/items/{item_id}/mask",
    response_model=SegmentAnnotationPublic,
    openapi_extra=PNG_BODY,
)
def put_mask(
    item_id: Id,
    body: Annotated[bytes, Body(media_type=PNG)],
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    version: int = Query(ge=0, description="the annotation version the edit started from"),
) -> SegmentAnnotationPublic:
    """Store the whole edited mask (8-bit label values, the image's size) losslessly."""
    ann = payload.save_mask(
        db, settings, project, item_id, version=version, mask=bytes(body), user_id=user.id
    )
    return _public(ann)


@router.put(
    "/items/{item_id}/mask/region",
    response_model=SegmentAnnotationPublic,
    openapi_extra=PNG_BODY,
)
def put_mask_region(
    item_id: Id,
    body: Annotated[bytes, Body(media_type=PNG)],
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    x: int = Query(ge=0, description="column of the region's left edge"),
    y: int = Query(ge=0, description="row of the region's top edge"),
    version: int = Query(ge=0, description="the annotation version the edit started from"),
) -> SegmentAnnotationPublic:
    """Paste a region of the mask (8-bit label values, w x h px at column ``x``, row
    ``y``) into the stored mask (zeros when none): a brush edit on a big image without
    sending the whole mask. 422 outside the image or for unknown values; 409 when stale."""
    ann = payload.save_mask_region(
        db,
        settings,
        project,
        item_id,
        x=x,
        y=y,
        version=version,
        region=bytes(body),
        user_id=user.id,
    )
    return _public(ann)


@router.get("/items/{item_id}/mask.png", response_class=Response)
def get_mask(
    item_id: Id, project: ViewerProject, db: SessionDep, settings: SettingsDep
) -> Response:
    """The stored mask (8-bit label values); 404 when the item has none."""
    data = payload.mask_png(db, settings, project, item_id)
    return Response(data, media_type=PNG, headers={"Cache-Control": "no-store"})


@router.get("/items/{item_id}/preview.jpg", response_class=Response)
def get_preview(
    item_id: Id,
    project: ViewerProject,
    db: SessionDep,
    max_size: int = Query(2048, ge=16, le=8192),
) -> Response:
    """The image as a JPEG at most ``max_size`` px on its long side (the editor's base
    layer for big or non-browser images; coordinates stay in full-resolution pixels)."""
    data = payload.preview(db, project, item_id, max_size=max_size)
    return Response(
        data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


@router.get("/items/{item_id}/heatmap.png", response_class=Response)
def get_heatmap(
    item_id: Id,
    project: ViewerProject,
    db: SessionDep,
    settings: SettingsDep,
    layer: str = Query("probability", pattern="^(probability|uncertainty)$"),
    value: int | None = Query(None, ge=0, le=255, description="class (default: foreground)"),
    max_size: int = Query(1024, ge=16, le=8192),
) -> Response:
    """RGBA PNG of the latest prediction (red = background .. green = class ``value``)."""
    pmap = predictions.probability(db, settings, project, item_id)
    data = predictions.heatmap_png(pmap, layer=layer, value=value, max_size=max_size)
    return Response(
        data,
        media_type=PNG,
        headers={"X-Model-Version": str(pmap.model_version_id), "Cache-Control": "no-store"},
    )


@router.post("/items/{item_id}/extract-points", response_model=SegmentAnnotationPublic)
def extract_points(
    item_id: Id,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    body: ExtractPointsRequest | None = None,
) -> SegmentAnnotationPublic:
    """Replace the extracted points with points picked from the prediction."""
    params = body.model_dump() if body is not None else {}
    return _public(predictions.extract(db, settings, project, item_id, params, user_id=user.id))


@router.post("/items/{item_id}/accept-mask", response_model=SegmentAnnotationPublic)
def accept_mask(
    item_id: Id,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    body: AcceptMaskRequest | None = None,
) -> SegmentAnnotationPublic:
    """The prediction becomes the mask (origin ``model_accepted``)."""
    threshold = body.threshold if body is not None else 0.5
    ann = predictions.accept_mask(
        db, settings, project, item_id, threshold=threshold, user_id=user.id
    )
    return _public(ann)


@router.post("/train", response_model=JobPublic, status_code=202)
def start_training(
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    body: SegmentTrainRequest | None = None,
) -> Job:
    """Queue a ``segment_train`` job; 409 while one is queued or running."""
    db.commit()  # release the SQLite write lock before the job's own transactions
    item_id = body.item_id if body is not None else None
    return train.request_training(settings, project.id, user_id=user.id, item_id=item_id)


@router.get("/status", response_model=SegmentStatus)
def get_status(project: ViewerProject, db: SessionDep) -> SegmentStatus:
    """The latest training job, the active (or newest) version and the settings."""
    job = status.latest_job(db, project)
    return SegmentStatus(
        job=JobPublic.model_validate(job) if job is not None else None,
        last_version=status.last_version(db, project),
        settings=status.settings_of(project),
    )


@router.post(
    "/masks/import",
    response_model=MaskImportResult,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def import_masks(
    body: Annotated[bytes, Body(media_type="application/zip")],
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> MaskImportResult:
    """Import masks (a ZIP of PNG/TIFF label images named like the items' files) as labels."""
    result = imports.import_masks(db, settings, project, bytes(body), user_id=user.id)
    return MaskImportResult(imported=result.imported, skipped=result.skipped)


@router.get("/export.zip", response_class=FileResponse)
def export_zip(project: ViewerProject, db: SessionDep, settings: SettingsDep) -> FileResponse:
    """Masks per item (PNG; TIFF for big images), ``coco.json`` (RLE) and ``points.csv``."""
    path = exports.export_path(settings, project)
    exports.write_export(db, settings, project, path)
    return FileResponse(path, media_type="application/zip", filename=path.name)
