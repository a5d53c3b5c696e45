"""Drafting the items a model version has not seen, as a chunked job (``predict``).

Items added after a training (an upload, a folder ingest) have no draft until the
next training, which may be hours of labelling away. A ``predict`` job drafts them
with a stored version, split into chunks that any number of workers run:

* the parent (``plan``) lists the project's items without a prediction of the
  version, in chunks of ``chunk_size`` ids;
* a chunk embeds its items with every member that lacks them (the ``embed``
  chunk's code: ``.npz`` files under ``features/<project>/_chunks/<parent>/``, never
  the shared feature store, which has one writer), reads the rest from the stores,
  drafts them with the version's task kind (:meth:`EmbeddingTaskKind.draft_items`:
  the training's own last step, the stored heads, calibration, novelty detector and
  review budget) and inserts the predictions, skipping any item that got one in
  the meantime (a retried chunk, a second job): a draft is written once per item
  and version, and never into a person's label;
* the parent (``finalize``) appends the new embeddings to the stores, marks
  unreadable items and rewrites the version's queue-arrays file, so no web process
  decodes 100,000 rows to serve the next queue request.

The review budget caps each chunk's share of flagged items, so the new items as a
whole stay within it. Every job worker looks every few seconds for projects whose
active version has not drafted some items (:func:`draft_sweep`; a project turns it
off with ``draft_new_items: false``) and starts the job, so uploaded and ingested
items arrive drafted without a retraining.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, insert, select

from loupe.db.models import Item, Job, ModelVersion, Prediction, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.chunks import register_chunked_kind
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_periodic
from loupe.services.items.query import active_version_id
from loupe.services.training.chunks import (
    chunk_dir,
    embed_chunk,
    finish_embedding,
    member_store,
)
from loupe.services.training.predictions import version_of
from loupe.services.training.train import load_artifact
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.embedding import EmbeddingTaskKind, SavedVersion
from loupe.tasks.predictions import prediction_values

log = logging.getLogger(__name__)

PREDICT_KIND = "predict"
CHUNK_ITEMS = 500


def _kind(project: Project) -> EmbeddingTaskKind:
    kind = kind_of(project.task)
    if not isinstance(kind, EmbeddingTaskKind):
        raise LoupeError(
            ErrorCode.INVALID,
            f"{project.task} projects are not drafted per item by an embedding model",
        )
    return kind


def _version(db: Any, project: Project, version_id: int | None) -> ModelVersion:
    version = version_of(db, project, version_id)
    if version.status != "ready" or not version.artifact_path:
        raise LoupeError(
            ErrorCode.CONFLICT, f"model version {version.number} is {version.status}, not ready"
        )
    return version


def request_prediction(
    settings: Settings,
    project_id: int,
    *,
    user_id: int | None,
    version_id: int | None = None,
    chunk_size: int = CHUNK_ITEMS,
) -> Job:
    """Submit a ``predict`` job: draft every item the version (default: the active
    one) has no prediction for. 409 without a ready version."""
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        _kind(project)
        version = _version(db, project, version_id)
        vid = version.id
    return submit(
        settings,
        kind=PREDICT_KIND,
        project_id=project_id,
        params={"project_id": project_id, "version_id": vid, "chunk_size": int(chunk_size)},
        user_id=user_id,
        exclusive=True,
    )


def undrafted_ids(db: Any, project_id: int, version_id: int) -> list[int]:
    """The project's readable items without a prediction of ``version_id``, by id."""
    drafted = select(Prediction.item_id).where(Prediction.model_version_id == version_id)
    return list(
        db.scalars(
            select(Item.id)
            .where(
                Item.project_id == project_id,
                Item.status != "error",
                Item.id.not_in(drafted),
            )
            .order_by(Item.id)
        )
    )


