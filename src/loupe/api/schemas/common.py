"""Schemas shared by several resources."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# Integer columns are int4 on PostgreSQL: a larger id or version cannot exist.
MAX_DB_INT = 2**31 - 1
DbId = Annotated[int, Field(ge=1, le=MAX_DB_INT)]
DbVersion = Annotated[int, Field(ge=0, le=MAX_DB_INT)]


class ORMModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Message(BaseModel):
    message: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    detail: ErrorDetail | dict[str, Any]


# Documented on every route (app.py): any 4xx, and 503 when the database is busy.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {
        "model": ErrorResponse,
        "description": "An error: detail.code names it, detail.message explains it",
    },
    503: {
        "model": ErrorResponse,
        "description": "The database is busy: send the request again after Retry-After seconds",
    },
}
