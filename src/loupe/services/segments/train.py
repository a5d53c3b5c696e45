"""Continuous training of a 2-D segmentation project as the ``segment_train`` job.

All labelled pixels of the project (points as disks of r=3, scribble pixels, mask
pixels subsampled per class) are sampled from each item's cached pixel features and
split into training and validation pixels. A pixel head (``logistic`` or ``mlp``,
project setting ``pixel_head``) trains epoch by epoch with early stopping
(``patience`` epochs without the validation loss improving by ``min_delta``); every
``heatmap_every`` epochs the item being viewed is predicted and its heatmap replaced
(``heatmap_rev`` counts up in the job message). The finished run is a ModelVersion
with held-out pixel Dice / IoU per class; it predicts every item (probability map
files + Prediction rows: foreground fraction as the draft value, mean uncertainty)
and only then becomes active. A failed, cancelled or killed run leaves the previous
version active.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from loupe.db.models import Annotation, Item, Job, ModelVersion, Project
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.features.pixels import PixelFeatures, grid_shape
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind
from loupe.learn.pixel_epochs import EpochTrainer, FittedPixelHead
from loupe.services.labels.core import person_labelled
from loupe.services.segments import files, pixels
from loupe.services.training.versions import make_active
from loupe.settings import Settings
from loupe.tasks.predictions import insert_prediction_rows
from loupe.tasks.segment import require_segment, segment_settings
from loupe.tasks.types import PredictionRow

SEGMENT_TRAIN = "segment_train"
MASK_PIXELS_PER_CLASS = 2000
PREDICT_BAND_VALUES = 4_000_000
"""float32 values per band of a prediction (16 MB): bounds its memory on big images."""
Report = Callable[[float, dict[str, Any]], None]


@dataclass
class _Labelled:
    item: Item
    data: dict[str, Any]


def _project(db: Any, project_id: int) -> Project:
    project = db.get(Project, project_id)
    if project is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    require_segment(project.task, project_id)
    return project


def _labelled(db: Any, project_id: int) -> list[_Labelled]:
    rows = db.execute(
        select(Item, Annotation.data)
        .join(Annotation, Annotation.item_id == Item.id)
        .where(
            Annotation.project_id == project_id,
            person_labelled(),
            Item.status != "error",
        )
        .order_by(Item.id)
    ).all()
    return [_Labelled(item, dict(data or {})) for item, data in rows]


def request_training(
    settings: Settings, project_id: int, *, user_id: int | None, item_id: int | None = None
) -> Job:
    """Submit a ``segment_train`` job; 409 ``conflict`` while one is queued or running,
    422 while the labels hold fewer than two classes."""
    with session_scope(settings.db_url, write=False) as db:
        project = _project(db, project_id)
        segment_settings(project.settings)
        labelled = _labelled(db, project_id)
        values: set[int] = set()
        for row in labelled:
            values |= pixels.label_values(row.data)
            if row.data.get("mask"):
                values |= {0, 1}  # a mask usually holds both; checked again when read
        if len(values) < 2:
            raise LoupeError(
                ErrorCode.INVALID,
                "label at least two classes (some foreground and some background) first",
            )
    try:
        return submit(
            settings,
            kind=SEGMENT_TRAIN,
            project_id=project_id,
            params={"project_id": project_id, "item_id": item_id},
            user_id=user_id,
            exclusive=True,
        )
    except LoupeError as exc:
        if exc.code != ErrorCode.BUSY:
            raise
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"a segmentation training of project {project_id} is already running",
        ) from exc


@register_job_kind(SEGMENT_TRAIN, exclusive=True)
def run_segment_train(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> dict[str, Any]:
    def report(fraction: float, message: dict[str, Any]) -> None:
        # A Stop that arrives before the new version is activated still wins.
        ctx.check_cancelled(fresh=message.get("stage") == "activate")
        ctx.progress(fraction, json.dumps(message))

    item_id = params.get("item_id")
    return train_segment(
        settings,
        int(params["project_id"]),
        view_item_id=int(item_id) if item_id is not None else None,
        job_id=ctx.job_id,
        report=report,
    )


def _new_version(
    settings: Settings, project: Project, job_id: int | None, opts: dict[str, Any]
) -> int:
    with session_scope(settings.db_url) as db:
        number = (
            db.scalar(
                select(func.max(ModelVersion.number)).where(ModelVersion.project_id == project.id)
            )
            or 0
        ) + 1
        version = ModelVersion(
            project_id=project.id,
            number=number,
            status="training",
            kind="pixel",
            members=[{"backbone": opts["pixel_features"], "head": opts["pixel_head"]}],
            job_id=job_id,
        )
        db.add(version)
        db.flush()
        return version.id


def train_segment(
    settings: Settings,
    project_id: int,
    *,
    view_item_id: int | None = None,
    job_id: int | None = None,
    report: Report | None = None,
) -> dict[str, Any]:
    """Train, predict every item and activate the new version; return a summary."""
    say = report or (lambda _f, _m: None)
    with session_scope(settings.db_url, write=False) as db:
        project = _project(db, project_id)
        opts = segment_settings(project.settings)
        labelled = _labelled(db, project_id)
        items = list(
            db.scalars(
                select(Item)
                .where(Item.project_id == project_id, Item.status != "error", Item.kind == "image")
                .order_by(Item.id)
            )
        )
        db.expunge_all()
    version_id = _new_version(settings, project, job_id, opts)
    try:
        out = _train(settings, project, opts, labelled, items, version_id, view_item_id, say)
    except BaseException as exc:
        with session_scope(settings.db_url) as db:
            db.execute(
                update(ModelVersion)
                .where(ModelVersion.id == version_id)
                .values(
                    status="failed",
                    finished_at=utcnow(),
                    params={"error": f"{type(exc).__name__}: {exc}"},
                )
            )
        raise
    finally:
        files.drop_live(settings, project_id)
    return out


def _train(
    settings: Settings,
    project: Project,
    opts: dict[str, Any],
    labelled: list[_Labelled],
    items: list[Item],
    version_id: int,
    view_item_id: int | None,
    say: Report,
) -> dict[str, Any]:
    xs, ys, gs = [], [], []
    for n, row in enumerate(labelled):
        say(0.05 * n / max(len(labelled), 1), {"stage": "features", "item_id": row.item.id})
        features = pixels.item_features(settings, project, row.item)
        per_class = MASK_PIXELS_PER_CLASS if row.data.get("mask") else 20_000
        rr, cc, values, groups = pixels.training_samples(
            settings,
            project.id,
            features.shape,
            row.data,
            max_per_class=per_class,
            seed=row.item.id,
        )
        xs.append(features.sample(rr, cc))
        ys.append(values)
        gs.append(groups + (n << 32))
    if not xs or len(np.unique(np.concatenate(ys))) < 2:
        raise LoupeError(ErrorCode.INVALID, "the labels hold fewer than two classes")
    trainer = EpochTrainer(
        np.concatenate(xs), np.concatenate(ys), head=opts["pixel_head"], groups=np.concatenate(gs)
    )
    view = next((i for i in items if i.id == view_item_id), None)
    view_features = pixels.item_features(settings, project, view) if view is not None else None
    best_loss, best_state, stale, rev, stats = float("inf"), trainer.state(), 0, 0, None
    stopped_early = False
    for epoch in range(1, opts["max_epochs"] + 1):
        stats = trainer.epoch()
        if stats.val_loss < best_loss - opts["min_delta"]:
            best_loss, best_state, stale = stats.val_loss, trainer.state(), 0
        else:
            stale += 1
        if view is not None and view_features is not None and epoch % opts["heatmap_every"] == 0:
            rev += 1
            pmap = _predict(trainer.head(), view_features, version_id, rev)
            files.write_probability(settings, project.id, view.id, pmap, live=True)
        say(
            0.05 + 0.75 * epoch / opts["max_epochs"],
            {
                "epoch": epoch,
                "loss": round(stats.loss, 5),
                "val_loss": round(stats.val_loss, 5),
                "val_dice": round(stats.mean_dice, 4),
                "heatmap_rev": rev,
            },
        )
        if stale >= opts["patience"]:
            stopped_early = True
            break
    trainer.restore(best_state)
    final = trainer.validate()
    head = trainer.head()
    names = {0: "background"}
    names.update({int(c["value"]): str(c["name"]) for c in project.schema.get("classes", [])})
    rows = []
    unreadable: dict[int, str] = {}
    for n, item in enumerate(items):
        say(0.8 + 0.15 * n / max(len(items), 1), {"stage": "predict", "item_id": item.id})
        try:
            features = pixels.item_features(settings, project, item)
        except LoupeError as exc:  # an unlabelled item gone from disk: no draft for it
            unreadable[item.id] = exc.message
            continue
        pmap = _predict(head, features, version_id, 0)
        files.write_probability(settings, project.id, item.id, pmap, live=False)
        rows.append(_prediction_row(item.id, pmap, names))
    insert_prediction_rows(settings, project.id, version_id, rows)
    folder = settings.models_dir / str(project.id) / str(version_id)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "pixel_head.npz", allow_pickle=False, **head.arrays())
    metrics = {
        "val_dice": {names.get(k, str(k)): round(v, 4) for k, v in final.dice.items()},
        "val_iou": {names.get(k, str(k)): round(v, 4) for k, v in final.iou.items()},
        "mean_dice": round(final.mean_dice, 4),
        "val_loss": round(final.val_loss, 5),
        "epochs": trainer.epochs,
        "stopped_early": stopped_early,
        "train_pixels": int(len(trainer.train_idx)),
        "val_pixels": int(len(trainer.val_idx)),
    }
    say(0.97, {"stage": "activate"})
    _activate(settings, project.id, version_id, metrics, opts, labelled, folder)
    return {
        "model_version_id": version_id,
        "epoch": trainer.epochs,
        "loss": round(stats.loss, 5) if stats else None,
        "val_dice": metrics["mean_dice"],
        "heatmap_rev": rev,
        "stopped_early": stopped_early,
        "metrics": metrics,
        "predicted": len(rows),
        "unreadable": unreadable,
    }


def _predict(
    head: FittedPixelHead, features: PixelFeatures, version_id: int, rev: int
) -> files.ProbabilityMap:
    """The head's uint8 probability map, predicted band by band so that a big image's
    float32 grid (and the head's hidden layer on it) never exists whole."""
    rows, cols = grid_shape(features.shape, features.stride)
    width = max(int(head.first_weights.shape[1]), len(head.classes_))
    step = max(1, PREDICT_BAND_VALUES // max(cols * width, 1))
    proba = np.empty((rows, cols, len(head.classes_)), dtype=np.uint8)
    for g0 in range(0, rows, step):
        band = features.band((g0, min(g0 + step, rows)))
        proba[g0 : g0 + step] = files.to_uint8_proba(head.predict_proba(band))
    return files.ProbabilityMap(
        proba, head.classes_, features.stride, features.shape, version_id, rev
    )


def _prediction_row(
    item_id: int, pmap: files.ProbabilityMap, names: dict[int, str]
) -> PredictionRow:
    # In row bands: a big image's grid is never copied whole as floats.
    grid = pmap.proba
    per_class = np.zeros(len(pmap.classes), dtype=np.int64)
    top_sum = 0.0
    step = max(1, PREDICT_BAND_VALUES // max(grid.shape[1] * grid.shape[2], 1))
    for g0 in range(0, grid.shape[0], step):
        band = grid[g0 : g0 + step]
        per_class += np.bincount(band.argmax(axis=2).ravel(), minlength=len(pmap.classes))
        top_sum += float(band.max(axis=2).sum(dtype=np.float64))
    cells = max(grid.shape[0] * grid.shape[1], 1)
    foreground = float(per_class[pmap.classes != 0].sum() / cells)
    uncertainty = float(1.0 - top_sum / 255.0 / cells)
    counts = {int(v): int(per_class[k]) for k, v in enumerate(pmap.classes) if v != 0}
    top = max(counts, key=lambda v: counts[v]) if counts and foreground > 0 else 0
    return PredictionRow(
        item_id=item_id,
        label=names.get(top, str(top)),
        confidence=round(foreground, 5),
        uncertainty=round(uncertainty, 5),
        flagged=False,
        flag_reason=None,
        output={
            "foreground_fraction": round(foreground, 5),
            "fractions": {names.get(v, str(v)): round(c / cells, 5) for v, c in counts.items()},
        },
        members={},
    )


def _activate(
    settings: Settings,
    project_id: int,
    version_id: int,
    metrics: dict[str, Any],
    opts: dict[str, Any],
    labelled: list[_Labelled],
    folder: Any,
) -> None:
    with session_scope(settings.db_url) as db:
        make_active(
            db,
            project_id,
            version_id,
            status="ready",
            finished_at=utcnow(),
            metrics=metrics,
            params={k: opts[k] for k in ("pixel_features", "pixel_head", "patience", "min_delta")},
            trained_on={
                "items": len(labelled),
                "item_ids": [r.item.id for r in labelled][:1000],
            },
            artifact_path=str(folder),
        )
