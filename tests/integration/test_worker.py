"""A real huey consumer in a subprocess (``python -m loupe.jobs.worker``).

Runs once with the default SqliteHuey queue in LOUPE_HOME and once with
RedisHuey (marker ``redis``) on Redis database 15 under a queue name of its own,
whose keys it deletes afterwards (never FLUSHALL / FLUSHDB).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loupe.jobs import core as jobs
from loupe.jobs import runner as job_runner

REDIS_URL = os.environ.get("LOUPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TIMEOUT_S = 30.0


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
        get_huey(s).storage.flush_all()  # this queue name's keys only


@pytest.fixture
def start_worker(queue_settings: Any, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    procs: list[subprocess.Popen[bytes]] = []

    def _start() -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"worker-{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "loupe.jobs.worker"],
            env=dict(os.environ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        log.close()
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(
    settings: Any, job_id: int, done: Callable[[Any], bool], what: str, log_dir: Path
) -> Any:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        job = jobs.fetch_job(settings, job_id)
        if done(job):
            return job
        time.sleep(0.05)
    logs = "\n".join(p.read_text() for p in sorted(log_dir.glob("worker-*.log")))
    pytest.fail(f"job {job_id} not {what} after {TIMEOUT_S}s: {job.status}\n{logs}")


def test_worker_runs_a_job(
    queue_settings: Any, start_worker: Any, make_user: Any, tmp_path: Path
) -> None:
    user = make_user()
    start_worker()
    job = jobs.submit(
        queue_settings,
        kind="selftest",
        project_id=None,
        params={"steps": 4, "seconds": 0.05},
        user_id=user.id,
    )
    assert job.status == "queued"
    job = _wait_for(queue_settings, job.id, lambda j: j.status == "done", "done", tmp_path)
    assert job.progress == 1.0 and job.attempts == 1 and job.error is None
    assert job.result["steps"] == 4
    assert job.worker != job_runner.worker_name()  # ran in the worker process


@pytest.mark.slow
def test_killed_worker_is_reaped_and_the_job_retried(
    queue_settings: Any, start_worker: Any, make_user: Any, tmp_path: Path
) -> None:
    user = make_user()
    first = start_worker()
    job = jobs.submit(
        queue_settings,
        kind="selftest",
        project_id=None,
        params={"steps": 30, "seconds": 0.1},
        user_id=user.id,
    )
    _wait_for(
        queue_settings,
        job.id,
        lambda j: j.status == "running" and j.progress > 0,
        "running",
        tmp_path,
    )
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert jobs.fetch_job(queue_settings, job.id).status == "running"
    # The heartbeat (every 0.2 s) was fresh when the worker died: not stale yet.
    assert job_runner.reap_stale_jobs(queue_settings, stale_after_s=1.5) == []

    deadline = time.monotonic() + TIMEOUT_S
    reaped: list[int] = []
    while not reaped and time.monotonic() < deadline:
        time.sleep(0.2)
        reaped = job_runner.reap_stale_jobs(queue_settings, stale_after_s=1.5)
    assert reaped == [job.id]
    lost = jobs.fetch_job(queue_settings, job.id)
    assert lost.status == "failed"
    assert lost.error == "worker lost (killed or crashed) while running; retry it"
    assert 0 < lost.progress < 1

    second = start_worker()
    assert jobs.retry_job(queue_settings, job.id, user.id).status in ("queued", "running")
    done = _wait_for(queue_settings, job.id, lambda j: j.status == "done", "done", tmp_path)
    assert done.attempts == 2 and done.error is None and done.progress == 1.0
    assert done.worker.endswith(f":{second.pid}")


def test_embedded_consumer_runs_jobs_and_fails_leftovers_on_stop(
    queue_settings: Any, make_user: Any, tmp_path: Path
) -> None:
    from loupe.jobs.worker import start_embedded_consumer

    user = make_user()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = start_embedded_consumer(queue_settings, workers=2, shutdown_timeout_s=0.5)
    try:
        # Signals stay with the host (uvicorn in `loupe serve`).
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
        quick = jobs.submit(
            queue_settings,
            kind="selftest",
            project_id=None,
            params={"steps": 2, "seconds": 0.05},
            user_id=user.id,
        )
        job = _wait_for(queue_settings, quick.id, lambda j: j.status == "done", "done", tmp_path)
        assert job.worker == job_runner.worker_name()  # ran in this process
        slow = jobs.submit(
            queue_settings,
            kind="selftest",
            project_id=None,
            params={"steps": 200, "seconds": 0.05},
            user_id=user.id,
        )
        _wait_for(queue_settings, slow.id, lambda j: j.status == "running", "running", tmp_path)
    finally:
        stop()
    left = jobs.fetch_job(queue_settings, slow.id)
    assert left.status == "failed"
    assert left.error == "server stopped while running; retry it"
    # Its thread notices at its next progress write and stops without overwriting that.
    time.sleep(0.5)
    assert jobs.fetch_job(queue_settings, slow.id).status == "failed"
