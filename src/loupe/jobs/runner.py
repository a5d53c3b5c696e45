"""Running jobs: the worker side of :mod:`loupe.jobs.core`.

:func:`run_job` claims a ``queued`` row (``queued`` -> ``running`` in one
conditional UPDATE, so a duplicate or late message is a no-op), runs the kind's
function with a :class:`JobContext` and a heartbeat thread, and records the
outcome only if the row is still its attempt. A worker killed mid-job leaves a
stale heartbeat that :func:`reap_stale_jobs` turns into ``failed`` (or
``cancelled`` if a cancel was requested); :func:`fail_worker_jobs` marks the
jobs of a worker that is shutting down. Also home of the built-in ``selftest``
kind (this module is in ``KIND_MODULES``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from loupe.db.models import Job, JobStatus
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.core import load_job_kinds, register_job_kind
from loupe.settings import Settings

log = logging.getLogger(__name__)

WORKER_LOST = "worker lost (killed or crashed) while running; retry it"
DEFAULT_STALE_AFTER_S = 60.0
_MAX_ERROR_CHARS = 2000


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled`; ``run_job`` records ``cancelled``."""


class JobContext:
    """Handed to a job function: report progress and stop when asked to.

    Every write is its own short transaction (visible at once to the API and its
    SSE stream) and refreshes ``heartbeat_at``; writes are throttled to one per
    ``min_interval_s``, and a throttled progress value is written with the next
    write (the heartbeat thread's at the latest).
    """

    def __init__(
        self, settings: Settings, job_id: int, attempt: int, *, min_interval_s: float = 0.2
    ) -> None:
        self.settings = settings
        self.job_id = job_id
        self.attempt = attempt
        self.min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._pending: tuple[float, str] | None = None
        self._cancel_requested = False
        self._lost = False

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress in [0, 1] (clipped) and a short human-readable message."""
        with self._lock:
            self._pending = (min(max(float(fraction), 0.0), 1.0), message)
        if time.monotonic() - self._last_write >= self.min_interval_s:
            self.beat()

    def check_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if a user asked to cancel this job.

        Also raises when the row is no longer this attempt's (reaped as lost, or
        re-run elsewhere), so a worker that was presumed dead stops working.
        """
        if time.monotonic() - self._last_write >= self.min_interval_s:
            self.beat()
        if self._lost:
            raise JobCancelled("this attempt no longer owns the job (reaped or re-run)")
        if self._cancel_requested:
            raise JobCancelled("cancelled on request")

    def pending(self) -> tuple[float, str] | None:
        """The progress not yet written (used by ``run_job`` for the final write)."""
        with self._lock:
            return self._pending

    def beat(self) -> None:
        """Write the heartbeat and any pending progress; read the cancel flag."""
        with self._lock:
            self._last_write = time.monotonic()
            pending, self._pending = self._pending, None
        try:
            with session_scope(self.settings.db_url) as db:
                job = db.get(Job, self.job_id)
                if (
                    job is None
                    or job.status != JobStatus.running.value
                    or job.attempts != self.attempt
                ):
                    self._lost = True
                    return
                if pending is not None:
                    job.progress, job.message = pending
                job.heartbeat_at = utcnow()
                self._cancel_requested = job.cancel_requested
        except Exception:
            # A busy database must not kill the job; the next beat retries.
            log.warning("job %s: could not write progress/heartbeat", self.job_id, exc_info=True)
            with self._lock:
                if self._pending is None:
                    self._pending = pending


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
        return _reap(db, stale_after_s)


def fail_worker_jobs(settings: Settings, worker: str, reason: str) -> list[int]:
    """Mark the jobs that ``worker`` (``host:pid``) still runs as failed with ``reason``."""
    with session_scope(settings.db_url) as db:
        ids = db.scalars(
            update(Job)
            .where(Job.status == JobStatus.running.value, Job.worker == worker)
            .values(status=JobStatus.failed.value, error=reason, finished_at=utcnow())
            .returning(Job.id)
        ).all()
    for job_id in ids:
        log.warning("job %s marked failed: %s", job_id, reason)
    return list(ids)


def _reap(db: Session, stale_after_s: float) -> list[int]:
    cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
    stale = and_(
        Job.status == JobStatus.running.value,
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
        fn = load_job_kinds().get(kind)
        if fn is None:
            raise LoupeError(ErrorCode.INVALID, f"unknown job kind {kind!r} (not in KIND_MODULES)")
        log.info("job %s (%s) attempt %s started", job_id, kind, attempt)
        out = fn(settings, ctx, params)
        if out is not None and not isinstance(out, dict):
            raise TypeError(f"job kind {kind!r} returned {type(out).__name__}, not a dict")
        result, status = out, JobStatus.done.value
    except JobCancelled as exc:
        status = JobStatus.cancelled.value
        log.info("job %s (%s) cancelled: %s", job_id, kind, exc)
    except Exception as exc:
        log.exception("job %s (%s) failed", job_id, kind)
        status, error = JobStatus.failed.value, describe_error(exc)
    except BaseException:
        _finish(settings, ctx, JobStatus.failed.value, None, "worker interrupted while running")
        raise
    finally:
        stop.set()
        beater.join(timeout=5)
    return _finish(settings, ctx, status, result, error)


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


# --- built-in diagnostic kind ------------------------------------------------------


@register_job_kind("selftest")
def selftest(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Diagnostic job: ``steps`` steps of ``seconds`` each, progress after each step.

    Params: ``{"steps": n, "seconds": s, "fail_at": k | None}``; with ``fail_at``
    it raises at step ``k`` (0-based). It proves that a worker picks jobs up,
    that progress reaches the UI and that failures are recorded. It does no
    work, so only site admins may submit it through the API.
    """
    steps = int(params.get("steps", 5))
    seconds = float(params.get("seconds", 0.1))
    fail_at = params.get("fail_at")
    if not 1 <= steps <= 10_000:
        raise ValueError(f"steps must be in [1, 10000], got {steps}")
    if not 0 <= seconds <= 60:
        raise ValueError(f"seconds must be in [0, 60], got {seconds}")
    for step in range(steps):
        ctx.check_cancelled()
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"selftest failed at step {step} as asked (fail_at={fail_at})")
        time.sleep(seconds)
        ctx.progress((step + 1) / steps, f"step {step + 1}/{steps}")
    return {"steps": steps, "seconds": seconds, "worker": worker_name()}
