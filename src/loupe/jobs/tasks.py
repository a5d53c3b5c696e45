"""The huey task: a thin wrapper around :func:`loupe.jobs.runner.run_job`.

Tasks are not declared on a module-level huey instance; ``loupe.jobs.queue``
calls :func:`register_tasks` on each instance it builds (see its docstring).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from huey import Huey

from loupe.jobs import runner as job_runner
from loupe.settings import Settings


class Tasks(NamedTuple):
    """The task wrappers registered on one huey instance; call one to enqueue it."""

    run_job: Any


def register_tasks(huey: Huey, settings: Settings) -> Tasks:
    """Declare Loupe's tasks on ``huey``; they run with ``settings``."""

    # Named "loupe.jobs.tasks.run_job" in messages. Never retried by huey:
    # run_job records a failure in the row, and retry_job re-runs it.
    @huey.task(retries=0)
    def run_job(job_id: int) -> None:
        job_runner.run_job(settings, job_id)

    return Tasks(run_job=run_job)
