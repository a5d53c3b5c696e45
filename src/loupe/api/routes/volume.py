"""3-D volumes: image and masks as NIfTI, corrections, interactive mode, jobs, dashboard.

Contract (shared with the NiiVue web UI), all under /api/projects/{project_id}/volume.
Additions to the contract, nothing changed:
- ``POST /predict`` and ``POST /train`` answer 409 ``conflict`` with a message when
  the segmenter cannot run yet (no trained UNet, nnU-Net not installed, no corrected
  volumes); ``POST /train`` takes optional training options (patch, epochs, ...).
- ``GET /image.nii.gz`` answers 413 ``too_large`` (size and limit in the message) for a
  volume over the memory budget.
- Versions in ``/dashboard`` also carry ``kind`` (unet3d | voxel | nnunet).
- Activation and rollback use the existing route, whose path is
  ``POST /api/projects/{pid}/versions/{id}/activate`` (no ``/models`` segment).
- ``GET /image.nii.gz`` also starts the ``volume_features`` job (the filter bank for
  interactive mode) when it is not cached; ``/interactive`` computes it itself otherwise.
- ``POST /interactive`` also answers ``X-Predict-Ms``.
- Exports: ``POST /api/projects/{pid}/exports`` with ``format`` ``nifti_masks``,
  ``nnunet`` or ``dicom_seg`` writes a ZIP (``services/volumes/export.py``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from loupe.api.deps import (
    AnnotatorProject,
    CurrentUser,
    OwnerProject,
    SessionDep,
    SettingsDep,
    ViewerProject,
)
from loupe.api.params import Id
from loupe.api.schemas.jobs import JobPublic
from loupe.api.schemas.volume import (
    InteractiveRequest,
    MaskSaved,
    PredictRequest,
    TrainRequest,
    VolumeDashboard,
)
from loupe.db.models import Job, Project
from loupe.services.projects.cases import ensure_cases_open
from loupe.services.volumes import dashboard as volume_dashboard
from loupe.services.volumes import feedback, interactive, predict, store, training

router = APIRouter(prefix="/projects/{project_id}/volume", tags=["volume"])


# The role first (403/404), then the kind (409 for a project of another kind). The
# checks are async: the project is already loaded, nothing blocks.
async def _viewer(project: ViewerProject) -> Project:
    store.require_volume_project(project)
    return project


async def _annotator(project: AnnotatorProject) -> Project:
    store.require_volume_project(project)
    return project


async def _owner(project: OwnerProject) -> Project:
    store.require_volume_project(project)
    return project


VolumeViewer = Annotated[Project, Depends(_viewer)]
VolumeAnnotator = Annotated[Project, Depends(_annotator)]
VolumeOwner = Annotated[Project, Depends(_owner)]

NIFTI_GZ = "application/gzip"
_CACHE = "private, max-age=3600"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


_NIFTI_RESPONSE: dict[int | str, dict[str, object]] = {200: {"content": {NIFTI_GZ: _BINARY}}}


@router.get("/items/{item_id}/image.nii.gz", response_class=FileResponse, responses=_NIFTI_RESPONSE)
def image(
    item_id: Id, project: VolumeViewer, user: CurrentUser, db: SessionDep, settings: SettingsDep
) -> Response:
    """The volume as NIfTI (uint8/int16 when the values fit), its grid as ingested.
    Also starts computing the filter bank for interactive mode when it is not cached."""
    source = feedback.volume_item(db, project, item_id)
    db.rollback()  # release the session before a possibly long conversion
    path = store.image_file(source, settings)
    interactive.prefetch_features(settings, source, user_id=user.id)
    return FileResponse(
        path,
        media_type=NIFTI_GZ,
        filename=f"item{item_id}.nii.gz",
        headers={"Cache-Control": f"{_CACHE}, immutable", "ETag": f'"{source.sha256}"'},
    )


@router.get("/items/{item_id}/mask.nii.gz", response_class=FileResponse, responses=_NIFTI_RESPONSE)
def mask(
    item_id: Id,
    project: VolumeViewer,
    db: SessionDep,
    source: str = Query("human", pattern="^(human|model)$"),
) -> Response:
    """The human mask or the active model's newest prediction (uint8, image grid)."""
    path, version_id = feedback.mask_file(db, project, item_id, source)
    headers = {"Cache-Control": "private, no-cache"}
    if version_id is not None:
        headers["X-Model-Version"] = str(version_id)
    return FileResponse(path, media_type=NIFTI_GZ, filename=path.name, headers=headers)


