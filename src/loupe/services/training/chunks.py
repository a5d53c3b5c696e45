"""Embedding every item of a project as a chunked job (``embed``).

The parent lists the items that some ensemble member's feature store lacks and
splits them into chunks of ~500 items; each chunk job (any worker, any machine
sharing LOUPE_HOME) embeds its items with every member and writes one
``.npz`` per member (item ids + float32 rows) under
``features/<project>/_chunks/<job>/``; the parent then appends them to the
feature stores. The stores have one writer (the parent's ``finalize``), as
:class:`loupe.features.FeatureStore` requires, and a chunk that is retried
simply rewrites its files. Training afterwards finds every embedding cached.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from loupe.db.models import Item, Job, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.chunks import register_chunked_kind
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.settings import Settings
from loupe.tasks.embedding import ensemble_members, mark_unreadable

log = logging.getLogger(__name__)

EMBED_KIND = "embed"
CHUNK_ITEMS = 500


def request_embedding(
    settings: Settings,
    project_id: int,
    *,
    user_id: int | None,
    members: list[str] | None = None,
    chunk_size: int = CHUNK_ITEMS,
) -> Job:
    """Submit an ``embed`` job for the project (409 BUSY while one is active)."""
    return submit(
        settings,
        kind=EMBED_KIND,
        project_id=project_id,
        params={"project_id": project_id, "members": members, "chunk_size": chunk_size},
        user_id=user_id,
    )


def member_store(settings: Settings, project_id: int, name: str) -> Any:
    from loupe.features import FeatureStore, get_backbone

    backbone = get_backbone(name, weights_dir=settings.weights, cache_dir=settings.home / "cache")
    return backbone, FeatureStore(settings.features_dir, project_id, name, backbone.dim)


def chunk_dir(settings: Settings, project_id: int, job_id: int) -> Path:
    return settings.features_dir / str(project_id) / "_chunks" / str(job_id)


def plan_embedding(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """The items some member lacks, in chunks of ``params['chunk_size']`` ids."""
    project_id = int(params["project_id"])
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        members = list(params.get("members") or ensemble_members(project.settings or {}))
        ids = list(
            db.scalars(
                select(Item.id)
                .where(Item.project_id == project_id, Item.status != "error")
                .order_by(Item.id)
            )
        )
    ctx.progress(0.0, f"checking {len(ids)} items")
    todo: set[int] = set()
    for name in members:
        _, store = member_store(settings, project_id, name)
        todo.update(store.missing(ids))
    ordered = [i for i in ids if i in todo]
    size = max(1, int(params.get("chunk_size") or CHUNK_ITEMS))
    return [
        {"project_id": project_id, "members": members, "item_ids": ordered[k : k + size]}
        for k in range(0, len(ordered), size)
    ]


def embed_chunk(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Embed one chunk's items with every member into ``.npz`` files; return counts."""
    project_id = int(params["project_id"])
    item_ids = [int(i) for i in params["item_ids"]]
    parent = int(params.get("_parent", ctx.job_id))
    index = int(params.get("_index", 0))
    with session_scope(settings.db_url, write=False) as db:
        rows = {
            row.id: (row.files or row.uri)
            for row in db.execute(
                select(Item.id, Item.uri, Item.files).where(Item.id.in_(item_ids))
            )
        }
    ids = [i for i in item_ids if i in rows]
    folder = chunk_dir(settings, project_id, parent)
    folder.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    members = list(params["members"])
    for m, name in enumerate(members):
        backbone, store = member_store(settings, project_id, name)
        todo = store.missing(ids)

        def progress(done: int, total: int, *, _m: int = m, _name: str = name) -> None:
            ctx.check_cancelled()
            ctx.progress((_m + done / max(1, total)) / len(members), f"{_name}: {done}/{total}")

        matrix, bad = backbone.embed_paths([rows[i] for i in todo], progress=progress)
        good = [k for k in range(len(todo)) if k not in bad]
        failed.update({str(todo[k]): reason for k, reason in bad.items()})
        tmp = folder / f".{name}-{index:05d}.npz"
        with tmp.open("wb") as fh:
            np.savez(fh, ids=np.asarray([todo[k] for k in good], dtype=np.int64), x=matrix[good])
        tmp.replace(folder / f"{name}-{index:05d}.npz")
    return {"items": len(ids), "members": members, "failed": failed}


def finish_embedding(
    settings: Settings,
    ctx: JobContext,
    params: dict[str, Any],
    results: list[dict[str, Any] | None],
) -> dict[str, Any]:
    """Append every chunk's rows to the feature stores; mark unreadable items."""
    project_id = int(params["project_id"])
    folder = chunk_dir(settings, project_id, ctx.job_id)
    embedded: dict[str, int] = {}
    members = sorted({m for r in results if r for m in r.get("members", [])})
    for name in members:
        _, store = member_store(settings, project_id, name)
        added = 0
        for path in sorted(folder.glob(f"{name}-[0-9][0-9][0-9][0-9][0-9].npz")):
            with np.load(path, allow_pickle=False) as part:
                ids, x = part["ids"], part["x"]
            keep = set(store.missing([int(i) for i in ids]))
            rows = [k for k, i in enumerate(ids) if int(i) in keep]
            if rows:
                store.add([int(ids[k]) for k in rows], x[rows])
                added += len(rows)
        embedded[name] = added
    errors = {int(k): v for r in results if r for k, v in (r.get("failed") or {}).items()}
    if errors:
        mark_unreadable(settings, errors)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "items": sum(int((r or {}).get("items", 0)) for r in results),
        "embedded": embedded,
        "unreadable": len(errors),
        "chunks": len(results),
    }


register_chunked_kind(
    EMBED_KIND, plan=plan_embedding, chunk=embed_chunk, finalize=finish_embedding, exclusive=True
)
