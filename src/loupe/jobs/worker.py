"""Run huey consumers: ``loupe worker`` (blocking) or embedded in ``loupe serve``.

Both poll fast (first retry after 0.05 s, backing off by 1.1x up to 0.5 s), so
an idle SqliteHuey queue starts a job in about 0.2 s instead of huey's ~1.4 s,
and both reap jobs left ``running`` by a killed worker, at start and then
periodically. Run ``python -m loupe.jobs.worker [--workers N]`` for a worker
configured by ``LOUPE_*`` variables.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from huey.consumer import Consumer

from loupe.jobs.core import load_job_kinds
from loupe.jobs.queue import get_huey
from loupe.jobs.runner import (
    DEFAULT_STALE_AFTER_S,
    fail_worker_jobs,
    reap_stale_jobs,
    worker_name,
)
from loupe.settings import Settings, get_settings

log = logging.getLogger(__name__)

POLLING = {"initial_delay": 0.05, "max_delay": 0.5, "backoff": 1.1}
REAP_EVERY_S = 30.0
HEALTH_CHECK_EVERY_S = 10.0


class _Consumer(Consumer):
    """A huey Consumer that may leave signal handling to its host.

    ``signal.signal`` only works in the main thread, and inside ``loupe serve``
    the signals belong to uvicorn, so the embedded consumer installs none.
    """

    def __init__(self, *args: Any, install_signal_handlers: bool, **kwargs: Any) -> None:
        self._install_signal_handlers = install_signal_handlers
        super().__init__(*args, **kwargs)

    def _set_signal_handlers(self) -> None:
        if self._install_signal_handlers:
            super()._set_signal_handlers()


def _consumer(
    settings: Settings,
    workers: int,
    *,
    install_signal_handlers: bool,
    shutdown_timeout_s: float | None,
) -> _Consumer:
    load_job_kinds()
    return _Consumer(
        get_huey(settings, immediate=False),
        workers=workers,
        worker_type="thread",
        periodic=False,
        shutdown_timeout=shutdown_timeout_s,
        install_signal_handlers=install_signal_handlers,
        **POLLING,
    )


def _housekeeping(
    settings: Settings,
    stop: threading.Event,
    stale_after_s: float,
    consumer: _Consumer | None = None,
) -> threading.Thread:
    """A thread that reaps stale jobs (and restarts dead embedded worker threads)."""

    def loop() -> None:
        last_reap = time.monotonic()
        while not stop.wait(HEALTH_CHECK_EVERY_S):
            try:
                if consumer is not None:
                    consumer.check_worker_health()
                if time.monotonic() - last_reap >= REAP_EVERY_S:
                    last_reap = time.monotonic()
                    reap_stale_jobs(settings, stale_after_s=stale_after_s)
            except Exception:
                log.exception("job housekeeping failed; trying again later")

    thread = threading.Thread(target=loop, name="loupe-jobs-housekeeping", daemon=True)
    thread.start()
    return thread


def run_worker(
    settings: Settings, *, workers: int = 1, stale_after_s: float = DEFAULT_STALE_AFTER_S
) -> None:
    """Run a consumer with ``workers`` threads; blocks until it is stopped.

    SIGINT stops gracefully (running jobs finish; a second SIGINT stops at
    once), SIGTERM at once. Jobs still running then are marked failed.
    """
    consumer = _consumer(
        settings,
        workers,
        install_signal_handlers=threading.current_thread() is threading.main_thread(),
        shutdown_timeout_s=None,
    )
    reap_stale_jobs(settings, stale_after_s=stale_after_s)
    stop = threading.Event()
    _housekeeping(settings, stop, stale_after_s)
    log.info("loupe worker %s: %d thread(s)", worker_name(), workers)
    try:
        consumer.run()
    finally:
        stop.set()
        fail_worker_jobs(settings, worker_name(), "worker stopped while running; retry it")


def start_embedded_consumer(
    settings: Settings,
    *,
    workers: int | None = None,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    shutdown_timeout_s: float = 5.0,
) -> Callable[[], None]:
    """Start a consumer in background threads of this process; return ``stop()``.

    For ``loupe serve``: ``workers`` threads (default ``settings.worker_threads``),
    no signal handlers (they belong to uvicorn). With ``settings.jobs_immediate``
    jobs run inline and nothing is started. ``stop()`` waits up to
    ``shutdown_timeout_s`` for running jobs, then marks those still running as
    failed (their threads die with the process).
    """
    if settings.jobs_immediate:
        return lambda: None
    consumer = _consumer(
        settings,
        workers or settings.worker_threads,
        install_signal_handlers=False,
        shutdown_timeout_s=shutdown_timeout_s,
    )
    reap_stale_jobs(settings, stale_after_s=stale_after_s)
    consumer.start()
    stop_housekeeping = threading.Event()
    _housekeeping(settings, stop_housekeeping, stale_after_s, consumer)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        stop_housekeeping.set()
        consumer.stop(graceful=True)
        fail_worker_jobs(settings, worker_name(), "server stopped while running; retry it")

    return stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a Loupe job worker (huey consumer).")
    parser.add_argument("--workers", type=int, default=None, help="threads (LOUPE_WORKER_THREADS)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    run_worker(settings, workers=args.workers or settings.worker_threads)


if __name__ == "__main__":
    main()
