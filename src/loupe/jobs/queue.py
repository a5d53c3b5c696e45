"""The huey instances of a deployment, one per queue (``cpu``, ``gpu``).

Why there is no module-level ``huey = SqliteHuey(...)``: huey binds a task to
the instance it is declared on, and a module-level instance would be built
from whatever settings exist at import time (wrong in tests, or for a worker
started with other settings). Instead :func:`get_queue` builds one instance per
deployment and queue (queue URL, home, queue name, database, immediate mode),
declares the tasks on it with :func:`loupe.jobs.tasks.register_tasks` and
caches it. The API (producer) and ``loupe worker`` (consumer) both go through
it, so the task name in a message ("loupe.jobs.tasks.run_job") resolves on
both sides, and a task runs with the settings of the process that executes it.

Storage: ``SqliteHuey`` in ``LOUPE_HOME/queue.db`` by default, ``RedisHuey``
when ``LOUPE_QUEUE_URL=redis://...``. The ``cpu`` queue is named
``settings.queue_name`` (``LOUPE_QUEUE_NAME``, default ``loupe``), every other
queue ``<queue_name>-<queue>`` (``loupe-gpu``), in the same file or Redis.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from huey import Huey, RedisHuey, SqliteHuey

from loupe.jobs.registry import DEFAULT_QUEUE, QUEUES
from loupe.jobs.tasks import Tasks, register_tasks
from loupe.settings import Settings


class Queue(NamedTuple):
    huey: Huey
    tasks: Tasks


_QUEUES: dict[tuple[str | None, str, str, str, bool], Queue] = {}
_LOCK = threading.Lock()


def huey_name(settings: Settings, queue: str = DEFAULT_QUEUE) -> str:
    """The huey (storage) name of ``queue``: ``queue_name`` for cpu, else ``queue_name-queue``.

    The cpu queue keeps the plain name that every queue had before there were
    several, so messages queued by an older version are still consumed.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
    name = settings.queue_name  # distinct names let deployments (or tests) share a Redis
    return name if queue == DEFAULT_QUEUE else f"{name}-{queue}"


def get_queue(
    settings: Settings, queue: str = DEFAULT_QUEUE, *, immediate: bool | None = None
) -> Queue:
    """The cached huey instance of ``queue`` for ``settings``, and its tasks.

    ``immediate`` (default ``settings.jobs_immediate``) runs tasks inline when
    enqueued.
    """
    if immediate is None:
        immediate = settings.jobs_immediate
    name = huey_name(settings, queue)
    home = str(settings.home.resolve())
    key = (settings.queue_url, home, name, settings.db_url, immediate)
    with _LOCK:
        cached = _QUEUES.get(key)
        if cached is None:
            huey = _make_huey(settings, name, immediate)
            cached = Queue(huey, register_tasks(huey, settings))
            _QUEUES[key] = cached
    return cached


def get_huey(
    settings: Settings, queue: str = DEFAULT_QUEUE, *, immediate: bool | None = None
) -> Huey:
    """The huey instance of ``queue`` for ``settings`` (see :func:`get_queue`)."""
    return get_queue(settings, queue, immediate=immediate).huey


def enqueue_job(settings: Settings, job_id: int, queue: str = DEFAULT_QUEUE) -> None:
    """Enqueue the task that runs job ``job_id`` on ``queue`` (inline in immediate mode)."""
    get_queue(settings, queue).tasks.run_job(job_id)


def _make_huey(settings: Settings, name: str, immediate: bool) -> Huey:
    url = settings.queue_url
    # Job results live in the jobs table, so huey stores none.
    if url and url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name, url=url, immediate=immediate, results=False)
    if url:
        raise ValueError(f"LOUPE_QUEUE_URL must be a redis:// URL, got {url!r}")
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(
        name, filename=str(settings.home / "queue.db"), immediate=immediate, results=False
    )
