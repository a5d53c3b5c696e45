"""The 2-D map of a project as a job, cached on disk per feature matrix and method.

The job (kind ``map``) reads the active backbone's feature store, runs
:func:`loupe.select.map2d.embed_2d` and writes the coordinates under
``LOUPE_HOME/maps/<project>/`` as ``.npy`` files named by a fingerprint of the
feature matrix (backbone, dim and the stored item ids: rows are appended, never
rewritten, so the ids say when the features changed). A retraining that leaves
the features alone (same backbone) reuses the map; new or replaced items make a
new fingerprint and the next job recomputes it.

The job is a chunked kind (:mod:`loupe.jobs.chunks`). ``plan`` fits the
map: the PCA and UMAP / t-SNE on a sample of at most 10,000 rows. That fit is one
computation and cannot be split; for a large project it is most of the time. What
splits is the rest: projecting every row with the saved PCA and placing it among
the sample, in chunks of :data:`CHUNK_ROWS` rows (``map.chunk`` jobs, any worker,
any machine sharing LOUPE_HOME), each writing ``part-*.npy`` next to ``plan.json``
and ``model.npz`` under ``maps/<project>/_chunks/<job>/``. ``finalize`` scales the
parts together and writes the cache files; a map of one chunk (up to 25,000 items)
runs in the parent alone. A cancelled or failed job keeps its folder so a retry
redoes only the unfinished chunks; the previous map stays the one read until then.

:func:`read_map` joins the cached coordinates with what colours them now (human
label, the active model's draft, its uncertainty and flag), so the map follows
the labelling without being recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Job, Prediction, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.features.store import open_existing
from loupe.jobs.chunks import register_chunked_kind
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.select.map2d import (
    DEFAULT_FIT_SAMPLE,
    METHODS,
    fit_map,
    load_model,
    numba_cache_dir,
    place_rows,
    save_model,
    scale_to_unit,
)
from loupe.services.items.query import ItemRow, active_version_id
from loupe.services.queues.arrays import feature_store, load_arrays
from loupe.settings import Settings

MAP_KIND = "map"
# Rows placed per chunk job: ~25,000 x 1280 float32 is 128 MB read and a few seconds.
CHUNK_ROWS = 25_000
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


def chunk_dir(settings: Settings, project_id: int, job_id: int) -> Path:
    """Where a map job's plan, model and placed parts live until ``finalize``."""
    return maps_dir(settings, project_id) / "_chunks" / str(int(job_id))


