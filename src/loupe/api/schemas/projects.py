"""Project, membership and case schemas."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from loupe.api.schemas.common import ORMModel


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    task: str = Field(min_length=1, max_length=16, description="a task kind listed by /api/info")
    label_schema: dict[str, Any] = Field(
        alias="schema",
        description="classify/segment/volume: {classes: [...]}; score: {metrics: [...]}",
    )
    description: str = Field(default="", max_length=10_000)
    settings: dict[str, Any] = Field(default_factory=dict)

    model_config = {"populate_by_name": True}


class ProjectUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    label_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    settings: dict[str, Any] | None = None

    model_config = {"populate_by_name": True}


class ProjectPublic(BaseModel):
    id: int
    name: str
    task: str
    label_schema: dict[str, Any] = Field(serialization_alias="schema")
    description: str
    settings: dict[str, Any]
    created_at: dt.datetime
    role: str
    items: int = 0
    labelled: int = 0


class ProjectsPublic(BaseModel):
    data: list[ProjectPublic]
    count: int


class MemberCreate(BaseModel):
    email: str = Field(max_length=320)
    role: str = Field(pattern="^(owner|annotator|reviewer|viewer)$")


class MemberUpdate(BaseModel):
    role: str = Field(pattern="^(owner|annotator|reviewer|viewer)$")


class MemberPublic(BaseModel):
    user_id: int
    email: str
    name: str
    role: str


class MembersPublic(BaseModel):
    data: list[MemberPublic]
    count: int


class CaseCreate(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    meta: dict[str, Any] = Field(default_factory=dict)


class CaseUpdate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=300)
    meta: dict[str, Any] | None = None
    status: str | None = Field(default=None, pattern="^(open|finished)$")


class CaseMove(BaseModel):
    """Move items to a case: give ``case_id`` or ``case_name`` (a new name creates the case)."""

    item_ids: list[int] = Field(min_length=1, max_length=10_000)
    case_id: int | None = Field(default=None, ge=1)
    case_name: str | None = Field(default=None, min_length=1, max_length=300)


class CasePublic(ORMModel):
    id: int
    project_id: int
    name: str
    meta: dict[str, Any]
    status: str
    finished_at: dt.datetime | None
    created_at: dt.datetime
    items: int = 0
    labelled: int = 0


class CasesPublic(BaseModel):
    data: list[CasePublic]
    count: int