_MASK_BODY = {
    "requestBody": {
        "required": True,
        "content": {NIFTI_GZ: _BINARY, "application/octet-stream": _BINARY},
    }
}


@router.put("/items/{item_id}/mask", response_model=MaskSaved, openapi_extra=_MASK_BODY)
async def put_mask(
    item_id: Id,
    request: Request,
    project: VolumeAnnotator,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    version: int | None = Query(None, ge=0),
    model_version_id: int | None = Query(None, ge=1),
) -> MaskSaved:
    """Save a corrected mask (gzip'd NIfTI body) as the item's new Annotation version."""
    body = await request.body()

    def save() -> feedback.SavedMask:  # decoding and comparing masks: off the event loop
        ensure_cases_open(db, project, [item_id])
        return feedback.save_mask(
            db,
            settings,
            project,
            item_id,
            body,
            user_id=user.id,
            expected_version=version,
            model_version_id=model_version_id,
        )

    saved = await run_in_threadpool(save)
    return MaskSaved(**saved.__dict__)


@router.post("/items/{item_id}/interactive", response_class=Response, responses=_NIFTI_RESPONSE)
def interactive_mask(
    item_id: Id,
    body: InteractiveRequest,
    project: VolumeAnnotator,
    db: SessionDep,
    settings: SettingsDep,
) -> Response:
    """Refit the voxel classifier on the clicks/scribbles; the mask as gzip'd NIfTI."""
    source = feedback.volume_item(db, project, item_id)
    allowed = set(store.class_values(project))
    db.rollback()
    result = interactive.segment(
        source,
        settings,
        clicks=[interactive.Click(c.x, c.y, c.z, c.value) for c in body.clicks],
        scribbles=[interactive.Scribble(s.value, list(s.voxels)) for s in body.scribbles],
        focus=body.focus.model_dump() if body.focus is not None else None,
        full=body.full,
        allowed=allowed,
    )
    return Response(
        result.payload,
        media_type=NIFTI_GZ,
        headers={
            "X-Refit-Ms": f"{result.refit_ms:.1f}",
            "X-Predict-Ms": f"{result.predict_ms:.1f}",
            "Cache-Control": "no-store",
        },
    )


@router.post("/predict", response_model=JobPublic, status_code=202)
def start_predict(
    body: PredictRequest,
    project: VolumeAnnotator,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> Job:
    """Queue automatic segmentation (``volume_predict``) of the given or all volumes."""
    db.commit()  # release the SQLite write lock before the job's own transactions
    return predict.request_predict(
        settings, project.id, user_id=user.id, item_ids=body.item_ids, segmenter=body.segmenter
    )


@router.post("/train", response_model=JobPublic, status_code=202)
def start_train(
    project: VolumeOwner,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    body: TrainRequest | None = None,
) -> Job:
    """Queue ``volume_train``; 409 below ``retrain_min_corrections`` or while one runs."""
    db.commit()
    options = body.model_dump(exclude_none=True) if body is not None else {}
    return training.request_train(settings, project.id, user_id=user.id, options=options)


@router.get("/dashboard", response_model=VolumeDashboard)
def get_dashboard(project: VolumeViewer, db: SessionDep) -> VolumeDashboard:
    """Feedback counts, Dice over time, retrain threshold, versions, the training job."""
    data = volume_dashboard.dashboard(db, project)
    job = data.pop("job")
    return VolumeDashboard(**data, job=JobPublic.model_validate(job) if job is not None else None)
