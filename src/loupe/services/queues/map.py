"""The 2-D map of a project as a job, cached on disk per feature matrix and method.

The job (kind ``map``) reads the active backbone's feature store, runs
:func:`loupe.select.map2d.embed_2d` and writes the coordinates under
``LOUPE_HOME/maps/<project>/`` as ``.npy`` files named by a fingerprint of the
feature matrix (backbone, dim and the stored item ids: rows are appended, never
rewritten, so the ids say when the features changed). A retraining that leaves
the features alone (same backbone) reuses the map; new or replaced items make a
new fingerprint and the next job recomputes it.

:func:`read_map` joins the cached coordinates with what colours them now (human
label, the active model's draft, its uncertainty and flag), so the map follows
the labelling without being recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Job, Prediction, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind
from loupe.select.map2d import METHODS, embed_2d, numba_cache_dir
from loupe.services.items.query import ItemRow, active_version_id
from loupe.services.queues.arrays import feature_store, load_arrays
from loupe.settings import Settings

MAP_KIND = "map"
MAX_LOOKUP = 5000
_LATEST = "latest-{method}.json"


@dataclass
class MapData:
    """A project's map as compact parallel arrays (row ``r`` is item ``item_ids[r]``)."""

    method: str
    backbone: str
    model_version_id: int | None
    classes: list[str]
    item_ids: list[int]
    x: list[float]
    y: list[float]
    human: list[int]  # class index; -1 unlabelled; -2 labelled without a class (scores, ...)
    draft: list[int]  # the active model's class index; -1 none
    uncertainty: list[float | None]
    flagged: list[int]  # 1: the model flagged the item
    stale: bool  # the features changed since: POST again to recompute
    job: Job | None
    computed: bool = True  # False: no map yet (``message`` says why, ``job`` its state)
    message: str = ""


def maps_dir(settings: Settings, project_id: int) -> Path:
    return settings.home / "maps" / str(int(project_id))


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise LoupeError(ErrorCode.INVALID, f"method must be one of {list(METHODS)}: {method!r}")
    return method


def _fingerprint(backbone: str, dim: int, ids: NDArray[np.int64], method: str) -> str:
    h = hashlib.sha256(f"{backbone}:{dim}:{method}:".encode())
    h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def _features(
    db: Session, settings: Settings, project: Project
) -> tuple[str, Any, NDArray[np.int64], NDArray[np.intp]]:
    """``(backbone, matrix, item ids, their rows in matrix)`` of live items with features."""
    backbone, store = feature_store(db, settings, project)
    if store is None or backbone is None:
        raise LoupeError(
            ErrorCode.CONFLICT, "this project has no features yet: train a model first"
        )
    stored_ids, matrix = store.all()
    live = np.asarray(
        db.scalars(
            select(Item.id).where(Item.project_id == project.id, Item.status != "error")
        ).all(),
        dtype=np.int64,
    )
    rows = np.flatnonzero((stored_ids >= 0) & np.isin(stored_ids, live))
    if len(rows) == 0:
        raise LoupeError(ErrorCode.CONFLICT, "no item of this project has features yet")
    return backbone, matrix, np.asarray(stored_ids[rows], dtype=np.int64), rows


def request_map(
    settings: Settings, project_id: int, *, user_id: int | None, method: str = "umap"
) -> Job:
    """Submit a map job (409 while one is queued or running; CONFLICT without features)."""
    _check_method(method)
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        _features(db, settings, project)
    return submit(
        settings,
        kind=MAP_KIND,
        project_id=project_id,
        params={"project_id": project_id, "method": method},
        user_id=user_id,
        exclusive=True,
    )


