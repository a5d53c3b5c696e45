"""Model versions, training requests and predictions."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loupe.api.schemas.common import DbId, DbVersion, ORMModel


class TrainRequest(BaseModel):
    mode: str = Field(default="frozen", pattern="^(frozen|finetune)$")


class PredictRequest(BaseModel):
    """Draft the items a version has not drafted (default: the active version)."""

    model_config = ConfigDict(extra="forbid")
    version_id: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=500, ge=1, le=10_000)


class ModelVersionPublic(ORMModel):
    id: int
    project_id: int
    number: int
    status: str
    active: bool
    kind: str
    members: list[Any]
    params: dict[str, Any]
    trained_on: dict[str, Any]
    metrics: dict[str, Any]
    calibration: dict[str, Any]
    job_id: int | None
    created_at: dt.datetime
    finished_at: dt.datetime | None


class ModelVersionsPublic(BaseModel):
    data: list[ModelVersionPublic]
    count: int


class PredictionPublic(BaseModel):
    model_version_id: int
    label: str | None
    confidence: float | None
    uncertainty: float | None
    flagged: bool
    flag_reason: str | None
    output: dict[str, Any]
    members: dict[str, Any]


class PredictionsPublic(BaseModel):
    item_id: int
    active_version_id: int | None
    data: list[PredictionPublic]


class AcceptRequest(BaseModel):
    item_ids: list[DbId] = Field(min_length=1, max_length=10000)
    model_version_id: DbId | None = None
    versions: dict[DbId, DbVersion] | None = None


class AcceptOne(BaseModel):
    model_version_id: DbId | None = None
    version: DbVersion | None = None
