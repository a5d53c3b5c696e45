"""Running jobs: claim a queued row, run its kind, record the outcome.

:func:`run_job` claims a ``queued`` row (``queued`` -> ``running`` in one
conditional UPDATE, so a duplicate or late message is a no-op), runs the kind's
function with a :class:`~loupe.jobs.context.JobContext` and a heartbeat thread,
and records the outcome only if the row is still its attempt. A worker killed
mid-job leaves a stale heartbeat that :func:`reap_stale_jobs` turns into
``failed`` (or ``cancelled`` if a cancel was requested); :func:`fail_worker_jobs`
marks the jobs of a worker that is shutting down. Imports the registry and the
context only (the queue imports this module).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from loupe.db.models import Job, JobStatus, ModelVersion
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import LoupeError
from loupe.jobs.context import JobCancelled, JobContext, JobFannedOut
from loupe.jobs.registry import get_job_kind
from loupe.settings import Settings

log = logging.getLogger(__name__)

WORKER_LOST = "worker lost (killed or crashed) while running; retry it"
# Job.worker of a parent job waiting for its chunk jobs (loupe.jobs.chunks): no
# process runs it, so it has no heartbeat to go stale.
CHUNK_WAIT = "(chunks)"
DEFAULT_STALE_AFTER_S = 60.0
_MAX_ERROR_CHARS = 2000


# --- hooks ----------------------------------------------------------------------

FinishHook = Callable[[Settings, int, dict[str, Any]], None]
_FINISH_HOOKS: list[FinishHook] = []


def add_finish_hook(hook: FinishHook) -> None:
    """Call ``hook(settings, job_id, params)`` after a job ended (or was reaped).

    How :mod:`loupe.jobs.chunks` (a layer above) learns that a chunk finished
    without this module importing it. Adding the same hook twice is a no-op.
    """
    if hook not in _FINISH_HOOKS:
        _FINISH_HOOKS.append(hook)


def _after_finish(settings: Settings, job_id: int, params: dict[str, Any]) -> None:
    for hook in list(_FINISH_HOOKS):
        try:
            hook(settings, job_id, params)
        except Exception:
            # The job's own outcome is recorded; a parent is refreshed again later.
            log.exception("job %s: finish hook %s failed", job_id, hook.__qualname__)


# --- reaping ---------------------------------------------------------------------


def reap_stale_jobs(
    db_or_settings: Session | Settings, *, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> list[int]:
    """Mark ``running`` jobs whose heartbeat is older than ``stale_after_s`` as failed.

    Their worker was killed or crashed (a live one beats every few seconds). A
    job whose cancel was requested becomes ``cancelled`` instead. Given a
    Session, works in its transaction; given Settings, in one of its own.
    Returns the ids of the jobs it changed.
    """
    if isinstance(db_or_settings, Session):
        return _reap(db_or_settings, stale_after_s)
    with session_scope(db_or_settings.db_url) as db:
        reaped = _reap(db, stale_after_s)
        params: dict[int, Any] = {
            row.id: row.params
            for row in db.execute(select(Job.id, Job.params).where(Job.id.in_(reaped)))
        }
    for job_id in reaped:
        _after_finish(db_or_settings, job_id, dict(params.get(job_id) or {}))
    return reaped


def fail_worker_jobs(settings: Settings, worker: str, reason: str) -> list[int]:
    """Mark the jobs that ``worker`` (``host:pid``) still runs as failed with ``reason``."""
    with session_scope(settings.db_url) as db:
        rows = db.execute(
            update(Job)
            .where(Job.status == JobStatus.running.value, Job.worker == worker)
            .values(status=JobStatus.failed.value, error=reason, finished_at=utcnow())
            .returning(Job.id, Job.params)
        ).all()
        ids = [row.id for row in rows]
        fail_job_versions(db, ids, reason)
    for row in rows:
        log.warning("job %s marked failed: %s", row.id, reason)
        _after_finish(settings, row.id, dict(row.params or {}))
    return ids


def fail_job_versions(db: Session, job_ids: Sequence[int], reason: str) -> None:
    """Model versions still ``training`` under these (dead) jobs end ``failed``.

    A killed training never finishes its version; left alone it would show
    'training' forever (and never replace the active model, which is right).
    """
    if job_ids:
        db.execute(
            update(ModelVersion)
            .where(ModelVersion.job_id.in_(job_ids), ModelVersion.status == "training")
            .values(status="failed", finished_at=utcnow(), params={"error": reason})
        )


def _reap(db: Session, stale_after_s: float) -> list[int]:
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    stale = and_(
        Job.status == JobStatus.running.value,
        or_(Job.worker.is_(None), Job.worker != CHUNK_WAIT),
        or_(
            Job.heartbeat_at < cutoff,
            and_(Job.heartbeat_at.is_(None), Job.started_at < cutoff),
        ),
    )
    reaped = []
    for job_id, cancel_requested in db.execute(
        select(Job.id, Job.cancel_requested).where(stale)
    ).all():
        if cancel_requested:
            values: dict[str, Any] = {"status": JobStatus.cancelled.value, "message": "cancelled"}
        else:
            values = {"status": JobStatus.failed.value, "error": WORKER_LOST}
        # Conditional: a heartbeat that lands meanwhile keeps the job running.
        changed = db.scalar(
            update(Job)
            .where(Job.id == job_id, stale)
            .values(finished_at=utcnow(), **values)
            .returning(Job.id)
        )
        if changed is not None:
            log.warning(
                "job %s: no heartbeat for %ss, marked %s", job_id, stale_after_s, values["status"]
            )
            reaped.append(job_id)
    fail_job_versions(db, reaped, WORKER_LOST)
    return reaped


# --- running ---------------------------------------------------------------------


def worker_name() -> str:
    """This process as recorded in ``Job.worker``: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_interval(settings: Settings) -> float:
    """Seconds between heartbeats: ``settings.job_heartbeat_s`` (``LOUPE_JOB_HEARTBEAT_S``)."""
    return settings.job_heartbeat_s


