"""Chunk jobs (loupe.jobs.chunks) without a worker process: the parent/child
bookkeeping, cancel and retry, and the chunked ``ingest`` kind.

Most tests run with LOUPE_JOBS_IMMEDIATE=1 (every enqueue runs the job inline);
the cancel and reaper tests use a real SqliteHuey queue that nothing consumes and
run the jobs one by one with ``run_job``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from loupe.db.models import Item, Job, JobStatus
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.jobs import chunks, registry
from loupe.jobs import core as jobs
from loupe.jobs import runner as job_runner
from loupe.jobs.context import JobContext
from loupe.services.items.ingest_files import Source
from loupe.services.items.ingest_plan import plan_chunks

KIND = "test.sum"


def _plan(_s: Any, _ctx: JobContext, params: dict[str, Any]) -> list[dict[str, Any]]:
    numbers = list(range(int(params["n"])))
    size = int(params["size"])
    extra = {"fail_flag": params["fail_flag"]} if "fail_flag" in params else {}
    return [{"numbers": numbers[k : k + size], **extra} for k in range(0, len(numbers), size)]


def _chunk(_s: Any, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    flag = Path(str(params.get("fail_flag", "")))
    ctx.progress(0.5, "adding")
    if params.get("_index") == 1 and flag.name and flag.exists():
        raise ValueError(f"chunk {params['_index']} broke (flag {flag.name})")
    return {"sum": sum(params["numbers"]), "count": len(params["numbers"])}


def _finalize(
    _s: Any, _ctx: JobContext, params: dict[str, Any], results: list[dict[str, Any] | None]
) -> dict[str, Any]:
    assert all(r is not None for r in results)
    return {
        "sum": sum(r["sum"] for r in results if r),
        "count": sum(r["count"] for r in results if r),
        "chunks": len(results),
    }


@pytest.fixture
def sum_kind() -> Iterator[str]:
    chunks.register_chunked_kind(KIND, plan=_plan, chunk=_chunk, finalize=_finalize)
    yield KIND
    registry.JOB_KINDS.pop(KIND, None)
    registry.JOB_KINDS.pop(chunks.chunk_kind_name(KIND), None)


@pytest.fixture
def project(make_project: Any, make_user: Any) -> Any:
    return make_project(make_user())


def _children(settings: Any, parent_id: int) -> list[Job]:
    with session_scope(settings.db_url, write=False) as db:
        parent = jobs.get_job(db, parent_id)
        ids = chunks.children_of(db, parent)
        rows = list(db.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))
        db.expunge_all()
    return rows


def test_parent_splits_into_chunks_and_sums_their_results(
    settings: Any, project: Any, sum_kind: str
) -> None:
    job = jobs.submit(
        settings,
        kind=sum_kind,
        project_id=project.id,
        params={"n": 10, "size": 4},
        user_id=None,
    )
    assert job.status == JobStatus.done.value, job.error
    assert job.result == {"sum": 45, "count": 10, "chunks": 3}
    assert job.progress == 1.0
    children = _children(settings, job.id)
    assert [c.kind for c in children] == [chunks.chunk_kind_name(sum_kind)] * 3
    assert [c.status for c in children] == [JobStatus.done.value] * 3
    assert [c.params["_index"] for c in children] == [0, 1, 2]
    assert {c.params["_parent"] for c in children} == {job.id}
    assert [c.result["count"] for c in children] == [4, 4, 2]
    assert job.attempts == 2  # plan, then finalize


def test_one_chunk_runs_inline_without_children(settings: Any, project: Any, sum_kind: str) -> None:
    job = jobs.submit(
        settings, kind=sum_kind, project_id=project.id, params={"n": 3, "size": 10}, user_id=None
    )
    assert job.status == JobStatus.done.value
    assert job.result == {"sum": 3, "count": 3, "chunks": 1}
    assert "_chunks" not in job.params
    with session_scope(settings.db_url, write=False) as db:
        assert db.scalar(select(func.count(Job.id))) == 1


def test_failed_chunk_fails_parent_and_retry_reruns_only_it(
    settings: Any, project: Any, sum_kind: str, tmp_path: Path
) -> None:
    flag = tmp_path / "fail-now"
    flag.touch()
    params = {"n": 9, "size": 3, "fail_flag": str(flag)}
    job = jobs.submit(settings, kind=sum_kind, project_id=project.id, params=params, user_id=None)
    assert job.status == JobStatus.failed.value
    assert job.error is not None and "1 of 3 chunks failed" in job.error
    assert "chunk 1 broke (flag fail-now)" in job.error
    children = _children(settings, job.id)
    assert [c.status for c in children] == ["done", "failed", "done"]
    assert job.result["chunks"]["failed"] == 1

    flag.unlink()
    retried = jobs.retry_job(settings, job.id, user_id=None)
    assert retried.status == JobStatus.done.value, retried.error
    assert retried.result == {"sum": 36, "count": 9, "chunks": 3}
    assert [c.attempts for c in _children(settings, job.id)] == [1, 2, 1]


def test_retrying_a_failed_chunk_revives_its_parent(
    settings: Any, project: Any, sum_kind: str, tmp_path: Path
) -> None:
    flag = tmp_path / "fail-now"
    flag.touch()
    job = jobs.submit(
        settings,
        kind=sum_kind,
        project_id=project.id,
        params={"n": 6, "size": 2, "fail_flag": str(flag)},
        user_id=None,
    )
    assert job.status == JobStatus.failed.value
    failed = [c for c in _children(settings, job.id) if c.status == "failed"]
    assert len(failed) == 1
    flag.unlink()
    child = jobs.retry_job(settings, failed[0].id, user_id=None)
    assert child.status == JobStatus.done.value
    parent = jobs.fetch_job(settings, job.id)
    assert parent.status == JobStatus.done.value, parent.error
    assert parent.result == {"sum": 15, "count": 6, "chunks": 3}


@pytest.fixture
def queued_settings(settings: Any) -> Any:
    """Jobs go to a real SqliteHuey queue that no consumer reads."""
    return settings.model_copy(update={"jobs_immediate": False})


def test_cancelling_the_parent_cancels_its_chunks(
    queued_settings: Any, project: Any, sum_kind: str
) -> None:
    s = queued_settings
    job = jobs.submit(
        s, kind=sum_kind, project_id=project.id, params={"n": 8, "size": 2}, user_id=None
    )
    assert job.status == JobStatus.queued.value
    assert job_runner.run_job(s, job.id) == JobStatus.running.value  # split, waiting
    parent = jobs.fetch_job(s, job.id)
    assert parent.worker == job_runner.CHUNK_WAIT
    assert parent.result == {"chunks": {"total": 4, "done": 0}}
    first, *rest = _children(s, job.id)
    assert job_runner.run_job(s, first.id) == JobStatus.done.value
    parent = jobs.fetch_job(s, job.id)
    assert parent.status == JobStatus.running.value
    assert parent.progress == pytest.approx(0.25)
    assert parent.message == "1/4 chunks done"

    # A waiting parent has no heartbeat and is never reaped as lost.
    assert job.id not in job_runner.reap_stale_jobs(s, stale_after_s=0.0)

    with session_scope(s.db_url) as db:
        jobs.cancel_job(db, job.id, user_id=None)
    parent = jobs.fetch_job(s, job.id)
    assert parent.status == JobStatus.cancelled.value
    statuses = [c.status for c in _children(s, job.id)]
    assert statuses == ["done", "cancelled", "cancelled", "cancelled"]
    assert job_runner.run_job(s, rest[0].id) is None  # its message is now a no-op

    # Retrying the parent re-runs only the cancelled chunks, then finalize.
    jobs.retry_job(s, job.id, user_id=None)
    assert jobs.fetch_job(s, job.id).status == JobStatus.running.value
    for child in rest:
        assert job_runner.run_job(s, child.id) == JobStatus.done.value
    parent = jobs.fetch_job(s, job.id)
    assert parent.status == JobStatus.queued.value  # every chunk done: finalize is queued
    assert job_runner.run_job(s, job.id) == JobStatus.done.value
    assert jobs.fetch_job(s, job.id).result == {"sum": 28, "count": 8, "chunks": 4}


def test_a_reaped_chunk_fails_its_parent(queued_settings: Any, project: Any, sum_kind: str) -> None:
    s = queued_settings
    job = jobs.submit(
        s, kind=sum_kind, project_id=project.id, params={"n": 4, "size": 2}, user_id=None
    )
    job_runner.run_job(s, job.id)
    first, _second = _children(s, job.id)
    # A worker took chunk 0 and died: running, no heartbeat since long ago.
    with session_scope(s.db_url) as db:
        row = db.get(Job, first.id)
        assert row is not None
        row.status, row.attempts = JobStatus.running.value, 1
        row.started_at = row.heartbeat_at = None
    assert job_runner.reap_stale_jobs(s, stale_after_s=0.0) == []  # no start time: not stale
    with session_scope(s.db_url) as db:
        row = db.get(Job, first.id)
        assert row is not None
        row.started_at = row.heartbeat_at = utcnow() - dt.timedelta(hours=1)
    assert job_runner.reap_stale_jobs(s, stale_after_s=1.0) == [first.id]
    parent = jobs.fetch_job(s, job.id)
    assert parent.status == JobStatus.failed.value
    assert job_runner.WORKER_LOST in (parent.error or "")


def test_plan_chunks_keeps_a_folders_dicom_files_together(tmp_path: Path) -> None:
    def src(rel: str) -> Source:
        path = tmp_path / rel
        return Source(path, path.name, str(path))

    sources = [src(f"a/{k}.png") for k in range(5)]
    sources += [src(f"series/{k:03d}.dcm") for k in range(4)]
    sources += [src(f"b/{k}.jpg") for k in range(3)]
    parts = plan_chunks(sources, size=3)
    assert [len(p) for p in parts] == [3, 2, 4, 3]
    assert all(s.path.suffix == ".dcm" for s in parts[2])
    assert [s for p in parts for s in p] == sources
    with pytest.raises(ValueError, match="size"):
        plan_chunks(sources, size=0)


def _images(folder: Path, n: int) -> None:
    from skimage import data

    base = data.astronaut()[::4, ::4]
    for k in range(n):
        sub = folder / f"case{k % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        img = np.roll(base, k * 7, axis=1)  # distinct bytes, distinct sha256
        Image.fromarray(img).save(sub / f"img_{k:03d}.png")


def test_chunked_ingest_imports_every_file_once(
    settings: Any, project: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "data"
    _images(folder, 11)
    (folder / "case0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    params = {
        "project_id": project.id,
        "paths": [str(folder), str(tmp_path / "gone")],
        "chunk_size": 4,
    }
    job = jobs.submit(settings, kind="ingest", project_id=project.id, params=params, user_id=None)
    assert job.status == JobStatus.done.value, job.error
    assert job.result["imported"] == 11
    assert job.result["existing"] == 0
    assert job.result["chunks"] == 3
    reasons = {Path(f["path"]).name: f["reason"] for f in job.result["failed"]}
    assert set(reasons) == {"broken.png", "gone"}
    assert reasons["gone"] == "file not found"
    assert all(c.status == "done" for c in _children(settings, job.id))
    with session_scope(settings.db_url, write=False) as db:
        items = list(db.scalars(select(Item).where(Item.project_id == project.id)))
    assert len(items) == 11
    assert len({i.sha256 for i in items}) == 11
    assert all((settings.home / "thumbs").rglob(f"{i.sha256}*") for i in items)

    again = jobs.submit(settings, kind="ingest", project_id=project.id, params=params, user_id=None)
    assert again.status == JobStatus.done.value
    assert (again.result["imported"], again.result["existing"]) == (0, 11)


def test_chunked_embedding_fills_the_feature_store(
    settings: Any, project: Any, tmp_path: Path
) -> None:
    from loupe.features import FeatureStore, get_backbone
    from loupe.services.training.chunks import request_embedding

    folder = tmp_path / "data"
    _images(folder, 7)
    ingest = jobs.submit(
        settings,
        kind="ingest",
        project_id=project.id,
        params={"project_id": project.id, "paths": [str(folder)]},
        user_id=None,
    )
    assert ingest.result["imported"] == 7
    job = request_embedding(settings, project.id, user_id=None, members=["classic"], chunk_size=3)
    assert job.status == JobStatus.done.value, job.error
    assert job.result == {"items": 7, "embedded": {"classic": 7}, "unreadable": 0, "chunks": 3}
    with session_scope(settings.db_url, write=False) as db:
        items = list(db.execute(select(Item.id, Item.uri).order_by(Item.id)))
    backbone = get_backbone("classic")
    store = FeatureStore(settings.features_dir, project.id, "classic", backbone.dim)
    assert store.missing([i for i, _ in items]) == []
    direct, failed = backbone.embed_paths([items[4].uri])
    assert not failed
    np.testing.assert_allclose(store.get([items[4].id])[0], direct[0], rtol=1e-5, atol=1e-6)
    assert list((settings.features_dir / str(project.id) / "_chunks").glob("*/*.npz")) == []
    again = request_embedding(settings, project.id, user_id=None, members=["classic"])
    assert again.result == {"items": 0, "embedded": {}, "unreadable": 0, "chunks": 0}
