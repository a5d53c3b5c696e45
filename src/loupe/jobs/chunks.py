"""Chunk jobs: one parent job whose work is split into N child jobs that any
number of workers run in parallel.

A *chunked kind* is three plain functions registered with
:func:`register_chunked_kind`:

* ``plan(settings, ctx, params) -> [chunk params, ...]`` runs first, in a worker,
  as the parent job (e.g. walk a folder, list the items to embed);
* ``chunk(settings, ctx, chunk_params) -> result`` runs once per chunk, as a child
  job of kind ``<name>.chunk`` (params carry ``_parent`` and ``_index``);
* ``finalize(settings, ctx, params, [chunk results]) -> result`` runs as the parent
  again once every chunk is done (sum reports, assemble feature files).

With one chunk or none, ``plan`` is followed by the chunk and ``finalize`` in the
same job: small work costs nothing extra. With more, the parent creates the
children in one transaction, marks itself waiting (``Job.worker`` =
:data:`~loupe.jobs.runner.CHUNK_WAIT`: no heartbeat, never reaped), enqueues them
and stops (:class:`~loupe.jobs.context.JobFannedOut`). All state is in the
``jobs`` table (the children's ids in the parent's ``params['_chunks']``), so
no migration and no process memory is involved:

* after each child ends (or is reaped), :func:`refresh_parent` aggregates:
  progress = mean of the children's; a failed child fails the parent with the
  children's errors (the other chunks run on, so a retry only redoes what
  failed); a cancelled child cancels it; when all are done the parent is
  queued again and runs ``finalize``;
* cancelling the parent cancels its queued children and asks running ones to stop;
* retrying the parent re-queues only its failed or cancelled chunks (or just
  ``finalize`` when every chunk is done); retrying one chunk revives its parent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Job, JobStatus
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.jobs.context import JobContext, JobFannedOut
from loupe.jobs.queue import enqueue_job
from loupe.jobs.registry import DEFAULT_QUEUE, JobFn, get_job_kind, register_job_kind
from loupe.jobs.runner import CHUNK_WAIT, add_finish_hook
from loupe.settings import Settings

log = logging.getLogger(__name__)

CHUNK_SUFFIX = ".chunk"
_MAX_ERRORS = 5

PlanFn = Callable[[Settings, JobContext, dict[str, Any]], list[dict[str, Any]]]
FinalizeFn = Callable[
    [Settings, JobContext, dict[str, Any], list[dict[str, Any] | None]], dict[str, Any] | None
]


def chunk_kind_name(name: str) -> str:
    """The kind of the child jobs of chunked kind ``name``: ``<name>.chunk``."""
    return f"{name}{CHUNK_SUFFIX}"


def register_chunked_kind(
    name: str,
    *,
    plan: PlanFn,
    chunk: JobFn,
    finalize: FinalizeFn,
    queue: str = DEFAULT_QUEUE,
    exclusive: bool = False,
) -> None:
    """Register the job kinds ``name`` (the parent) and ``<name>.chunk`` (its children)."""
    child = chunk_kind_name(name)
    register_job_kind(child, queue=queue)(chunk)

    def run_parent(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> Any:
        state = params.get("_chunks")
        if state is not None:  # second phase: every chunk is done
            results = child_results(settings, [int(i) for i in state["children"]])
            return finalize(settings, ctx, params, results)
        chunks = plan(settings, ctx, params)
        if len(chunks) <= 1:
            return finalize(settings, ctx, params, [chunk(settings, ctx, c) for c in chunks])
        fan_out(settings, ctx, child, chunks)
        return None  # not reached: fan_out raises

    run_parent.__qualname__ = f"chunked:{name}"  # distinct per kind for the registry check
    register_job_kind(name, queue=queue, exclusive=exclusive)(run_parent)


def fan_out(
    settings: Settings, ctx: JobContext, child_kind: str, chunks: list[dict[str, Any]]
) -> None:
    """Create one ``child_kind`` job per chunk, make job ``ctx.job_id`` wait for
    them, enqueue them and raise :class:`JobFannedOut` (``run_job`` catches it)."""
    ctx.discard_pending()  # from now on the chunks report the parent's progress
    with session_scope(settings.db_url) as db:
        parent = db.get(Job, ctx.job_id, with_for_update=True)
        if parent is None or parent.status != JobStatus.running.value:
            raise JobFannedOut("the parent is no longer running; no chunks created")
        children = [
            Job(
                project_id=parent.project_id,
                kind=child_kind,
                params={**c, "_parent": parent.id, "_index": k},
                created_by=parent.created_by,
                status=JobStatus.queued.value,
            )
            for k, c in enumerate(chunks)
        ]
        db.add_all(children)
        db.flush()
        ids = [c.id for c in children]
        parent.params = {**(parent.params or {}), "_chunks": {"kind": child_kind, "children": ids}}
        parent.worker = CHUNK_WAIT
        parent.heartbeat_at = utcnow()
        parent.progress = 0.0
        parent.message = f"0/{len(ids)} chunks done"
        parent.result = {"chunks": {"total": len(ids), "done": 0}}
    log.info("job %s split into %d %s jobs", ctx.job_id, len(ids), child_kind)
    queue = get_job_kind(child_kind).queue
    for child_id in ids:
        enqueue_job(settings, child_id, queue)
    raise JobFannedOut(f"{len(ids)} chunks")


def child_results(settings: Settings, child_ids: list[int]) -> list[dict[str, Any] | None]:
    """The results of the chunks, in chunk order."""
    with session_scope(settings.db_url, write=False) as db:
        rows: dict[int, Any] = {
            row.id: row.result
            for row in db.execute(select(Job.id, Job.result).where(Job.id.in_(child_ids)))
        }
    return [rows.get(i) for i in child_ids]


def children_of(db: Session, parent: Job) -> list[int]:
    """The ids of a parent's chunk jobs (empty for a job that was not split)."""
    state = (parent.params or {}).get("_chunks") or {}
    return [int(i) for i in state.get("children", [])]


