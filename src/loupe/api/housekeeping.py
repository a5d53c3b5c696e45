"""Background chores of the web process, started and stopped with the app.

The reaper: a worker killed mid-job stops beating; every
``LOUPE_JOB_REAP_EVERY_S`` the web process marks jobs whose heartbeat is older
than ``LOUPE_JOB_STALE_AFTER_S`` as failed (and their model versions too),
so a killed job ends within ``stale_after + reap_every`` seconds even when no
worker is left to notice. Workers reap too (on start and periodically); the
conditional UPDATE makes running it from several processes harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.concurrency import run_in_threadpool

from loupe.settings import Settings

log = logging.getLogger(__name__)


async def _reap_forever(settings: Settings) -> None:
    from loupe.jobs.runner import reap_stale_jobs

    while True:
        try:
            await run_in_threadpool(
                reap_stale_jobs, settings, stale_after_s=settings.job_stale_after_s
            )
        except Exception:  # a busy database: try again next round
            log.warning("reaping stale jobs failed; trying again later", exc_info=True)
        await asyncio.sleep(settings.job_reap_every_s)


@contextlib.asynccontextmanager
async def housekeeping(settings: Settings) -> AsyncIterator[None]:
    """Run the reaper while the app serves (``job_reap_every_s <= 0`` turns it off)."""
    task = (
        asyncio.create_task(_reap_forever(settings), name="loupe-reaper")
        if settings.job_reap_every_s > 0
        else None
    )
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
