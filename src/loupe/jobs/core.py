"""Jobs, producer side: create and enqueue, read, retry, cancel.

Life of a job row: ``queued`` -> ``running`` -> ``done`` | ``failed`` |
``cancelled``. :func:`submit` inserts and commits the row, then enqueues its id
on the queue of its kind (:mod:`loupe.jobs.registry`); a worker consuming that
queue runs it (:mod:`loupe.jobs.runner`). All job state is in the ``jobs`` table.

Imports in ``loupe.jobs`` go one way: ``worker`` -> ``core`` -> ``chunks`` -> ``queue`` ->
``tasks`` -> ``runner`` -> ``registry`` -> ``context`` (``selftest`` registers a
kind). Nothing here imports ``loupe.services``: the modules that declare job
kinds are imported by :func:`loupe.plugins.load_plugins`.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from loupe.db.models import Job, JobStatus, Project
from loupe.db.session import session_factory, session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs import chunks
from loupe.jobs.queue import enqueue_job
from loupe.jobs.registry import get_job_kind
from loupe.settings import Settings

log = logging.getLogger(__name__)

ACTIVE = (JobStatus.queued.value, JobStatus.running.value)
TERMINAL = frozenset({JobStatus.done.value, JobStatus.failed.value, JobStatus.cancelled.value})

# --- creating, enqueueing, reading ------------------------------------------------


def create_job(
    db: Session,
    *,
    kind: str,
    project_id: int | None,
    params: dict[str, Any],
    user_id: int | None,
    exclusive: bool = False,
) -> Job:
    """Insert a queued job in ``db``'s transaction (not enqueued: see :func:`enqueue`).

    With ``exclusive`` (or an exclusive kind), raise ``LoupeError(BUSY)`` when a
    queued or running job of the same kind exists for the project. The check is
    serialized by a lock: the project row (``FOR UPDATE``) or, without a project,
    an advisory lock on PostgreSQL; on SQLite by the write lock that write
    sessions take at BEGIN.
    """
    exclusive = exclusive or get_job_kind(kind).exclusive
    _lock_scope(db, kind, project_id, lock=exclusive)
    if exclusive:
        _ensure_not_busy(db, kind, project_id)
    job = Job(
        project_id=project_id,
        kind=kind,
        params=dict(params),
        created_by=user_id,
        status=JobStatus.queued.value,
    )
    db.add(job)
    db.flush()
    return job


def enqueue(settings: Settings, job_id: int, kind: str) -> None:
    """Send job ``job_id`` to the queue of ``kind``. Call it only after the row is committed.

    With ``settings.jobs_immediate`` the job runs here, before this returns.
    """
    enqueue_job(settings, job_id, get_job_kind(kind).queue)


def submit(
    settings: Settings,
    *,
    kind: str,
    project_id: int | None,
    params: dict[str, Any],
    user_id: int | None,
    exclusive: bool = False,
) -> Job:
    """Create a job in a transaction of its own, commit, enqueue it on its kind's
    queue; return it as now stored.

    Do not call it while holding an open write transaction on SQLite (commit the
    request session first): it would wait for that lock.
    """
    with session_scope(settings.db_url) as db:
        job_id = create_job(
            db,
            kind=kind,
            project_id=project_id,
            params=params,
            user_id=user_id,
            exclusive=exclusive,
        ).id
    try:
        enqueue(settings, job_id, kind)
    except Exception as exc:
        if settings.jobs_immediate:
            raise  # the job ran here: its own errors are its result
        # The queue (Redis) is unreachable: the job would stay 'queued' for ever
        # (and an exclusive one block its project). Fail it, retryable, and say so.
        reason = f"the job queue is unreachable ({type(exc).__name__}: {exc})"
        with session_scope(settings.db_url) as db:
            db.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued.value)
                .values(status=JobStatus.failed.value, error=reason, finished_at=utcnow())
            )
        raise LoupeError(
            ErrorCode.UNAVAILABLE,
            f"{reason}; retry job {job_id} shortly",
            retry_after=5,
            job_id=job_id,
        ) from exc
    return fetch_job(settings, job_id)


def fetch_job(settings: Settings, job_id: int) -> Job:
    """The job as stored now, read in a short session of its own (detached)."""
    with session_factory(settings.db_url)() as db:
        return get_job(db, job_id)


def get_job(db: Session, job_id: int) -> Job:
    job = db.get(Job, job_id)
    if job is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"job {job_id} not found")
    return job


def list_jobs(
    db: Session,
    project_id: int,
    *,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    """A project's jobs, newest first, and the total count matching the filters."""
    where = [Job.project_id == project_id]
    if status is not None:
        where.append(Job.status == status)
    if kind is not None:
        where.append(Job.kind == kind)
    count = db.scalar(select(func.count(Job.id)).where(*where)) or 0
    rows = db.scalars(select(Job).where(*where).order_by(Job.id.desc()).limit(limit).offset(offset))
    return list(rows), count


