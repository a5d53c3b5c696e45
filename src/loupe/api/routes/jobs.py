"""Jobs: status, progress stream (SSE), a project's job list, retry and cancel.

Access: a project's job needs the viewer role to read and annotator to retry or
cancel; a job without a project is visible to its creator and site admins only.
Missing and not-yours both answer 404, as for projects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Path, Query
from sqlalchemy.orm import Session
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from loupe.api.deps import (
    AdminUser,
    CurrentUser,
    SessionDep,
    SettingsDep,
    ViewerProject,
    project_role,
    require_role,
)
from loupe.api.params import MAX_ID, Offset
from loupe.api.schemas.jobs import JobPublic, JobsPublic, SelftestCreate
from loupe.db.models import Job, JobStatus, Project, ProjectRole, User
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs import core as svc
from loupe.settings import Settings

router = APIRouter(tags=["jobs"])

EVENTS_POLL_S = 0.25
JobId = Path(ge=1, le=MAX_ID)


def _job_for(db: Session, user: User, job_id: int, min_role: ProjectRole) -> Job:
    """Load a job the user may see, and check that their role reaches ``min_role``."""
    job = db.get(Job, job_id)
    role: str | None = None
    if job is not None and job.project_id is not None:
        project = db.get(Project, job.project_id)
        role = project_role(db, project, user) if project is not None else None
    elif job is not None and (user.is_admin or job.created_by == user.id):
        role = ProjectRole.owner.value
    if job is None or role is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"job {job_id} not found")
    require_role(role, min_role, job.project_id)
    return job


@router.get("/jobs/{job_id}", response_model=JobPublic)
def get_job(user: CurrentUser, db: SessionDep, job_id: int = JobId) -> JobPublic:
    return JobPublic.model_validate(_job_for(db, user, job_id, ProjectRole.viewer))


@router.get(
    "/jobs/{job_id}/events",
    response_model=JobPublic,
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "`progress` events, each a JobPublic, then `end`",
            "content": {
                "text/event-stream": {"schema": {"$ref": "#/components/schemas/JobPublic"}}
            },
        }
    },
)
def job_events(
    user: CurrentUser, db: SessionDep, settings: SettingsDep, job_id: int = JobId
) -> EventSourceResponse:
    """Server-sent events: ``progress`` with the job whenever its status, progress or
    message changes, then ``end`` (with the final job) once it is done, failed or
    cancelled. Close the EventSource on ``end``, or the browser reconnects.
    """
    _job_for(db, user, job_id, ProjectRole.viewer)
    # The stream outlives this function: do not hold the request's connection.
    db.close()
    return EventSourceResponse(_events(settings, job_id))


async def _events(settings: Settings, job_id: int) -> AsyncIterator[dict[str, str]]:
    last: tuple[str, float, str] | None = None
    while True:
        job = await run_in_threadpool(_snapshot, settings, job_id)
        if job is None:  # deleted with its project meanwhile
            yield {"event": "end", "data": "null"}
            return
        state = (job.status.value, job.progress, job.message)
        if state != last:
            last = state
            yield {"event": "progress", "data": job.model_dump_json()}
        if job.status.value in svc.TERMINAL:
            yield {"event": "end", "data": job.model_dump_json()}
            return
        await asyncio.sleep(EVENTS_POLL_S)


def _snapshot(settings: Settings, job_id: int) -> JobPublic | None:
    try:
        return JobPublic.model_validate(svc.fetch_job(settings, job_id))
    except LoupeError:
        return None


@router.get("/projects/{project_id}/jobs", response_model=JobsPublic)
def list_project_jobs(
    project: ViewerProject,
    db: SessionDep,
    status: JobStatus | None = Query(None),
    kind: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=500),
    offset: Offset = 0,
) -> JobsPublic:
    rows, count = svc.list_jobs(
        db,
        project.id,
        status=status.value if status is not None else None,
        kind=kind,
        limit=limit,
        offset=offset,
    )
    return JobsPublic(data=[JobPublic.model_validate(j) for j in rows], count=count)


@router.post("/jobs/{job_id}/retry", response_model=JobPublic)
def retry_job(
    user: CurrentUser, db: SessionDep, settings: SettingsDep, job_id: int = JobId
) -> JobPublic:
    _job_for(db, user, job_id, ProjectRole.annotator)
    # retry_job writes in a transaction of its own and enqueues after its commit;
    # end ours first (on SQLite it holds the write lock).
    db.commit()
    return JobPublic.model_validate(svc.retry_job(settings, job_id, user.id))


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic)
def cancel_job(user: CurrentUser, db: SessionDep, job_id: int = JobId) -> JobPublic:
    _job_for(db, user, job_id, ProjectRole.annotator)
    job = svc.cancel_job(db, job_id, user_id=user.id)
    db.commit()  # visible to the worker and to event streams before we answer
    return JobPublic.model_validate(job)


@router.post("/jobs/selftest", response_model=JobPublic, status_code=201)
def submit_selftest(
    body: SelftestCreate, user: AdminUser, db: SessionDep, settings: SettingsDep
) -> JobPublic:
    """Queue the diagnostic ``selftest`` job (site admins): it checks that a worker
    runs jobs and that progress reaches clients."""
    db.commit()  # submit() commits in a transaction of its own
    job = svc.submit(
        settings,
        kind="selftest",
        project_id=body.project_id,
        params=body.model_dump(exclude={"project_id"}),
        user_id=user.id,
    )
    return JobPublic.model_validate(job)