def compute_map(
    settings: Settings,
    project_id: int,
    *,
    method: str = "umap",
    job_id: int | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Compute (or find cached) the project's map in this process, unsplit; returns a
    summary for the job result (the ``map`` job does the same in chunks)."""
    report = progress or (lambda _f, _m: None)
    # outside a job: a folder of its own (a negative number no job has)
    inline_id = job_id if job_id is not None else -(uuid.uuid4().int % 10**12) - 1
    ctx = cast(JobContext, _Inline(inline_id, report))
    params = {"project_id": project_id, "method": method, "chunk_rows": 2**62}
    parts: list[dict[str, Any] | None] = [
        place_chunk(settings, ctx, c) for c in plan_map(settings, ctx, params)
    ]
    return finish_map(settings, ctx, params, parts)


@dataclass
class _Inline:
    """The part of :class:`JobContext` the map's steps use, outside a job."""

    job_id: int
    report: Any

    def progress(self, fraction: float, message: str = "") -> None:
        self.report(fraction, message)

    def check_cancelled(self) -> None:
        return None


def plan_map(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Fit the map (PCA + UMAP / t-SNE on the sample) and split the placing of the
    rows into chunks of ``params['chunk_rows']``; ``[]`` when the map is cached.

    Writes ``plan.json`` (what ``finalize`` needs) and ``model.npz`` (the fitted
    model, the item ids and their rows in the feature matrix) under :func:`chunk_dir`.
    """
    started = time.time()
    project_id = int(params["project_id"])
    method = _check_method(str(params.get("method", "umap")))
    fit_sample = int(params.get("fit_sample") or DEFAULT_FIT_SAMPLE)
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        backbone, matrix, ids, rows = _features(db, settings, project)
        version_id = active_version_id(db, project_id)
    dim = int(matrix.shape[1])
    key = _fingerprint(backbone, dim, ids, method)
    if fit_sample != DEFAULT_FIT_SAMPLE:  # a test's smaller sample makes another map
        key = _fingerprint(f"{backbone}@{fit_sample}", dim, ids, method)
    folder = maps_dir(settings, project_id)
    work = chunk_dir(settings, project_id, ctx.job_id)
    work.mkdir(parents=True, exist_ok=True)
    cached = (folder / f"coords-{key}.npy").exists() and (folder / f"ids-{key}.npy").exists()
    size = max(1, int(params.get("chunk_rows") or CHUNK_ROWS))
    starts = [] if cached else list(range(0, len(ids), size))
    plan = {
        "key": key,
        "method": method,
        "backbone": backbone,
        "model_version_id": version_id,
        "items": len(ids),
        "cached": cached,
        "chunks": len(starts),
        "started": started,
    }
    if not cached:
        ctx.check_cancelled()
        ctx.progress(0.05, f"{method} of {len(ids)} items ({backbone} features)")
        numba_cache_dir(settings.home / "numba-cache")
        features = matrix[rows] if len(rows) != len(matrix) else matrix
        model = fit_map(features, method=method, seed=0, fit_sample=fit_sample)
        del features
        ctx.check_cancelled()
        save_model(work / "model.npz", model, ids=ids)
    _write_json(work / "plan.json", plan)
    return [
        {
            "project_id": project_id,
            "backbone": backbone,
            "key": key,
            "start": start,
            "stop": min(start + size, len(ids)),
            "dir": str(work),
        }
        for start in starts
    ]


def place_chunk(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Place rows ``start:stop`` of a planned map; write ``part-<start>.npy``."""
    work = Path(str(params["dir"]))
    start, stop = int(params["start"]), int(params["stop"])
    child = "_parent" in params  # inline (one chunk) the parent reports progress itself
    if child:
        ctx.progress(0.05, f"placing rows {start}-{stop}")
    model, extra = load_model(work / "model.npz")
    ids = extra["ids"][start:stop]
    store = open_existing(settings.features_dir, int(params["project_id"]), str(params["backbone"]))
    try:
        if store is None:
            raise KeyError(f"no {params['backbone']} features")
        features = store.get([int(i) for i in ids])
    except KeyError as err:
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"the features changed since the map was planned ({err}): POST the map again",
        ) from None
    ctx.check_cancelled()
    xy = place_rows(model, features, start=start)
    ctx.check_cancelled()
    _save(work / f"part-{start:012d}.npy", xy)
    if child:
        ctx.progress(1.0, f"placed rows {start}-{stop}")
    return {"key": str(params["key"]), "start": start, "rows": len(xy)}


def finish_map(
    settings: Settings,
    ctx: JobContext,
    params: dict[str, Any],
    results: list[dict[str, Any] | None],
) -> dict[str, Any]:
    """Put the placed parts together, scale them, write the map and ``latest-*.json``."""
    project_id = int(params["project_id"])
    work = chunk_dir(settings, project_id, ctx.job_id)
    plan = json.loads((work / "plan.json").read_text())
    key, method = str(plan["key"]), str(plan["method"])
    folder = maps_dir(settings, project_id)
    if not plan["cached"]:
        ctx.progress(0.95, "writing the map")
        _, extra = load_model(work / "model.npz")
        ids = extra["ids"]
        starts = sorted(int(r["start"]) for r in results if r is not None)
        if len(starts) != int(plan["chunks"]):
            raise LoupeError(
                ErrorCode.CONFLICT, f"{len(starts)} of {plan['chunks']} map chunks reported"
            )
        parts = [np.load(work / f"part-{s:012d}.npy") for s in starts]
        xy = scale_to_unit(np.concatenate(parts)) if parts else np.zeros((0, 2), np.float32)
        if len(xy) != len(ids):
            raise LoupeError(
                ErrorCode.CONFLICT, f"the map chunks placed {len(xy)} of {len(ids)} items"
            )
        ctx.check_cancelled()
        _save(folder / f"ids-{key}.npy", ids)
        _save(folder / f"coords-{key}.npy", xy)
    meta = {
        "key": key,
        "method": method,
        "backbone": plan["backbone"],
        "model_version_id": plan["model_version_id"],
        "job_id": ctx.job_id if ctx.job_id and ctx.job_id > 0 else None,
        "items": plan["items"],
        "seconds": round(time.time() - float(plan["started"]), 3),
        "chunks": plan["chunks"],
    }
    _write_json(folder / _LATEST.format(method=method), meta)
    shutil.rmtree(work, ignore_errors=True)
    return {**meta, "cached": bool(plan["cached"])}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


register_chunked_kind(
    MAP_KIND, plan=plan_map, chunk=place_chunk, finalize=finish_map, exclusive=True
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
