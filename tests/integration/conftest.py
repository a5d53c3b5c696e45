"""Fixtures for the tests that run real ``loupe worker`` processes: settings whose
jobs go through a real queue, and the workers of one test.

``queue_settings`` runs once with the default SqliteHuey queue in LOUPE_HOME and once
with RedisHuey (marker ``redis``) on Redis database 15 under a queue name of its own,
whose keys it deletes afterwards (never FLUSHALL / FLUSHDB). A test module may
parametrize it (indirectly) with ``"sqlite-queue"`` / ``"redis-queue"`` itself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.worker_helpers import Workers

from loupe.jobs.registry import QUEUES

REDIS_URL = os.environ.get("LOUPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(params=["sqlite-queue", pytest.param("redis-queue", marks=pytest.mark.redis)])
def queue_settings(
    request: pytest.FixtureRequest, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Settings of the test and of its workers: jobs go through a real queue."""
    from loupe.jobs.queue import get_huey
    from loupe.settings import Settings, get_settings

    monkeypatch.delenv("LOUPE_JOBS_IMMEDIATE")
    monkeypatch.setenv("LOUPE_JOB_HEARTBEAT_S", "0.2")
    if request.param == "redis-queue":
        monkeypatch.setenv("LOUPE_QUEUE_URL", REDIS_URL)
        monkeypatch.setenv("LOUPE_QUEUE_NAME", f"loupe_test_{uuid.uuid4().hex[:12]}")
    get_settings.cache_clear()
    s = Settings()
    assert not s.jobs_immediate
    yield s
    if s.queue_url:
        for queue in QUEUES:
            get_huey(s, queue).storage.flush_all()  # this queue name's keys only


@pytest.fixture
def workers(queue_settings: Any, tmp_path: Path) -> Iterator[Workers]:
    """The ``loupe worker`` processes of the test (``workers.start(script, *args)``),
    logging into ``tmp_path``; those still running at its end get SIGTERM."""
    procs = Workers(tmp_path)
    yield procs
    procs.stop()
