"""``volume_predict``: automatic segmentation of volume items as a job with progress.

Segmenters (names as the API and web use them; ``loupe.learn.unet3d.SEGMENTERS``
holds the implementations):

* ``unet3d``: the active (else the newest ready) MONAI UNet version trained by
  ``volume_train``;
* ``nnunet``: a trained nnU-Net v2 model folder (project setting
  ``nnunet_model_folder``), run by nnunetv2's predictor when it is installed;
* ``voxel``: the voxel random forest fitted now on the corrected volumes (a new
  model version of kind ``voxel``).

Results are Predictions (mask files) of one model version, never human labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from loupe.db.models import Item, Job, ModelVersion
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind
from loupe.services.training.versions import make_active
from loupe.services.volumes.cases import (
    VOLUME_QUEUE,
    corrected_cases,
    get_project,
    new_version,
    store_prediction,
)
from loupe.services.volumes.feedback import active_version
from loupe.services.volumes.store import (
    class_values,
    load_mask,
    read_grid_of,
    read_voxels,
    volume_source,
)
from loupe.settings import Settings

PREDICT_KIND = "volume_predict"
SEGMENTER_NAMES: dict[str, str] = {"unet3d": "unet", "nnunet": "nnunet", "voxel": "voxel-rf"}


def describe_segmenters() -> list[dict[str, Any]]:
    """``[{"name", "title", "trains_here"}]`` for /api/info and the web menus."""
    from loupe.learn.unet3d import SEGMENTERS

    return [
        {"name": name, "title": SEGMENTERS[impl].title, "trains_here": SEGMENTERS[impl].trains_here}
        for name, impl in SEGMENTER_NAMES.items()
    ]


def _resolve(settings: Settings, project_id: int, segmenter: str | None) -> tuple[str, int | None]:
    """(segmenter, model version id or None when the job creates one); CONFLICT if impossible."""
    from loupe.learn.unet3d import nnunet_command

    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        active = active_version(db, project_id)
        if segmenter is None:
            segmenter = (
                active.kind if active is not None and active.kind in SEGMENTER_NAMES else "unet3d"
            )
        if segmenter not in SEGMENTER_NAMES:
            raise LoupeError(
                ErrorCode.INVALID, f"segmenter {segmenter!r}: use one of {sorted(SEGMENTER_NAMES)}"
            )
        if segmenter == "unet3d":
            if active is not None and active.kind == "unet3d":
                return segmenter, active.id
            newest = db.scalars(
                select(ModelVersion)
                .where(
                    ModelVersion.project_id == project_id,
                    ModelVersion.kind == "unet3d",
                    ModelVersion.status == "ready",
                )
                .order_by(ModelVersion.number.desc())
            ).first()
            if newest is None:
                raise LoupeError(
                    ErrorCode.CONFLICT,
                    "no trained 3-D UNet yet: retrain on corrected volumes first, "
                    "or use the 'voxel' segmenter",
                )
            return segmenter, newest.id
        if segmenter == "nnunet":
            folder = (project.settings or {}).get("nnunet_model_folder")
            if nnunet_command("nnUNetv2_predict_from_modelfolder") is None:
                raise LoupeError(
                    ErrorCode.CONFLICT, "nnU-Net v2 is not installed on this server (nnunetv2)"
                )
            if not folder or not (Path(str(folder)) / "plans.json").is_file():
                raise LoupeError(
                    ErrorCode.CONFLICT,
                    "set the project setting nnunet_model_folder to a trained nnU-Net v2 "
                    "model folder (with plans.json)",
                )
            return segmenter, None
        if not corrected_cases(db, project_id):
            raise LoupeError(
                ErrorCode.CONFLICT, "the voxel segmenter learns from corrected volumes; none yet"
            )
        return segmenter, None


def request_predict(
    settings: Settings,
    project_id: int,
    *,
    user_id: int | None,
    item_ids: list[int] | None,
    segmenter: str | None,
) -> Job:
    """Check the segmenter can run now and submit ``volume_predict``."""
    name, version_id = _resolve(settings, project_id, segmenter)
    if item_ids is not None:
        with session_scope(settings.db_url, write=False) as db:
            found = set(
                db.scalars(
                    select(Item.id).where(
                        Item.project_id == project_id,
                        Item.kind == "volume",
                        Item.id.in_(item_ids),
                    )
                )
            )
        missing = sorted(set(item_ids) - found)
        if missing:
            raise LoupeError(ErrorCode.NOT_FOUND, f"volume item(s) {missing} not in the project")
    params = {
        "project_id": project_id,
        "segmenter": name,
        "model_version_id": version_id,
        "item_ids": item_ids,
    }
    return submit(
        settings, kind=PREDICT_KIND, project_id=project_id, params=params, user_id=user_id
    )


@register_job_kind(PREDICT_KIND, queue=VOLUME_QUEUE)
def run_volume_predict(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> dict[str, Any]:
    def progress(fraction: float, message: str) -> None:
        ctx.check_cancelled()
        ctx.progress(fraction, message)

    return predict_volumes(settings, params, progress=progress, job_id=ctx.job_id)


def predict_volumes(
    settings: Settings, params: dict[str, Any], *, progress: Any = None, job_id: int | None = None
) -> dict[str, Any]:
    project_id = int(params["project_id"])
    segmenter = str(params["segmenter"])
    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        classes = class_values(project)
        query = select(Item).where(Item.project_id == project_id, Item.kind == "volume")
        if params.get("item_ids") is not None:
            query = query.where(Item.id.in_([int(i) for i in params["item_ids"]]))
        sources = [volume_source(item) for item in db.scalars(query.order_by(Item.id))]
        version_id = params.get("model_version_id")
        version = db.get(ModelVersion, int(version_id)) if version_id is not None else None
        version_info = (version.artifact_path, dict(version.params or {})) if version else None
        model_folder = (project.settings or {}).get("nnunet_model_folder")
    model, version_id = _build(
        settings, project_id, segmenter, version_id, version_info, model_folder, job_id, classes
    )
    done = []
    for index, source in enumerate(sources):
        if progress is not None:
            progress(index / max(1, len(sources)), f"segmenting {source.filename}")
        image = read_voxels(source, settings)
        grid = read_grid_of(source)
        labels = model(image, grid.affine)
        store_prediction(
            settings, source, grid, labels, version_id=int(version_id), segmenter=segmenter
        )
        done.append(source.item_id)
    return {"model_version_id": version_id, "segmenter": segmenter, "item_ids": done}


def _build(
    settings: Settings,
    project_id: int,
    segmenter: str,
    version_id: Any,
    version_info: tuple[str | None, dict[str, Any]] | None,
    model_folder: Any,
    job_id: int | None,
    classes: dict[int, str],
) -> tuple[Any, int]:
    """A function (image, affine) -> value labels, and its model version id."""
    from loupe.learn import unet3d

    if segmenter == "unet3d":
        if version_info is None or not version_info[0]:
            raise LoupeError(ErrorCode.CONFLICT, "the UNet version has no weights")
        state = unet3d.UNetState.load(version_info[0])
        values = np.asarray(version_info[1].get("values", [0, *sorted(classes)]), dtype=np.uint8)
        roi = int(version_info[1].get("options", {}).get("roi", 96))

        def run_unet(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
            return values[unet3d.predict_unet(state, image, roi=roi).astype(np.int64)]

        return run_unet, int(version_id)
    if segmenter == "nnunet":
        nn = unet3d.NnUNetSegmenter(str(model_folder))
        new_id = new_version(
            settings,
            project_id,
            kind="nnunet",
            job_id=job_id,
            params={"model_folder": str(model_folder)},
            status="ready",
            artifact=str(model_folder),
        )
        _activate_if_none(settings, project_id, new_id)
        return (lambda image, affine: nn.predict(image, affine=affine)), new_id
    from loupe.features.voxels import voxel_features

    forest = unet3d.VoxelForestSegmenter(featurize=lambda image: voxel_features(image, workers=2))
    with session_scope(settings.db_url, write=False) as db:
        cases = corrected_cases(db, project_id)
    forest.fit([read_voxels(c.source, settings) for c in cases], [load_mask(c.mask) for c in cases])
    new_id = new_version(
        settings,
        project_id,
        kind="voxel",
        job_id=job_id,
        params={"trained_on": [c.source.item_id for c in cases]},
        status="ready",
    )
    _activate_if_none(settings, project_id, new_id)
    return (lambda image, affine: forest.predict(image)), new_id


def _activate_if_none(settings: Settings, project_id: int, version_id: int) -> None:
    with session_scope(settings.db_url) as db:
        if active_version(db, project_id) is None:
            make_active(db, project_id, version_id)