def run_job(settings: Settings, job_id: int, *, heartbeat_s: float | None = None) -> str | None:
    """Run job ``job_id`` here and record its outcome; return its final status.

    Returns None (and does nothing) if the job is not ``queued``: cancelled
    before it started, already taken by another worker, or deleted. Never
    raises for a failing job function: the error message goes to the row,
    the traceback to the log, so huey does not retry on its own.
    """
    claimed = _claim(settings, job_id)
    if claimed is None:
        log.info("job %s is not queued (cancelled, taken or deleted); skipped", job_id)
        return None
    kind, params, attempt = claimed
    ctx = JobContext(settings, job_id, attempt)
    stop = threading.Event()
    interval = heartbeat_s if heartbeat_s is not None else heartbeat_interval(settings)
    beater = threading.Thread(
        target=_heartbeat, args=(ctx, stop, interval), name=f"job-{job_id}-heartbeat", daemon=True
    )
    beater.start()
    result: dict[str, Any] | None = None
    error: str | None = None
    try:
        fn = get_job_kind(kind).fn
        log.info("job %s (%s) attempt %s started", job_id, kind, attempt)
        out = fn(settings, ctx, params)
        if out is not None and not isinstance(out, dict):
            raise TypeError(f"job kind {kind!r} returned {type(out).__name__}, not a dict")
        result, status = out, JobStatus.done.value
    except JobCancelled as exc:
        status = JobStatus.cancelled.value
        log.info("job %s (%s) cancelled: %s", job_id, kind, exc)
    except JobFannedOut:
        # Split into chunk jobs: the row stays running until they end.
        log.info("job %s (%s) split into chunk jobs", job_id, kind)
        return JobStatus.running.value  # (the finally clause stops the heartbeat)
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, kind)
        status, error = JobStatus.failed.value, describe_error(exc)
    except BaseException:
        _finish(settings, ctx, JobStatus.failed.value, None, "worker interrupted while running")
        raise
    finally:
        stop.set()
        beater.join(timeout=5)
    final = _finish(settings, ctx, status, result, error)
    if final is not None:
        _after_finish(settings, job_id, params)
    return final


def describe_error(exc: BaseException) -> str:
    """A one-line message for ``Job.error`` (the traceback goes to the log only)."""
    text_ = exc.message if isinstance(exc, LoupeError) else f"{type(exc).__name__}: {exc}"
    return text_.rstrip(": ")[:_MAX_ERROR_CHARS]


def _claim(settings: Settings, job_id: int) -> tuple[str, dict[str, Any], int] | None:
    now = utcnow()
    with session_scope(settings.db_url) as db:
        row = db.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.queued.value)
            .values(
                status=JobStatus.running.value,
                attempts=Job.attempts + 1,
                started_at=now,
                heartbeat_at=now,
                finished_at=None,
                worker=worker_name(),
                progress=0.0,
                message="",
                error=None,
                result=None,
                cancel_requested=False,
            )
            .returning(Job.kind, Job.params, Job.attempts)
        ).first()
    return None if row is None else (row.kind, dict(row.params or {}), row.attempts)


def _heartbeat(ctx: JobContext, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        ctx.beat()


def _finish(
    settings: Settings,
    ctx: JobContext,
    status: str,
    result: dict[str, Any] | None,
    error: str | None,
) -> str | None:
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": error}
    pending = ctx.pending()
    if pending is not None:
        values["progress"], values["message"] = pending
    if status == JobStatus.done.value:
        values.update(progress=1.0, result=result)
    elif status == JobStatus.cancelled.value:
        values["message"] = "cancelled"
    mine = and_(
        Job.id == ctx.job_id,
        Job.status == JobStatus.running.value,
        Job.attempts == ctx.attempt,
    )
    try:
        with session_scope(settings.db_url) as db:
            changed = db.scalar(update(Job).where(mine).values(**values).returning(Job.id))
    except Exception as exc:
        # E.g. a result that is not JSON: record that instead of leaving 'running'.
        log.exception("job %s: could not record its outcome", ctx.job_id)
        with session_scope(settings.db_url) as db:
            changed = db.scalar(
                update(Job)
                .where(mine)
                .values(
                    status=JobStatus.failed.value,
                    finished_at=utcnow(),
                    error=f"could not record the outcome: {describe_error(exc)}",
                )
                .returning(Job.id)
            )
        status = JobStatus.failed.value
    if changed is None:
        log.warning(
            "job %s attempt %s ended %s, but the row was reaped or retried meanwhile; "
            "outcome discarded",
            ctx.job_id,
            ctx.attempt,
            status,
        )
        return None
    log.info("job %s attempt %s %s", ctx.job_id, ctx.attempt, status)
    return status