def refresh_parent(settings: Settings, parent_id: int) -> str | None:
    """Aggregate the chunks of a waiting parent into its row; return its new status.

    Returns None when ``parent_id`` is not waiting for chunks. When every chunk is
    done, the parent is queued and enqueued to run ``finalize``.
    """
    with session_scope(settings.db_url) as db:
        parent = db.get(Job, parent_id, with_for_update=True)
        if (
            parent is None
            or parent.status != JobStatus.running.value
            or parent.worker != CHUNK_WAIT
        ):
            return None
        ids = children_of(db, parent)
        rows = db.execute(
            select(Job.id, Job.status, Job.progress, Job.error).where(Job.id.in_(ids))
        ).all()
        by_status: dict[str, list[Any]] = {}
        for row in rows:
            by_status.setdefault(row.status, []).append(row)
        done = len(by_status.get(JobStatus.done.value, []))
        failed = by_status.get(JobStatus.failed.value, [])
        cancelled = by_status.get(JobStatus.cancelled.value, [])
        running = by_status.get(JobStatus.running.value, [])
        total = max(1, len(ids))
        parent.progress = min(0.99, (done + sum(float(r.progress or 0) for r in running)) / total)
        parent.heartbeat_at = utcnow()
        parent.result = {
            "chunks": {
                "total": len(ids),
                "done": done,
                "running": len(running),
                "queued": len(by_status.get(JobStatus.queued.value, [])),
                "failed": len(failed),
                "cancelled": len(cancelled),
            }
        }
        if failed:
            errors = "; ".join(f"chunk job {r.id}: {r.error}" for r in failed[:_MAX_ERRORS])
            more = f" (and {len(failed) - _MAX_ERRORS} more)" if len(failed) > _MAX_ERRORS else ""
            parent.status = JobStatus.failed.value
            parent.finished_at = utcnow()
            parent.error = (
                f"{len(failed)} of {len(ids)} chunks failed: {errors}{more}; retry the job "
                "to run only those again"
            )[:2000]
            status = parent.status
        elif cancelled:
            parent.status = JobStatus.cancelled.value
            parent.finished_at = utcnow()
            parent.message = f"cancelled ({len(cancelled)} chunks cancelled)"
            status = parent.status
        elif done == len(ids):
            parent.status = JobStatus.queued.value
            parent.worker = None
            parent.message = f"{done}/{len(ids)} chunks done; assembling"
            status = parent.status
        else:
            parent.message = f"{done}/{len(ids)} chunks done"
            status = parent.status
        kind = parent.kind
    if status == JobStatus.queued.value:
        enqueue_job(settings, parent_id, get_job_kind(kind).queue)
    return status