# --- retry, cancel ---------------------------------------------------------------


def retry_job(settings: Settings, job_id: int, user_id: int | None) -> Job:
    """Run a failed or cancelled job again on the same row and enqueue it.

    A ``queued`` job is only re-enqueued (its message may have been lost; a
    duplicate message is harmless). ``running`` or ``done`` -> ``CONFLICT``.
    """
    with session_scope(settings.db_url) as db:
        job = get_job(db, job_id)
        kind = job.kind
        exclusive = get_job_kind(kind).exclusive
        _lock_scope(db, kind, job.project_id, lock=exclusive)
        db.refresh(job, with_for_update=True)
        if job.status in (JobStatus.running.value, JobStatus.done.value):
            raise LoupeError(
                ErrorCode.CONFLICT,
                f"job {job_id} is {job.status}; only failed, cancelled or "
                "queued jobs can be retried",
            )
        redo: list[int] | None = None
        if job.status != JobStatus.queued.value:
            if exclusive:
                _ensure_not_busy(db, kind, job.project_id)
            # A split job re-runs only its unfinished chunks (None: none left).
            redo = chunks.requeue_children(db, job)
            if redo is None:
                chunks.reset_for_retry(job)
                chunks.revive_parent(db, job)
        log.info("job %s (%s) retried by user %s", job_id, kind, user_id)
        child_kind = chunks.chunk_kind_name(kind)
    if redo is None:
        enqueue(settings, job_id, kind)
    else:
        for child_id in redo:
            enqueue(settings, child_id, child_kind)
    return fetch_job(settings, job_id)


def cancel_job(db: Session, job_id: int, *, user_id: int | None) -> Job:
    """Cancel a job in ``db``'s transaction.

    ``queued`` -> ``cancelled`` at once (its queue message becomes a no-op);
    ``running`` -> a cancel request that the job sees at its next
    ``check_cancelled()``; ``cancelled`` -> unchanged; ``done``/``failed`` ->
    ``CONFLICT``. A parent waiting for its chunk jobs is cancelled at once, with
    its queued chunks; its running chunks are asked to stop.
    """
    job = db.get(Job, job_id, with_for_update=True)
    if job is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"job {job_id} not found")
    if job.status == JobStatus.queued.value:
        job.status = JobStatus.cancelled.value
        job.finished_at = utcnow()
        job.message = "cancelled before it started"
    elif job.status == JobStatus.running.value and job.worker == chunks.CHUNK_WAIT:
        job.status = JobStatus.cancelled.value
        job.finished_at = utcnow()
        job.message = "cancelled"
        chunks.cancel_children(db, job)
        log.info("job %s (%s) and its chunks cancelled by user %s", job_id, job.kind, user_id)
    elif job.status == JobStatus.running.value:
        job.cancel_requested = True
        job.message = "cancel requested"
        log.info("job %s (%s): cancel requested by user %s", job_id, job.kind, user_id)
    elif job.status != JobStatus.cancelled.value:
        raise LoupeError(ErrorCode.CONFLICT, f"job {job_id} is already {job.status}")
    db.flush()
    return job


def _lock_scope(db: Session, kind: str, project_id: int | None, *, lock: bool) -> None:
    """Check that the project exists; with ``lock``, serialize job creation for it."""
    if project_id is not None:
        query = select(Project.id).where(Project.id == project_id)
        if db.scalar(query.with_for_update() if lock else query) is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    elif lock and db.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(f"loupe.jobs:{kind}".encode())
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _ensure_not_busy(db: Session, kind: str, project_id: int | None) -> None:
    same_project = Job.project_id.is_(None) if project_id is None else Job.project_id == project_id
    row = db.execute(
        select(Job.id, Job.status)
        .where(same_project, Job.kind == kind, Job.status.in_(ACTIVE))
        .limit(1)
    ).first()
    if row is not None:
        where = f"project {project_id}" if project_id is not None else "the site"
        raise LoupeError(
            ErrorCode.BUSY,
            f"a {kind} job (#{row.id}) is already {row.status} for {where}; "
            "wait for it to finish or cancel it",
            job_id=row.id,
        )
