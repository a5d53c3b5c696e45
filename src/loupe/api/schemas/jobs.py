"""Job schemas."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from loupe.api.schemas.common import DbId, ORMModel
from loupe.db.models import JobStatus


class JobPublic(ORMModel):
    id: int
    project_id: int | None
    kind: str
    status: JobStatus
    progress: float = Field(description="0..1")
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None = Field(description="why it failed (the traceback is in the server log)")
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class SelftestCreate(BaseModel):
    """A diagnostic job that only sleeps and reports progress (site admins)."""

    steps: int = Field(default=5, ge=1, le=10_000)
    seconds: float = Field(default=0.2, ge=0, le=60, description="per step")
    fail_at: int | None = Field(
        default=None, ge=0, le=10_000, description="fail at this step (0-based)"
    )
    project_id: DbId | None = None
