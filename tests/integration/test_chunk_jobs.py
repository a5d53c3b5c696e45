"""Chunk jobs run by two real ``loupe worker`` processes: chunks of one parent
run at the same time in both, a big ingest is split and summed, cancelling the
parent stops running chunks.

Two set-ups (worker start-up dominates the time, so not all four pairs): the
embedded default (SQLite + SqliteHuey) and the server one (PostgreSQL, marker
``postgres``, + RedisHuey, marker ``redis``: ``queue_settings`` in
tests/integration/conftest.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from tests.integration.worker_helpers import Workers, wait_for_job, worker_script

from loupe.db.models import Item, Job
from loupe.db.session import session_scope
from loupe.jobs import chunks
from loupe.jobs import core as jobs
from loupe.jobs.registry import JOB_KINDS

TIMEOUT_S = 40.0
MEET, SPIN = "test.meet", "test.spin"

# Test-only chunked kinds; the workers declare them too (same code, run by exec).
KINDS = f"""
import os, time
from pathlib import Path
from loupe.jobs.chunks import register_chunked_kind

def plan(settings, ctx, params):
    return [{{"dir": params["dir"]}} for _ in range(int(params["n"]))]

def meet(settings, ctx, params):
    # Wait (bounded) until every chunk has started: only parallel workers get there.
    folder = Path(params["dir"])
    (folder / str(params["_index"])).write_text(str(os.getpid()))
    deadline = time.monotonic() + 15
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.05)
    return {{"pid": os.getpid(), "met": len(list(folder.iterdir())) >= 2}}

def spin(settings, ctx, params):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        ctx.progress(0.5, "spinning")
        time.sleep(0.05)
    return {{"pid": os.getpid()}}

def finish(settings, ctx, params, results):
    pids = sorted({{r["pid"] for r in results}})
    return {{"pids": pids, "met": all(r.get("met") for r in results)}}

register_chunked_kind({MEET!r}, plan=plan, chunk=meet, finalize=finish)
register_chunked_kind({SPIN!r}, plan=plan, chunk=spin, finalize=finish)
"""
WORKER_SCRIPT = worker_script(KINDS)


@pytest.fixture
def test_kinds() -> Iterator[None]:
    exec(compile(KINDS, "test_chunk_kinds", "exec"), {})
    yield
    for name in (MEET, SPIN):
        JOB_KINDS.pop(name, None)
        JOB_KINDS.pop(chunks.chunk_kind_name(name), None)


SETUPS = pytest.mark.parametrize(
    ("db_url", "queue_settings"),
    [
        ("sqlite", "sqlite-queue"),
        pytest.param("postgres", "redis-queue", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ],
    indirect=True,
)


@pytest.fixture
def two_workers(workers: Workers) -> Iterator[list[int]]:
    """Two ``loupe worker`` processes, one thread each; yields their pids."""
    procs = [workers.start(WORKER_SCRIPT) for _ in range(2)]
    yield [p.pid for p in procs]
    workers.stop(graceful=False)  # every job has ended: nothing to wind down gracefully


def _wait_for(settings: Any, job_id: int, done: Callable[[Any], bool], tmp_path: Path) -> Any:
    return wait_for_job(
        settings, job_id, done, what="finished", timeout_s=TIMEOUT_S, log_dir=tmp_path
    )


def _children(settings: Any, parent_id: int) -> list[Job]:
    with session_scope(settings.db_url, write=False) as db:
        ids = chunks.children_of(db, jobs.get_job(db, parent_id))
        rows = list(db.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))
        db.expunge_all()
    return rows


@SETUPS
def test_two_workers_run_ingest_and_cancel_chunks(
    queue_settings: Any,
    two_workers: list[int],
    test_kinds: None,
    make_project: Any,
    make_user: Any,
    tmp_path: Path,
) -> None:
    s = queue_settings
    project = make_project(make_user())
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    job = jobs.submit(
        s, kind=MEET, project_id=project.id, params={"n": 2, "dir": str(meeting)}, user_id=None
    )
    job = _wait_for(s, job.id, lambda j: j.status in ("done", "failed"), tmp_path)
    assert job.status == "done", job.error
    assert job.result["met"] is True  # both chunks were running at the same time
    assert job.result["pids"] == sorted(two_workers)
    assert {c.worker.rsplit(":", 1)[1] for c in _children(s, job.id)} == {
        str(p) for p in two_workers
    }

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(24):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"img_{k:02d}.png"
        )
    ingest = jobs.submit(
        s,
        kind="ingest",
        project_id=project.id,
        params={"project_id": project.id, "paths": [str(folder)], "chunk_size": 6},
        user_id=None,
    )
    ingest = _wait_for(s, ingest.id, lambda j: j.status in ("done", "failed"), tmp_path)
    assert ingest.status == "done", ingest.error
    assert ingest.result == {"imported": 24, "existing": 0, "failed": [], "chunks": 4}
    assert ingest.progress == 1.0
    with session_scope(s.db_url, write=False) as db:
        n = db.scalar(select(func.count(Item.id)).where(Item.project_id == project.id))
    assert n == 24

    # Cancelling the parent cancels the queued chunk and stops the running ones.
    job = jobs.submit(
        s, kind=SPIN, project_id=project.id, params={"n": 3, "dir": str(tmp_path)}, user_id=None
    )

    def two_running() -> bool:
        kids = _children(s, job.id) if jobs.fetch_job(s, job.id).params.get("_chunks") else []
        return sum(c.status == "running" for c in kids) == 2

    deadline = time.monotonic() + TIMEOUT_S
    while not two_running():
        assert time.monotonic() < deadline, "two chunks never ran at once"
        time.sleep(0.05)
    with session_scope(s.db_url) as db:
        jobs.cancel_job(db, job.id, user_id=None)
    assert jobs.fetch_job(s, job.id).status == "cancelled"
    deadline = time.monotonic() + TIMEOUT_S
    while any(c.status in ("queued", "running") for c in _children(s, job.id)):
        assert time.monotonic() < deadline, "chunks still running after the cancel"
        time.sleep(0.05)
    assert [c.status for c in _children(s, job.id)] == ["cancelled"] * 3
    assert jobs.fetch_job(s, job.id).status == "cancelled"