def _save(path: Path, array: NDArray[Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def compute_map(
    settings: Settings,
    project_id: int,
    *,
    method: str = "umap",
    job_id: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Compute (or find cached) the project's map; returns a summary for the job result."""
    report = progress or (lambda _f, _m: None)
    _check_method(method)
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        backbone, matrix, ids, rows = _features(db, settings, project)
        version_id = active_version_id(db, project_id)
    key = _fingerprint(backbone, int(matrix.shape[1]), ids, method)
    folder = maps_dir(settings, project_id)
    folder.mkdir(parents=True, exist_ok=True)
    coords_path, ids_path = folder / f"coords-{key}.npy", folder / f"ids-{key}.npy"
    cached = coords_path.exists() and ids_path.exists()
    started = time.perf_counter()
    if not cached:
        report(0.05, f"{method} of {len(ids)} items ({backbone} features)")
        numba_cache_dir(settings.home / "numba-cache")
        features = matrix[rows] if len(rows) != len(matrix) else matrix
        xy = embed_2d(features, method=method, seed=0)
        report(0.95, "writing the map")
        _save(ids_path, ids)
        _save(coords_path, xy)
    seconds = round(time.perf_counter() - started, 3)
    meta = {
        "key": key,
        "method": method,
        "backbone": backbone,
        "model_version_id": version_id,
        "job_id": job_id,
        "items": len(ids),
        "seconds": seconds,
    }
    latest = folder / _LATEST.format(method=method)
    tmp = latest.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, latest)
    return {**meta, "cached": cached}


@register_job_kind(MAP_KIND, exclusive=True)
def run_map_job(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    def progress(fraction: float, message: str) -> None:
        ctx.check_cancelled()
        ctx.progress(fraction, message)

    return compute_map(
        settings,
        int(params["project_id"]),
        method=str(params.get("method", "umap")),
        job_id=ctx.job_id,
        progress=progress,
    )


def latest_job(db: Session, project_id: int) -> Job | None:
    return db.scalar(
        select(Job)
        .where(Job.project_id == project_id, Job.kind == MAP_KIND)
        .order_by(Job.id.desc())
        .limit(1)
    )


def _latest_meta(folder: Path, method: str | None) -> dict[str, Any] | None:
    names = [_LATEST.format(method=m) for m in ([method] if method else METHODS)]
    found = [folder / n for n in names if (folder / n).exists()]
    if not found:
        return None
    newest = max(found, key=lambda p: p.stat().st_mtime_ns)
    meta: dict[str, Any] = json.loads(newest.read_text())
    return meta


def _draft_labels(db: Session, version_id: int | None) -> dict[int, str | None]:
    if version_id is None:
        return {}
    return {
        int(i): label
        for i, label in db.execute(
            select(Prediction.item_id, Prediction.label).where(
                Prediction.model_version_id == version_id
            )
        )
    }


def read_map(
    db: Session, settings: Settings, project: Project, method: str | None = None
) -> MapData:
    """The cached map with today's colours; ``computed=False`` (the message names the
    job's state) before the first one."""
    if method is not None:
        _check_method(method)
    job = latest_job(db, project.id)
    folder = maps_dir(settings, project.id)
    meta = _latest_meta(folder, method)
    if meta is None:
        state = f"; the map job {job.id} is {job.status}" if job is not None else ""
        return MapData(
            method=method or METHODS[0],
            backbone="",
            model_version_id=None,
            classes=[],
            item_ids=[],
            x=[],
            y=[],
            human=[],
            draft=[],
            uncertainty=[],
            flagged=[],
            stale=False,
            job=job,
            computed=False,
            message=f"no map computed yet{state}: POST /api/projects/{project.id}/map",
        )
    key = str(meta["key"])
    try:
        ids = np.load(folder / f"ids-{key}.npy")
        xy = np.load(folder / f"coords-{key}.npy")
    except FileNotFoundError:
        raise LoupeError(
            ErrorCode.NOT_FOUND, f"the cached map {key} is gone: POST the map again"
        ) from None
    arrays = load_arrays(db, project, settings)
    row_of = {int(i): r for r, i in enumerate(arrays.ids.tolist())}
    keep = [k for k, i in enumerate(ids.tolist()) if int(i) in row_of]  # deleted since
    rows = np.asarray([row_of[int(ids[k])] for k in keep], dtype=np.intp)
    classes = list(arrays.class_names)
    index = {c: k for k, c in enumerate(classes)}
    labelled = arrays.labelled[rows]
    human = np.where(labelled, -2, -1)
    if arrays.labels is not None:
        cls = arrays.labels[rows]
        human = np.where(labelled & (cls >= 0), cls, human)
    drafts = _draft_labels(db, arrays.version_id)
    draft = [index.get(drafts.get(int(ids[k])) or "", -1) for k in keep]
    spread = arrays.spread[rows] if arrays.spread is not None else None
    flagged = arrays.flagged[rows] if arrays.flagged is not None else np.zeros(len(rows), bool)
    stale = False
    try:
        backbone, matrix, live_ids, _ = _features(db, settings, project)
        now_key = _fingerprint(backbone, int(matrix.shape[1]), live_ids, str(meta["method"]))
        stale = now_key != key
    except LoupeError:
        stale = True
    return MapData(
        method=str(meta["method"]),
        backbone=str(meta["backbone"]),
        model_version_id=arrays.version_id,
        classes=classes,
        item_ids=[int(ids[k]) for k in keep],
        x=np.round(xy[keep, 0].astype(np.float64), 4).tolist(),
        y=np.round(xy[keep, 1].astype(np.float64), 4).tolist(),
        human=[int(v) for v in human.tolist()],
        draft=draft,
        uncertainty=(
            [None] * len(keep) if spread is None else [round(float(v), 4) for v in spread.tolist()]
        ),
        flagged=[int(v) for v in flagged.astype(np.int8).tolist()],
        stale=stale,
        job=job,
    )


def items_by_ids(db: Session, project: Project, item_ids: Sequence[int]) -> list[ItemRow]:
    """The items of a map selection, a queue or a similar list, in the order given.

    Ids of other projects or unknown ids are left out (the list came from the
    client). The grid loads them as an ``ids`` selection.
    """
    wanted = list(dict.fromkeys(int(i) for i in item_ids))
    if len(wanted) > MAX_LOOKUP:
        raise LoupeError(ErrorCode.INVALID, f"at most {MAX_LOOKUP} item ids, got {len(wanted)}")
    if not wanted:
        return []
    version_id = active_version_id(db, project.id)
    found: dict[int, ItemRow] = {}
    for start in range(0, len(wanted), 900):  # stay under SQLite's bound-parameter limit
        chunk = wanted[start : start + 900]
        for item, ann, pred in db.execute(
            select(Item, Annotation, Prediction)
            .outerjoin(Annotation, Annotation.item_id == Item.id)
            .outerjoin(
                Prediction,
                and_(Prediction.item_id == Item.id, Prediction.model_version_id == version_id),
            )
            .where(Item.project_id == project.id, Item.id.in_(chunk))
        ).all():
            found[int(item.id)] = ItemRow(item=item, annotation=ann, prediction=pred)
    return [found[i] for i in wanted if i in found]
