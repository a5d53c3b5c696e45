"""Server facts the UI builds its menus from, and a health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

import loupe
from loupe.api.deps import SessionDep, SettingsDep
from loupe.services.auth import site
from loupe.services.auth.core import count_users
from loupe.services.info import exporters, plugin_registries, project_roles, task_kinds
from loupe.services.projects.schema import PALETTE, RESERVED_LABELS

router = APIRouter(tags=["info"])


class InfoPublic(BaseModel):
    version: str
    tasks: list[str]
    task_kinds: list[dict[str, Any]]
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
    exporters: list[dict[str, Any]]


class HealthPublic(BaseModel):
    status: str
    database: str


@router.get("/info", response_model=InfoPublic)
def info(settings: SettingsDep, db: SessionDep) -> InfoPublic:
    registries, backbones = plugin_registries(settings)
    return InfoPublic(
        version=loupe.__version__,
        tasks=[k["name"] for k in task_kinds()],
        task_kinds=task_kinds(),
        project_roles=project_roles(),
        reserved_labels=sorted(RESERVED_LABELS),
        palette=PALETTE,
        allow_registration=site.current(db, settings).allow_registration,
        has_users=count_users(db) > 0,
        max_upload_bytes=settings.max_upload_bytes,
        database=settings.db_url.split(":", 1)[0].split("+", 1)[0],
        queue="redis" if (settings.queue_url or "").startswith("redis") else "sqlite",
        registries=registries,
        backbones=backbones,
        exporters=exporters(),
    )


@router.get("/health", response_model=HealthPublic)
def health(db: SessionDep) -> HealthPublic:
    db.execute(text("SELECT 1"))
    return HealthPublic(status="ok", database=db.get_bind().dialect.name)
