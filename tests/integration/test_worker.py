"""Real huey consumers in subprocesses (``loupe worker``), queue routing, and the
worker child process of ``loupe serve``.

Runs once with the default SqliteHuey queue in LOUPE_HOME and once with
RedisHuey (marker ``redis``): ``queue_settings`` in tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.worker_helpers import Workers, wait_for_job, worker_script

from loupe.jobs import core as jobs
from loupe.jobs import runner as job_runner
from loupe.jobs.context import JobContext
from loupe.jobs.registry import JOB_KINDS, register_job_kind

TIMEOUT_S = 30.0
GPU_KIND = "test.gpu_echo"
# `loupe worker ARGS...` in a process that also knows the test-only gpu kind.
WORKER_SCRIPT = worker_script(
    f"""
from loupe.jobs.registry import register_job_kind

@register_job_kind({GPU_KIND!r}, queue="gpu")
def gpu_echo(settings, ctx, params):
    return {{"echo": params}}
"""
)


@pytest.fixture
def gpu_kind() -> Iterator[str]:
    """A test-only job kind on the gpu queue (the worker script registers it too)."""

    def gpu_echo(_s: Any, _ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"echo": params}

    register_job_kind(GPU_KIND, queue="gpu")(gpu_echo)
    yield GPU_KIND
    JOB_KINDS.pop(GPU_KIND, None)


@pytest.fixture
def start_worker(workers: Workers) -> Callable[..., subprocess.Popen[bytes]]:
    """``start_worker(*args)``: a ``loupe worker ARGS...`` that knows the gpu kind."""
    return lambda *args: workers.start(WORKER_SCRIPT, *args)


def _wait_for(
    settings: Any, job_id: int, done: Callable[[Any], bool], what: str, log_dir: Path
) -> Any:
    return wait_for_job(settings, job_id, done, what=what, timeout_s=TIMEOUT_S, log_dir=log_dir)


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


def test_a_gpu_job_waits_for_a_gpu_worker(
    queue_settings: Any, start_worker: Any, make_user: Any, gpu_kind: str, tmp_path: Path
) -> None:
    from loupe.jobs.queue import get_huey

    user = make_user()
    start_worker()  # the default queue: cpu
    gpu_job = jobs.submit(
        queue_settings, kind=gpu_kind, project_id=None, params={"n": 1}, user_id=user.id
    )
    cpu_job = jobs.submit(
        queue_settings, kind="selftest", project_id=None, params={"steps": 1}, user_id=user.id
    )
    _wait_for(queue_settings, cpu_job.id, lambda j: j.status == "done", "done", tmp_path)
    time.sleep(1.0)  # the cpu worker polls every 0.5 s at most: it had its chances
    assert jobs.fetch_job(queue_settings, gpu_job.id).status == "queued"
    assert get_huey(queue_settings, "gpu", immediate=False).pending_count() == 1
    assert get_huey(queue_settings, "cpu", immediate=False).pending_count() == 0

    gpu_worker = start_worker("--queue", "gpu")
    done = _wait_for(queue_settings, gpu_job.id, lambda j: j.status == "done", "done", tmp_path)
    assert done.result == {"echo": {"n": 1}}
    assert done.worker.endswith(f":{gpu_worker.pid}")


def test_one_worker_can_consume_several_queues(
    queue_settings: Any, start_worker: Any, make_user: Any, gpu_kind: str, tmp_path: Path
) -> None:
    user = make_user()
    proc = start_worker("--queue", "cpu", "--queue", "gpu")
    ids = [
        jobs.submit(queue_settings, kind=kind, project_id=None, params={}, user_id=user.id).id
        for kind in (gpu_kind, "selftest")
    ]
    for job_id in ids:
        job = _wait_for(queue_settings, job_id, lambda j: j.status == "done", "done", tmp_path)
        assert job.worker.endswith(f":{proc.pid}")


def test_unknown_queue_is_refused(queue_settings: Any) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "loupe.cli", "worker", "--queue", "tpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "unknown queue" in r.stderr


def _nice(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_serve_worker_process_runs_jobs_at_lower_priority_and_stops(
    queue_settings: Any, make_user: Any, tmp_path: Path
) -> None:
    """The child that `loupe serve` starts: nice +10, restarted when it dies,
    and on stop the jobs it still runs are marked failed."""
    from loupe.cli import WORKER_NICE, _start_worker_process

    user = make_user()
    child = _start_worker_process(2)
    try:
        quick = jobs.submit(
            queue_settings,
            kind="selftest",
            project_id=None,
            params={"steps": 2, "seconds": 0.05},
            user_id=user.id,
        )
        job = _wait_for(queue_settings, quick.id, lambda j: j.status == "done", "done", tmp_path)
        first_pid = child.pid
        assert job.worker.endswith(f":{first_pid}")  # ran in the child, not here
        assert _nice(first_pid) == min(_nice(0) + WORKER_NICE, 19)

        os.kill(first_pid, signal.SIGKILL)  # a crash: the server starts another one
        deadline = time.monotonic() + TIMEOUT_S
        while child.pid == first_pid and time.monotonic() < deadline:
            time.sleep(0.1)
        assert child.pid != first_pid
        slow = jobs.submit(
            queue_settings,
            kind="selftest",
            project_id=None,
            params={"steps": 400, "seconds": 0.05},
            user_id=user.id,
        )
        _wait_for(queue_settings, slow.id, lambda j: j.status == "running", "running", tmp_path)
    finally:
        code = child.stop(timeout_s=10)
    assert code == 0
    left = jobs.fetch_job(queue_settings, slow.id)
    assert left.status == "failed"
    assert left.error == "worker stopped while running; retry it"


PARENT_SCRIPT = """
import sys, time
from loupe.cli import _start_worker_process

child = _start_worker_process(1)
print(child.pid, flush=True)
time.sleep(600)
"""


def test_serve_worker_process_stops_when_the_server_is_killed(queue_settings: Any) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        time.sleep(1.0)  # let it start up (and install its handlers)
        assert not _gone(child_pid)
    finally:
        parent.kill()  # SIGKILL: no chance to stop its child
        parent.wait(10)
    deadline = time.monotonic() + TIMEOUT_S
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child_pid), "the worker outlived its server"
