"""2-D segmentation schemas: the annotation of one item, training requests, status."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loupe.api.schemas.jobs import JobPublic


class SegmentPoint(BaseModel):
    x: float = Field(description="column in pixels")
    y: float = Field(description="row in pixels")
    value: int = Field(description="class value (0 = background)")
    source: Literal["human", "extracted"] = "human"


class SegmentScribble(BaseModel):
    value: int = Field(description="class value (0 = background)")
    width: float = Field(6.0, gt=0, le=512, description="brush diameter in pixels")
    path: list[list[float]] = Field(min_length=1, description="[[x, y], ...] in pixels")


class SegmentAnnotationPublic(BaseModel):
    item_id: int
    version: int = Field(description="0 before the first save; send it back to save")
    width: int
    height: int
    points: list[SegmentPoint]
    scribbles: list[SegmentScribble]
    has_mask: bool
    origin: Literal["human", "model_accepted", "model"] | None


class SegmentAnnotationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=0)
    points: list[SegmentPoint] = Field(default_factory=list, max_length=20_000)
    scribbles: list[SegmentScribble] = Field(default_factory=list, max_length=2_000)


class ExtractPointsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_points: int | None = Field(None, ge=0, le=5000)
    confidence_threshold: float | None = Field(None, gt=0, le=1)
    min_distance: float | None = Field(None, ge=0, le=1000)
    gradient_weight: float | None = Field(None, ge=0, le=1)


class AcceptMaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.5, ge=0, le=1)


class SegmentTrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_id: int | None = Field(None, ge=1, description="the item being viewed (live heatmap)")


class SegmentStatus(BaseModel):
    job: JobPublic | None = Field(description="the latest segment_train job")
    last_version: dict[str, Any] | None = Field(
        description="{id, number, status, active, metrics, finished_at} of the newest version"
    )
    settings: dict[str, Any] = Field(description="the project's segment settings, defaults filled")


class MaskImportResult(BaseModel):
    imported: int
    skipped: list[str] = Field(description="file names that matched no item or were invalid")
