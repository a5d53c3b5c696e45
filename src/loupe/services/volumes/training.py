"""``volume_train``: retrain the MONAI UNet on corrected volumes, measure it, maybe activate it.

The corrected volumes are split by item id: every fifth (at least one) is held out
for validation. The new ModelVersion records the validation Dice per class; it
becomes active only when its mean validation Dice beats the active version's on
the same held-out volumes (an admin can still activate it, or roll back, with
``POST /models/versions/{id}/activate``). A failed training marks its version
failed and leaves the active one in place.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from loupe.db.models import Job, ModelVersion
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind
from loupe.services.training.versions import make_active
from loupe.services.volumes.cases import (
    VOLUME_QUEUE,
    CorrectedCase,
    corrected_cases,
    fail_version,
    get_project,
    new_version,
    retrain_min_corrections,
    set_job_result,
)
from loupe.services.volumes.feedback import active_version, dice_score
from loupe.services.volumes.store import class_values, load_mask, read_voxels
from loupe.settings import Settings

log = logging.getLogger(__name__)
TRAIN_KIND = "volume_train"
UNET_KIND = "unet3d"
# Defaults sized for this 2-core CPU; a request may lower them (tests) or raise them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "patch": 64,
    "epochs": 10,
    "iterations": 50,
    "batch_size": 2,
    "channels": [16, 32, 64, 128, 256],
    "roi": 96,
    "lr": 1e-3,
}
_ALLOWED = set(TRAIN_DEFAULTS) | {"seed"}


def request_train(
    settings: Settings, project_id: int, *, user_id: int | None, options: dict[str, Any]
) -> Job:
    """Submit ``volume_train``; CONFLICT below the threshold, BUSY while one runs."""
    unknown = sorted(set(options) - _ALLOWED)
    if unknown:
        raise LoupeError(ErrorCode.INVALID, f"unknown training option(s) {unknown}")
    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        needed = retrain_min_corrections(project)
        have = len(corrected_cases(db, project_id))
    if have < needed or have < 2:
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"retraining needs at least {max(needed, 2)} corrected volumes; "
            f"this project has {have}",
            corrected_volumes=have,
            retrain_min_corrections=needed,
        )
    try:
        return submit(
            settings,
            kind=TRAIN_KIND,
            project_id=project_id,
            params={"project_id": project_id, **options},
            user_id=user_id,
            exclusive=True,
        )
    except LoupeError as exc:
        if exc.code != ErrorCode.BUSY:
            raise
        raise LoupeError(
            ErrorCode.CONFLICT, f"a 3-D training is already queued or running: {exc.message}"
        ) from exc


def split_cases(cases: list[CorrectedCase]) -> tuple[list[CorrectedCase], list[CorrectedCase]]:
    """(train, validation): every fifth case by item id is held out, at least one."""
    held = [c for i, c in enumerate(cases) if i % 5 == 4] or cases[-1:]
    held_ids = {c.source.item_id for c in held}
    return [c for c in cases if c.source.item_id not in held_ids], held


@register_job_kind(TRAIN_KIND, exclusive=True, queue=VOLUME_QUEUE)
def run_volume_train(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    return train_volumes(settings, int(params["project_id"]), params, ctx=ctx)


def train_volumes(
    settings: Settings, project_id: int, params: dict[str, Any], *, ctx: JobContext | None = None
) -> dict[str, Any]:
    """Train, validate, store and (maybe) activate a UNet version; returns the job result."""
    from loupe.learn.unet3d import UNetState, predict_unet, train_unet

    options = {**TRAIN_DEFAULTS, **{k: v for k, v in params.items() if k in _ALLOWED}}
    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        classes = class_values(project)
        cases = corrected_cases(db, project_id)
        active = active_version(db, project_id)
        active_info = (
            (active.id, active.kind, active.artifact_path, dict(active.params or {}))
            if active is not None
            else None
        )
    if len(cases) < 2:
        raise LoupeError(ErrorCode.CONFLICT, f"need 2 corrected volumes, have {len(cases)}")
    train, held = split_cases(cases)
    values = [0, *sorted(classes)]
    job_id = ctx.job_id if ctx is not None else None
    version_id = new_version(
        settings,
        project_id,
        kind=UNET_KIND,
        job_id=job_id,
        params={"options": options, "values": values},
    )
    # loss and validation Dice (fixed held-out patches) per epoch for the live chart;
    # val_dice: per class on the whole held-out volumes, at the end
    live: dict[str, Any] = {
        "model_version_id": version_id,
        "loss": [],
        "epoch_dice": [],
        "val_dice": None,
    }

    def progress(fraction: float, message: str) -> None:
        if ctx is not None:
            ctx.check_cancelled()
            ctx.progress(0.1 + 0.75 * fraction, message)
        set_job_result(settings, job_id, live)

    try:
        images = [read_voxels(c.source, settings) for c in train]
        masks = [_to_index(load_mask(c.mask), values) for c in train]
        val_images = [read_voxels(c.source, settings) for c in held]
        val_masks = [load_mask(c.mask) for c in held]
        validation = (val_images, [_to_index(m, values) for m in val_masks])
        state = _train(train_unet, images, masks, values, options, live, progress, ctx, validation)
        roi = int(options["roi"])
        predictions = [
            _to_value(predict_unet(state, image, roi=roi), values) for image in val_images
        ]
        val_dice = _per_class(predictions, val_masks, classes)
        mean = float(np.mean(list(val_dice.values()))) if val_dice else 0.0
        live["val_dice"] = val_dice
        set_job_result(settings, job_id, live)
        baseline = _baseline(active_info, val_images, val_masks, classes, roi, UNetState)
        artifact = settings.models_dir / "volumes" / f"p{project_id}" / f"v{version_id}.pt"
        artifact.parent.mkdir(parents=True, exist_ok=True)
        state.save(artifact)
    except Exception as exc:
        fail_version(settings, version_id, str(exc))
        raise
    better = baseline is None or mean > baseline
    with session_scope(settings.db_url) as db:
        version = db.get(ModelVersion, version_id)
        assert version is not None
        version.status = "ready"
        version.finished_at = utcnow()
        version.artifact_path = str(artifact)
        version.metrics = {
            "val_dice": val_dice,
            "val_dice_mean": mean,
            "active_val_dice_mean": baseline,
            "loss": [h["loss"] for h in state.history],
        }
        version.trained_on = {
            "item_ids": [c.source.item_id for c in train],
            "val_item_ids": [c.source.item_id for c in held],
        }
        if better:
            make_active(db, project_id, version_id)
    return {**live, "val_dice_mean": mean, "active_val_dice_mean": baseline, "activated": better}


_LOSS = re.compile(r"loss ([0-9.eE+-]+)")
_DICE = re.compile(r"val Dice ([0-9.]+)")


def _train(
    train_unet: Any,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    values: list[int],
    options: dict[str, Any],
    live: dict[str, Any],
    progress: Any,
    ctx: JobContext | None,
    validation: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> Any:
    def on_epoch(fraction: float, message: str) -> None:
        # "epoch i/n: loss x, val Dice y" -> keep the curves for the live chart
        for key, pattern in (("loss", _LOSS), ("epoch_dice", _DICE)):
            found = pattern.search(message)
            if found:
                live[key].append(float(found.group(1)))
        progress(fraction, message)

    return train_unet(
        images,
        masks,
        n_classes=len(values),
        patch=int(options["patch"]),
        epochs=int(options["epochs"]),
        iterations=int(options["iterations"]),
        batch_size=int(options["batch_size"]),
        channels=[int(c) for c in options["channels"]],
        lr=float(options["lr"]),
        seed=int(options.get("seed", 0)),
        progress=on_epoch,
        check=ctx.check_cancelled if ctx is not None else None,
        validation=validation,
    )


def _baseline(
    active: tuple[int, str, str | None, dict[str, Any]] | None,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    classes: dict[int, str],
    roi: int,
    state_type: Any,
) -> float | None:
    """The active version's mean Dice on the same held-out volumes (None: no active UNet)."""
    if active is None:
        return None
    _, kind, artifact, params = active
    if kind != UNET_KIND or not artifact or not Path(artifact).is_file():
        return None
    from loupe.learn.unet3d import predict_unet

    state = state_type.load(artifact)
    values = [int(v) for v in params.get("values", [0, *sorted(classes)])]
    predictions = [_to_value(predict_unet(state, image, roi=roi), values) for image in images]
    scores = _per_class(predictions, masks, classes)
    return float(np.mean(list(scores.values()))) if scores else 0.0


def _per_class(
    predictions: list[np.ndarray], truths: list[np.ndarray], classes: dict[int, str]
) -> dict[str, float]:
    return {
        name: float(
            np.mean([dice_score(p, t, [value]) for p, t in zip(predictions, truths, strict=True)])
        )
        for value, name in classes.items()
    }


def _to_index(mask: np.ndarray, values: list[int]) -> np.ndarray:
    lookup = np.zeros(256, dtype=np.int64)
    for index, value in enumerate(values):
        lookup[value] = index
    return lookup[mask.astype(np.uint8)]


def _to_value(labels: np.ndarray, values: list[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.uint8)[labels.astype(np.int64)]