def maybe_predict_new(settings: Settings, project_id: int, *, user_id: int | None) -> int | None:
    """Start a ``predict`` job when the project's active version (of an embedding kind)
    has not drafted some of its items; return the job id.

    Quiet (None) when the project turns it off (``draft_new_items: false``), when a
    training is queued or running (it drafts every item), when a ``predict`` job is
    already active (BUSY), and when the last one for this version could draft none
    of the items still undrafted (nothing would change).
    """
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None or not isinstance(kind_of(project.task), EmbeddingTaskKind):
            return None
        if (project.settings or {}).get("draft_new_items") is False:
            return None
        vid = active_version_id(db, project_id)
        if vid is None:
            return None
        items = db.scalar(
            select(func.count())
            .select_from(Item)
            .where(Item.project_id == project_id, Item.status != "error")
        )
        drafted = db.scalar(
            select(func.count()).select_from(Prediction).where(Prediction.model_version_id == vid)
        )
        if not items or (drafted or 0) >= items:
            return None
        busy = db.scalar(
            select(Job.id).where(
                Job.project_id == project_id,
                Job.kind.in_(("train", PREDICT_KIND)),
                Job.status.in_(("queued", "running")),
            )
        )
        if busy is not None:
            return None
        last = db.scalar(
            select(Job)
            .where(Job.project_id == project_id, Job.kind == PREDICT_KIND)
            .order_by(Job.id.desc())
            .limit(1)
        )
        if (
            last is not None
            and last.status == "done"
            and (last.params or {}).get("version_id") == vid
            and not (last.result or {}).get("drafted")
            and int((last.result or {}).get("items", 0)) >= items - (drafted or 0)
        ):
            return None  # what is left could not be drafted (no features for it)
    try:
        return request_prediction(settings, project_id, user_id=user_id, version_id=vid).id
    except LoupeError as exc:
        if exc.code in (ErrorCode.CONFLICT, ErrorCode.BUSY, ErrorCode.INVALID):
            return None
        raise


DRAFT_SWEEP_S = 5.0


@register_periodic("draft_new_items", every_s=DRAFT_SWEEP_S)
def draft_sweep(settings: Settings) -> list[int]:
    """Draft new items of every project with an active version: run by every job
    worker every few seconds (the upload and ingest paths stay as they are).
    Returns the ids of the jobs it started."""
    with session_scope(settings.db_url, write=False) as db:
        candidates = [
            pid
            for pid, task, project_settings in db.execute(
                select(Project.id, Project.task, Project.settings)
            )
            if isinstance(kind_of(task), EmbeddingTaskKind)
            and (project_settings or {}).get("draft_new_items") is not False
        ]
    started = []
    for project_id in candidates:
        job_id = maybe_predict_new(settings, project_id, user_id=None)
        if job_id is not None:
            started.append(job_id)
    return started


