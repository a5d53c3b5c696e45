"""Active-learning queue and similar-items schemas."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field

from loupe.api.schemas.common import DbId


class QueueItem(BaseModel):
    id: int
    score: float = Field(description="the strategy's score: higher was picked sooner")


class QueuePublic(BaseModel):
    strategy: str = Field(description="the strategy asked for")
    strategy_used: str = Field(description="the strategy that ran (a fallback when needed)")
    fallback_reason: str | None = Field(description="why the asked strategy could not run")
    backbone: str | None = Field(description="the features the strategy read, if any")
    model_version_id: int | None
    lease_expires_at: dt.datetime = Field(description="the items are yours until then")
    items: list[QueueItem]


class ReleaseRequest(BaseModel):
    item_ids: list[DbId] | None = Field(
        None, max_length=1000, description="leases to drop (default: all of yours here)"
    )


class ReleasePublic(BaseModel):
    released: int


class SimilarRequest(BaseModel):
    item_ids: list[DbId] = Field(min_length=1, max_length=1000)
    k: int = Field(50, ge=1, le=1000)
    combine: str = Field("mean", pattern="^(mean|max)$", description="several queries: mean|max")


class SimilarItem(BaseModel):
    id: int
    similarity: float = Field(description="cosine similarity in [-1, 1]")


class SimilarPublic(BaseModel):
    backbone: str
    query: list[int]
    items: list[SimilarItem]
