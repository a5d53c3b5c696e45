"""The job service without HTTP: jobs run inline (LOUPE_JOBS_IMMEDIATE=1)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from loupe.db.models import Job, JobStatus
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs import core as jobs
from loupe.jobs import registry
from loupe.jobs import runner as job_runner
from loupe.jobs.context import JobCancelled, JobContext


@pytest.fixture
def kinds() -> Iterator[None]:
    """Test-only job kinds, removed afterwards."""

    def echo(_s: Any, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
        ctx.progress(0.5, "half way")
        return {"echo": params}

    def boom(_s: Any, _ctx: JobContext, params: dict[str, Any]) -> None:
        raise LoupeError(ErrorCode.INVALID, f"threshold must be positive, got {params['t']}")

    def zombie(settings: Any, ctx: JobContext, _params: dict[str, Any]) -> dict[str, Any]:
        # What a reaper does to a worker it presumes dead, while the job still runs.
        with session_scope(settings.db_url) as db:
            job = db.get(Job, ctx.job_id)
            assert job is not None
            job.status, job.error = JobStatus.failed.value, job_runner.WORKER_LOST
        return {"late": True}

    for name, fn in {"test.echo": echo, "test.boom": boom, "test.zombie": zombie}.items():
        registry.register_job_kind(name)(fn)
    yield
    for name in ("test.echo", "test.boom", "test.zombie"):
        registry.JOB_KINDS.pop(name, None)


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user()


@pytest.fixture
def project(make_project: Any, owner: Any) -> Any:
    return make_project(owner)


def _create(settings: Any, **kw: Any) -> int:
    """A committed, queued, not enqueued job."""
    with session_scope(settings.db_url) as db:
        return jobs.create_job(db, **kw).id


def test_run_job_marks_done_with_result(settings: Any, kinds: None, owner: Any, project: Any):
    job = jobs.submit(
        settings, kind="test.echo", project_id=project.id, params={"a": 1}, user_id=owner.id
    )
    assert job.status == "done"
    assert job.progress == 1.0
    assert job.result == {"echo": {"a": 1}}
    assert job.error is None
    assert job.attempts == 1
    assert job.started_at is not None and job.finished_at is not None
    assert job.finished_at >= job.started_at
    assert job.worker and ":" in job.worker
    assert job.created_by == owner.id


def test_selftest_reports_progress_and_result(settings: Any, owner: Any):
    job = jobs.submit(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 3, "seconds": 0},
        user_id=owner.id,
    )
    assert (job.status, job.progress, job.message) == ("done", 1.0, "step 3/3")
    assert job.result is not None and job.result["steps"] == 3


def test_failing_job_ends_failed_with_message(settings: Any, owner: Any):
    job = jobs.submit(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 3, "seconds": 0, "fail_at": 1},
        user_id=owner.id,
    )
    assert job.status == "failed"
    assert job.error == "RuntimeError: selftest failed at step 1 as asked (fail_at=1)"
    assert job.progress == pytest.approx(1 / 3)  # the last progress before the failure
    assert job.result is None


def test_loupe_error_message_is_the_job_error(settings: Any, kinds: None, project: Any):
    job = jobs.submit(
        settings, kind="test.boom", project_id=project.id, params={"t": -1}, user_id=None
    )
    assert job.status == "failed"
    assert job.error == "threshold must be positive, got -1"


def test_unknown_kind_is_invalid(settings: Any, db: Any):
    with pytest.raises(LoupeError) as info:
        jobs.create_job(db, kind="nope", project_id=None, params={}, user_id=None)
    assert info.value.code == ErrorCode.INVALID
    assert "nope" in info.value.message


def test_unknown_project_is_not_found(settings: Any, db: Any):
    with pytest.raises(LoupeError) as info:
        jobs.create_job(db, kind="selftest", project_id=999999, params={}, user_id=None)
    assert info.value.code == ErrorCode.NOT_FOUND


def test_exclusive_submit_is_busy_while_one_is_queued(
    settings: Any, kinds: None, project: Any, make_project: Any, owner: Any
):
    first = _create(settings, kind="test.echo", project_id=project.id, params={}, user_id=None)
    with pytest.raises(LoupeError) as info:
        jobs.submit(
            settings,
            kind="test.echo",
            project_id=project.id,
            params={},
            user_id=None,
            exclusive=True,
        )
    assert info.value.code == ErrorCode.BUSY and info.value.http_status == 409
    assert info.value.extra["job_id"] == first
    assert f"#{first}" in info.value.message
    # Not exclusive, another kind, or another project: accepted.
    assert (
        jobs.submit(
            settings, kind="test.echo", project_id=project.id, params={}, user_id=None
        ).status
        == "done"
    )
    other = make_project(owner)
    assert (
        jobs.submit(
            settings, kind="test.echo", project_id=other.id, params={}, user_id=None, exclusive=True
        ).status
        == "done"
    )
    # Once the first one has finished, an exclusive job is accepted.
    assert job_runner.run_job(settings, first) == "done"
    assert (
        jobs.submit(
            settings,
            kind="test.echo",
            project_id=project.id,
            params={},
            user_id=None,
            exclusive=True,
        ).status
        == "done"
    )


def test_exclusive_create_is_race_safe(settings: Any, kinds: None, project: Any):
    """A second transaction that checks while the first has not committed yet waits for it."""
    created = threading.Event()
    outcome: dict[str, Any] = {}

    def first() -> None:
        with session_scope(settings.db_url) as db:
            jobs.create_job(
                db,
                kind="test.echo",
                project_id=project.id,
                params={},
                user_id=None,
                exclusive=True,
            )
            created.set()
            time.sleep(0.5)  # the second transaction checks now

    def second() -> None:
        created.wait(5)
        try:
            with session_scope(settings.db_url) as db:
                jobs.create_job(
                    db,
                    kind="test.echo",
                    project_id=project.id,
                    params={},
                    user_id=None,
                    exclusive=True,
                )
            outcome["second"] = "created"
        except LoupeError as exc:
            outcome["second"] = exc.code

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert outcome["second"] == ErrorCode.BUSY


def test_reap_stale_job_then_retry_runs_it_to_done(settings: Any, db: Any, owner: Any):
    stale = _create(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 2, "seconds": 0},
        user_id=owner.id,
    )
    fresh = _create(settings, kind="selftest", project_id=None, params={}, user_id=owner.id)
    long_ago = utcnow() - dt.timedelta(seconds=120)
    with session_scope(settings.db_url) as s:
        for job_id, beat in ((stale, long_ago), (fresh, utcnow())):
            job = s.get(Job, job_id)
            job.status, job.attempts, job.worker = "running", 1, "elsewhere:1"
            job.started_at, job.heartbeat_at, job.progress = long_ago, beat, 0.5

    assert job_runner.reap_stale_jobs(settings, stale_after_s=60) == [stale]
    reaped = jobs.fetch_job(settings, stale)
    assert reaped.status == "failed"
    assert reaped.error == "worker lost (killed or crashed) while running; retry it"
    assert reaped.finished_at is not None
    assert jobs.fetch_job(settings, fresh).status == "running"
    assert job_runner.reap_stale_jobs(settings, stale_after_s=60) == []

    retried = jobs.retry_job(settings, stale, owner.id)
    assert retried.id == stale
    assert retried.status == "done"
    assert retried.error is None
    assert retried.attempts == 2
    assert retried.progress == 1.0


def test_retry_refuses_running_and_done(settings: Any, owner: Any):
    done = jobs.submit(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 1, "seconds": 0},
        user_id=owner.id,
    )
    with pytest.raises(LoupeError) as info:
        jobs.retry_job(settings, done.id, owner.id)
    assert info.value.code == ErrorCode.CONFLICT
    with pytest.raises(LoupeError) as info:
        jobs.retry_job(settings, 999999, owner.id)
    assert info.value.code == ErrorCode.NOT_FOUND


def test_retry_of_a_queued_job_reenqueues_it(settings: Any, owner: Any):
    """A queued job whose queue message was lost runs when retried."""
    job_id = _create(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 1, "seconds": 0},
        user_id=owner.id,
    )
    assert jobs.retry_job(settings, job_id, owner.id).status == "done"


def test_cancel_queued_job_and_its_message_is_a_no_op(settings: Any, owner: Any):
    job_id = _create(settings, kind="selftest", project_id=None, params={}, user_id=owner.id)
    with session_scope(settings.db_url) as db:
        assert jobs.cancel_job(db, job_id, user_id=owner.id).status == "cancelled"
    assert job_runner.run_job(settings, job_id) is None  # the queue message arrives late
    job = jobs.fetch_job(settings, job_id)
    assert job.status == "cancelled" and job.attempts == 0 and job.finished_at is not None
    with session_scope(settings.db_url) as db:  # idempotent
        assert jobs.cancel_job(db, job_id, user_id=owner.id).status == "cancelled"
    assert jobs.retry_job(settings, job_id, owner.id).status == "done"


def test_cancel_running_job(settings: Any, owner: Any):
    job_id = _create(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 400, "seconds": 0.02},
        user_id=owner.id,
    )
    runner = threading.Thread(target=job_runner.run_job, args=(settings, job_id))
    runner.start()
    deadline = time.monotonic() + 10
    while jobs.fetch_job(settings, job_id).progress == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    with session_scope(settings.db_url) as db:
        requested = jobs.cancel_job(db, job_id, user_id=owner.id)
        assert (requested.status, requested.cancel_requested) == ("running", True)
        assert requested.result is None  # the request lives in its own column
    runner.join(10)
    assert not runner.is_alive()
    job = jobs.fetch_job(settings, job_id)
    assert job.status == "cancelled"
    assert 0 < job.progress < 1
    assert job.finished_at is not None
    # A retry clears the request, so the job runs to the end this time.
    with session_scope(settings.db_url) as db:
        db.get(Job, job_id).params = {"steps": 2, "seconds": 0}
    retried = jobs.retry_job(settings, job_id, owner.id)
    assert (retried.status, retried.cancel_requested, retried.attempts) == ("done", False, 2)
    done = jobs.submit(
        settings,
        kind="selftest",
        project_id=None,
        params={"steps": 1, "seconds": 0},
        user_id=None,
    )
    with session_scope(settings.db_url) as db, pytest.raises(LoupeError) as info:
        jobs.cancel_job(db, done.id, user_id=owner.id)
    assert info.value.code == ErrorCode.CONFLICT


def test_outcome_of_a_reaped_attempt_is_discarded(settings: Any, kinds: None):
    job_id = _create(settings, kind="test.zombie", project_id=None, params={}, user_id=None)
    assert job_runner.run_job(settings, job_id) is None
    job = jobs.fetch_job(settings, job_id)
    assert (job.status, job.error, job.result) == ("failed", job_runner.WORKER_LOST, None)


def test_progress_writes_are_throttled(settings: Any, db: Any):
    job_id = _create(settings, kind="selftest", project_id=None, params={}, user_id=None)
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        job.status, job.attempts = "running", 1
    ctx = JobContext(settings, job_id, attempt=1, min_interval_s=10)
    for i in range(1, 101):
        ctx.progress(i / 100, f"{i}%")
    assert jobs.fetch_job(settings, job_id).message == "1%"  # only the first was written
    assert ctx.pending() == (1.0, "100%")
    ctx.beat()  # the heartbeat writes what the throttle held back
    job = jobs.fetch_job(settings, job_id)
    assert (job.progress, job.message) == (1.0, "100%")
    assert job.heartbeat_at is not None
    ctx.check_cancelled()  # no request: returns


def test_a_fresh_cancel_check_reads_the_request_inside_the_throttle(settings: Any, owner: Any):
    """Before an irreversible step (activating a model) a job reads the flag now: a Stop
    pressed between two throttled checks still wins."""
    job_id = _create(settings, kind="selftest", project_id=None, params={}, user_id=None)
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        job.status, job.attempts = "running", 1
    ctx = JobContext(settings, job_id, attempt=1, min_interval_s=10)
    ctx.progress(0.5, "half")  # the first write: the next check inside 10 s is throttled
    with session_scope(settings.db_url) as db:
        jobs.cancel_job(db, job_id, user_id=owner.id)
    ctx.check_cancelled()  # throttled: the request is not seen yet
    with pytest.raises(JobCancelled):
        ctx.check_cancelled(fresh=True)


def test_stale_job_with_a_cancel_request_is_reaped_as_cancelled(settings: Any, owner: Any):
    job_id = _create(settings, kind="selftest", project_id=None, params={}, user_id=owner.id)
    long_ago = utcnow() - dt.timedelta(seconds=120)
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        job.status, job.attempts, job.worker = "running", 1, "elsewhere:1"
        job.started_at = job.heartbeat_at = long_ago
    with session_scope(settings.db_url) as s:
        jobs.cancel_job(s, job_id, user_id=owner.id)
    assert job_runner.reap_stale_jobs(settings, stale_after_s=60) == [job_id]
    job = jobs.fetch_job(settings, job_id)
    assert (job.status, job.error, job.message) == ("cancelled", None, "cancelled")


def test_plugins_register_the_built_in_kinds_with_their_queues():
    from loupe.jobs import selftest
    from loupe.plugins import load_plugins

    load_plugins()
    load_plugins()  # idempotent
    kinds = {k["name"]: k for k in registry.describe_job_kinds()}
    assert {"selftest", "ingest", "train", "export"} <= set(kinds)
    assert kinds["selftest"] == {"name": "selftest", "queue": "cpu", "exclusive": False}
    assert kinds["train"]["exclusive"] is True
    assert {k["queue"] for k in kinds.values()} <= set(registry.QUEUES)
    assert list(kinds) == sorted(kinds)
    assert registry.get_job_kind("selftest").fn is selftest.selftest
    with pytest.raises(LoupeError, match="unknown job kind 'nope'") as err:
        registry.get_job_kind("nope")
    assert err.value.code == ErrorCode.INVALID


def test_a_kind_declares_a_known_queue():
    def fn(_s: Any, _c: JobContext, _p: dict[str, Any]) -> None:
        return None

    with pytest.raises(ValueError, match="queue must be one of"):
        registry.register_job_kind("test.tpu", queue="tpu")(fn)
    assert "test.tpu" not in registry.JOB_KINDS


def test_heartbeat_interval_and_queue_name_come_from_settings(settings: Any):
    from loupe.jobs.queue import get_huey

    other = settings.model_copy(update={"job_heartbeat_s": 0.5, "queue_name": "loupe_other"})
    assert job_runner.heartbeat_interval(settings) == settings.job_heartbeat_s
    assert job_runner.heartbeat_interval(other) == 0.5
    assert get_huey(other, immediate=True).name == "loupe_other"
    assert get_huey(other, "gpu", immediate=True).name == "loupe_other-gpu"


def test_register_job_kind_refuses_a_second_function_for_a_name():
    import loupe.jobs.selftest  # noqa: F401  (registers selftest)

    def other(_s: Any, _c: JobContext, _p: dict[str, Any]) -> None:
        return None

    with pytest.raises(ValueError, match="selftest"):
        registry.register_job_kind("selftest")(other)


def test_an_unreachable_queue_fails_the_job_with_503_not_queued_for_ever(
    settings: Any, project: Any, owner: Any, kinds: None
) -> None:
    # A Redis URL nothing listens on (port 1): the row must not stay 'queued'.
    down = settings.model_copy(
        update={"queue_url": "redis://127.0.0.1:1/0", "jobs_immediate": False}
    )
    with pytest.raises(LoupeError) as caught:
        jobs.submit(down, kind="test.echo", project_id=project.id, params={}, user_id=owner.id)
    assert caught.value.code == ErrorCode.UNAVAILABLE
    job_id = caught.value.extra["job_id"]
    with session_scope(settings.db_url) as db:
        job = db.get(Job, job_id)
        assert job is not None
        assert job.status == JobStatus.failed.value and "unreachable" in (job.error or "")
