"""What a job function is handed: :class:`JobContext` (progress, cancel checks).

The bottom of ``loupe.jobs``: it imports nothing else from the package, so job
kinds (in ``loupe.services``) and the runner can both use it.
"""

from __future__ import annotations

import logging
import threading
import time

from loupe.db.models import Job, JobStatus
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.settings import Settings

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.check_cancelled`; ``run_job`` records ``cancelled``."""


class JobFannedOut(Exception):  # noqa: N818 (a signal, like StopIteration)
    """Raised by a job that split its work into chunk jobs (:mod:`loupe.jobs.chunks`).

    ``run_job`` then records nothing: the row stays ``running`` while its chunks
    run, and ends when they do.
    """


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

    def check_cancelled(self, *, fresh: bool = False) -> None:
        """Raise :class:`JobCancelled` if a user asked to cancel this job.

        Also raises when the row is no longer this attempt's (reaped as lost, or
        re-run elsewhere), so a worker that was presumed dead stops working. The
        flag is read at most once per ``min_interval_s``; ``fresh`` reads it now
        (before a step that cannot be undone, such as activating a model).
        """
        if fresh or time.monotonic() - self._last_write >= self.min_interval_s:
            self.beat()
        if self._lost:
            raise JobCancelled("this attempt no longer owns the job (reaped or re-run)")
        if self._cancel_requested:
            raise JobCancelled("cancelled on request")

    def discard_pending(self) -> None:
        """Forget progress not yet written (the row's progress now belongs to others)."""
        with self._lock:
            self._pending = None

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