def plan_prediction(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The items the version has not drafted, in chunks of ``chunk_size`` ids."""
    project_id = int(params["project_id"])
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        _kind(project)
        version = _version(db, project, int(params["version_id"]))
        members = list(version.members or [])
        ids = undrafted_ids(db, project_id, version.id)
    ctx.progress(0.0, f"{len(ids)} items to draft with version {version.number}")
    size = max(1, int(params.get("chunk_size") or CHUNK_ITEMS))
    return [
        {
            "project_id": project_id,
            "version_id": version.id,
            "members": members,
            "item_ids": ids[k : k + size],
        }
        for k in range(0, len(ids), size)
    ]


def _saved(version: ModelVersion) -> SavedVersion:
    state = load_artifact(Path(str(version.artifact_path)))
    return SavedVersion(
        id=version.id,
        mode=str(version.kind or "frozen"),
        params=dict(version.params or {}),
        calibration=dict(version.calibration or {}),
        metrics=dict(version.metrics or {}),
        state=state,
    )


def _member_rows(
    settings: Settings, project_id: int, parent: int, index: int, name: str, ids: list[int]
) -> dict[int, np.ndarray]:
    """``{id: row}`` of member ``name`` for ``ids``: from its feature store, or from
    this chunk's file (the embeddings it computed; the store takes them at the end)."""
    _, store = member_store(settings, project_id, name)
    rows: dict[int, np.ndarray] = {}
    path = chunk_dir(settings, project_id, parent) / f"{name}-{index:05d}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as part:
            rows = {int(i): row for i, row in zip(part["ids"], part["x"], strict=True)}
    absent = set(store.missing(ids))
    stored = [i for i in ids if i not in absent and i not in rows]
    if stored:
        rows.update(zip(stored, store.get(stored), strict=True))
    return rows


def predict_chunk(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Embed one chunk's items where needed, draft them and insert the predictions."""
    project_id = int(params["project_id"])
    parent = int(params.get("_parent", ctx.job_id))
    index = int(params.get("_index", 0))
    embedded = embed_chunk(settings, ctx, {**params, "_parent": parent, "_index": index})
    failed = {int(k) for k in embedded.get("failed") or {}}
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        kind = _kind(project)
        version = _version(db, project, int(params["version_id"]))
        saved = _saved(version)
        chunk_ids = [int(i) for i in params["item_ids"]]
        drafted = set(
            db.scalars(
                select(Prediction.item_id).where(
                    Prediction.model_version_id == version.id, Prediction.item_id.in_(chunk_ids)
                )
            )
        )
        sources = {
            row.id: (row.files or row.uri)
            for row in db.execute(
                select(Item.id, Item.uri, Item.files).where(
                    Item.id.in_(chunk_ids), Item.status != "error"
                )
            )
        }
    # still there, readable, not drafted meanwhile (a retried chunk, another job)
    ids = [i for i in chunk_ids if i in sources and i not in drafted and i not in failed]
    ctx.check_cancelled()
    found = {
        name: _member_rows(settings, project_id, parent, index, name, ids) for name in saved.members
    }
    ids = [i for i in ids if all(i in rows for rows in found.values())]
    member_x = {
        name: np.asarray(np.stack([rows[i] for i in ids]), dtype=np.float32)
        for name, rows in found.items()
        if ids
    }
    reference = {}
    for name in saved.members:
        _, store = member_store(settings, project_id, name)
        absent = set(store.missing(saved.reference_ids))
        reference[name] = store.get([i for i in saved.reference_ids if i not in absent])
    rows = kind.draft_items(settings, saved, ids, member_x, reference, sources) if ids else []
    ctx.progress(0.95, f"writing {len(rows)} drafts")
    written = _insert_new(settings, project_id, version.id, rows)
    return {
        "items": len(params["item_ids"]),
        "drafted": written,
        "flagged": sum(1 for r in rows if r.flagged),
        "members": embedded.get("members", []),
        "failed": embedded.get("failed") or {},
    }


def _insert_new(settings: Settings, project_id: int, version_id: int, rows: list[Any]) -> int:
    """Insert the drafts of items that still have none for the version; return how many."""
    if not rows:
        return 0
    with session_scope(settings.db_url) as db:
        taken = set(
            db.scalars(
                select(Prediction.item_id).where(
                    Prediction.model_version_id == version_id,
                    Prediction.item_id.in_([r.item_id for r in rows]),
                )
            )
        )
        fresh = [r for r in rows if r.item_id not in taken]
        if fresh:
            db.execute(insert(Prediction), prediction_values(project_id, version_id, fresh))
    return len(fresh)


def finish_prediction(
    settings: Settings,
    ctx: JobContext,
    params: dict[str, Any],
    results: list[dict[str, Any] | None],
) -> dict[str, Any]:
    """Keep the new embeddings, mark unreadable items, refresh the queue arrays."""
    from loupe.tasks.prediction_arrays import load_or_decode

    features = finish_embedding(settings, ctx, params, results)
    project_id = int(params["project_id"])
    version_id = int(params["version_id"])
    drafted = sum(int((r or {}).get("drafted", 0)) for r in results)
    with session_scope(settings.db_url, write=False) as db:
        version = db.get(ModelVersion, version_id)
        if version is not None and drafted:
            try:
                load_or_decode(db, settings, version)
            except Exception:  # only a speed-up: a queue request decodes the rows itself
                log.exception("could not rewrite the queue arrays of model version %s", version_id)
    return {
        "project_id": project_id,
        "model_version_id": version_id,
        "items": sum(int((r or {}).get("items", 0)) for r in results),
        "drafted": drafted,
        "flagged": sum(int((r or {}).get("flagged", 0)) for r in results),
        "unreadable": features["unreadable"],
        "chunks": len(results),
    }


register_chunked_kind(
    PREDICT_KIND,
    plan=plan_prediction,
    chunk=predict_chunk,
    finalize=finish_prediction,
    exclusive=True,
)
