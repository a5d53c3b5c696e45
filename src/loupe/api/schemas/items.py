"""Item, label and audit-history schemas."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import BaseModel, Field

from loupe.api.schemas.common import DbId, DbVersion


class AnnotationPublic(BaseModel):
    kind: str
    label: str | None = None
    scores: dict[str, float] | None = None
    data: dict[str, Any] | None = None
    note: str | None = None
    origin: str = Field(
        description="human | model_accepted (a person accepted a model's draft) | model"
    )
    model_version_id: int | None = Field(
        default=None, description="The model version whose draft was accepted"
    )
    version: int
    updated_by: int | None
    updated_at: dt.datetime


class DraftPublic(BaseModel):
    """The active model version's output for an item (never a human label)."""

    model_version_id: int
    label: str | None
    confidence: float | None
    uncertainty: float | None
    output: dict[str, Any]
    flagged: bool
    flag_reason: str | None
    # each ensemble member's draft ({member: output}), only when asked for (members=true)
    members: dict[str, Any] | None = None


class ItemPublic(BaseModel):
    id: int
    project_id: int
    case_id: int | None
    filename: str
    format: str
    kind: str
    shape: list[int]
    dtype: str
    axes: str
    spacing: list[float] | None
    size_bytes: int
    sha256: str
    meta: dict[str, Any]
    status: str
    error: str | None
    created_at: dt.datetime
    version: int = Field(description="Annotation version for optimistic locking (0: none yet)")
    thumbnail_url: str = Field(description="Signed, expiring URL of the JPEG thumbnail")
    thumbnail_data: str | None = Field(
        default=None,
        description="The thumbnail itself as a data: URI (only with ?inline_thumbnails=true)",
    )
    annotation: AnnotationPublic | None
    draft: DraftPublic | None
    change_id: str | None = Field(
        default=None,
        description="After a label write: the change it made (for undo); None otherwise",
    )


class ItemsPublic(BaseModel):
    data: list[ItemPublic]
    count: int | None
    next_after_id: int | None = None


class LabelSet(BaseModel):
    kind: str = Field(
        description="class | scores | unsure | skip | mask | points",
        pattern="^[a-z]+$",
        max_length=16,
    )
    label: str | None = Field(default=None, max_length=200)
    scores: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    note: str | None = Field(default=None, max_length=5000)
    version: DbVersion | None = Field(
        default=None, description="The version you saw; a stale one gets 409"
    )


class LabelBatch(BaseModel):
    item_ids: list[DbId] = Field(min_length=1, max_length=10000)
    kind: str | None = Field(
        default=None, max_length=16, description="omit (or 'none') to clear the labels"
    )
    label: str | None = Field(default=None, max_length=200)
    scores: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    note: str | None = Field(default=None, max_length=5000)
    versions: dict[DbId, DbVersion] | None = Field(
        default=None, description="item id -> version seen, for optimistic locking per item"
    )


class BatchConflict(BaseModel):
    item_id: int
    code: str
    message: str


class LabelBatchResult(BaseModel):
    applied: list[int]
    unchanged: list[int]
    conflicts: list[BatchConflict]
    versions: dict[int, int]
    change_id: str | None = Field(
        default=None, description="The change this request made (for undo); None if none"
    )


ChangeId = Annotated[str, Field(pattern="^[0-9a-f]{32}$", description="A change (group) id")]


class UndoRequest(BaseModel):
    change_id: ChangeId | None = Field(
        default=None,
        description="undo: the change to undo (default: your latest); "
        "redo: the undo to redo (default: your latest)",
    )


class UndoResult(BaseModel):
    """What an undo or redo did, item by item."""

    action: str = Field(description="undo | redo")
    reverted_change_id: str = Field(description="The change undone (or the undo redone)")
    what: str = Field(description="The source of the original change: api | batch | accept")
    change_id: str | None = Field(description="The change this undo / redo made")
    applied: list[int]
    unchanged: list[int]
    conflicts: list[BatchConflict]
    versions: dict[int, int]


class EventPublic(BaseModel):
    id: int
    item_id: int
    user_id: int | None
    user_email: str | None
    at: dt.datetime
    action: str
    source: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    version: int
    change_id: str | None = Field(default=None, description="The change (request) it was part of")
    reverts: str | None = Field(default=None, description="undo / redo: the change it reverted")


class EventsPublic(BaseModel):
    data: list[EventPublic]
    count: int
