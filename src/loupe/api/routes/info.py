"""Server facts the UI builds its menus from, and a health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

import loupe
from loupe.api.deps import SessionDep, SettingsDep
from loupe.db.models import ProjectRole, Task
from loupe.services.auth import site
from loupe.services.auth.core import count_users
from loupe.services.projects.schema import PALETTE, RESERVED_LABELS

router = APIRouter(tags=["info"])


class InfoPublic(BaseModel):
    version: str
    tasks: list[str]
    project_roles: list[str]
    reserved_labels: list[str]
    palette: list[str]
    allow_registration: bool
    has_users: bool
    max_upload_bytes: int
    database: str
    queue: str
    registries: dict[str, list[str]]
    backbones: list[dict[str, Any]]


class HealthPublic(BaseModel):
    status: str
    database: str


@router.get("/info", response_model=InfoPublic)
def info(settings: SettingsDep, db: SessionDep) -> InfoPublic:
    registries: dict[str, Any] = {}
    from loupe.jobs.core import load_job_kinds

    registries["job_kinds"] = sorted(load_job_kinds())
    from loupe.features import available_backbones
    from loupe.learn import CLASS_HEADS, SCORE_HEADS

    backbones = available_backbones(weights_dir=settings.weights)
    registries["backbones"] = [b["name"] for b in backbones]
    registries["class_heads"] = sorted(CLASS_HEADS)
    registries["score_heads"] = sorted(SCORE_HEADS)
    return InfoPublic(
        version=loupe.__version__,
        tasks=[t.value for t in Task],
        project_roles=[r.value for r in ProjectRole],
        reserved_labels=sorted(RESERVED_LABELS),
        palette=PALETTE,
        allow_registration=site.current(db, settings).allow_registration,
        has_users=count_users(db) > 0,
        max_upload_bytes=settings.max_upload_bytes,
        database=settings.db_url.split(":", 1)[0].split("+", 1)[0],
        queue="redis" if (settings.queue_url or "").startswith("redis") else "sqlite",
        registries=registries,
        backbones=backbones,
    )


@router.get("/health", response_model=HealthPublic)
def health(db: SessionDep) -> HealthPublic:
    db.execute(text("SELECT 1"))
    return HealthPublic(status="ok", database=db.get_bind().dialect.name)
