"""3-D volume schemas (the contract the NiiVue web UI is built against)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, Field

from loupe.api.schemas.jobs import JobPublic

VoxelIndex = Field(ge=0, le=1 << 16)


class MaskSaved(BaseModel):
    item_id: int
    version: int
    voxels_changed: int
    dice_vs_model: float | None
    model_version_id: int | None


class VolumeClick(BaseModel):
    x: int = VoxelIndex
    y: int = VoxelIndex
    z: int = VoxelIndex
    value: int = Field(ge=0, le=255)


class VolumeScribble(BaseModel):
    value: int = Field(ge=0, le=255)
    voxels: list[tuple[int, int, int]] = Field(default_factory=list, max_length=200_000)


class VolumeFocus(BaseModel):
    axis: Literal["x", "y", "z"] = "z"
    index: int = VoxelIndex


class InteractiveRequest(BaseModel):
    """Voxel coordinates are array indices of image.nii.gz (x = first NIfTI axis)."""

    clicks: list[VolumeClick] = Field(default_factory=list, max_length=10_000)
    scribbles: list[VolumeScribble] = Field(default_factory=list, max_length=1_000)
    focus: VolumeFocus | None = None
    full: bool = False


class PredictRequest(BaseModel):
    item_ids: list[int] | None = Field(default=None, max_length=100_000)
    segmenter: Literal["unet3d", "nnunet", "voxel"] | None = None


class TrainRequest(BaseModel):
    """Optional training options (defaults suit a 2-core CPU)."""

    patch: int | None = Field(default=None, ge=16, le=256)
    epochs: int | None = Field(default=None, ge=1, le=10_000)
    iterations: int | None = Field(default=None, ge=1, le=100_000)
    batch_size: int | None = Field(default=None, ge=1, le=64)
    channels: list[int] | None = Field(default=None, min_length=2, max_length=8)
    roi: int | None = Field(default=None, ge=16, le=512)
    lr: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None


class FeedbackPerVersion(BaseModel):
    model_version_id: int | None
    number: int | None
    count: int


class FeedbackPerUser(BaseModel):
    user: str
    count: int


class DiceAt(BaseModel):
    at: dt.datetime
    dice: float
    model_version_id: int | None


class VersionSummary(BaseModel):
    id: int
    number: int
    status: str
    active: bool
    kind: str
    metrics: dict[str, Any]
    created_at: dt.datetime


class VolumeDashboard(BaseModel):
    feedback_per_version: list[FeedbackPerVersion]
    feedback_per_user: list[FeedbackPerUser]
    dice_over_time: list[DiceAt]
    corrected_volumes: int
    retrain_min_corrections: int
    can_retrain: bool
    versions: list[VersionSummary]
    job: JobPublic | None