def cancel_children(db: Session, parent: Job) -> int:
    """In ``db``'s transaction: cancel a parent's queued chunks, ask running ones to
    stop. Returns how many chunks it touched."""
    touched = 0
    ids = children_of(db, parent)
    if not ids:
        return 0
    for child in db.scalars(select(Job).where(Job.id.in_(ids)).with_for_update()):
        if child.status == JobStatus.queued.value:
            child.status = JobStatus.cancelled.value
            child.finished_at = utcnow()
            child.message = "cancelled with its parent"
            touched += 1
        elif child.status == JobStatus.running.value:
            child.cancel_requested = True
            child.message = "cancel requested"
            touched += 1
    return touched


def requeue_children(db: Session, parent: Job) -> list[int] | None:
    """In ``db``'s transaction: put a failed or cancelled parent's unfinished chunks
    back in the queue and make the parent wait for them again.

    Returns the chunk ids to enqueue after commit, or None when the parent was
    never split or every chunk is done (then retry the parent itself).
    """
    ids = children_of(db, parent)
    if not ids:
        return None
    redo: list[int] = []
    unfinished = 0
    for child in db.scalars(select(Job).where(Job.id.in_(ids)).with_for_update()):
        if child.status == JobStatus.done.value:
            continue
        unfinished += 1
        if child.status in (JobStatus.failed.value, JobStatus.cancelled.value):
            reset_for_retry(child)
            redo.append(child.id)
        elif child.status == JobStatus.queued.value:
            redo.append(child.id)  # its message may be lost; a duplicate is a no-op
    if not unfinished:
        return None
    reset_for_retry(parent)
    parent.status = JobStatus.running.value
    parent.worker = CHUNK_WAIT
    parent.started_at = parent.heartbeat_at = utcnow()
    return redo


def revive_parent(db: Session, child: Job) -> None:
    """A chunk is retried: its failed or cancelled parent waits for its chunks again."""
    parent_id = (child.params or {}).get("_parent")
    if parent_id is None:
        return
    parent = db.get(Job, int(parent_id), with_for_update=True)
    if parent is not None and parent.status in (JobStatus.failed.value, JobStatus.cancelled.value):
        reset_for_retry(parent)
        parent.status = JobStatus.running.value
        parent.worker = CHUNK_WAIT
        parent.started_at = parent.heartbeat_at = utcnow()


def reset_for_retry(job: Job) -> None:
    """Clear a job's outcome so it can run again (status set by the caller)."""
    job.status = JobStatus.queued.value
    job.error = None
    job.result = None
    job.progress = 0.0
    job.message = ""
    job.started_at = job.finished_at = job.heartbeat_at = None
    job.worker = None
    job.cancel_requested = False


def _on_finish(settings: Settings, job_id: int, params: dict[str, Any]) -> None:
    parent_id = params.get("_parent")
    if parent_id is not None:
        refresh_parent(settings, int(parent_id))


add_finish_hook(_on_finish)
