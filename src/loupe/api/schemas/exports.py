"""Export, label-import and report schemas."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field, field_validator

from loupe.api.schemas.common import DbId


class ExportCreate(BaseModel):
    """A large export, written to a file by a job (then ``GET /exports/{job_id}/download``)."""

    format: str = Field(
        default="zip",
        pattern="^[a-z0-9_]{1,32}$",
        description="an exporter from /api/info (zip, csv, segment_masks, nifti_masks, "
        "nnunet, dicom_seg ...); one the project's kind has",
    )
    include_images: bool = Field(
        default=False, description="ZIP only: add images/<class>/<file> (ImageFolder layout)"
    )
    split_seed: int = Field(default=0, ge=0, le=2**31 - 1)
    split: list[float] = Field(
        default_factory=lambda: [0.8, 0.1, 0.1],
        description="train, val, test fractions (by case; items without a case by item)",
    )
    case_id: DbId | None = None
    since: str | None = Field(default=None, description="labelled at or after (ISO date/time)")
    until: str | None = Field(
        default=None, description="labelled before (ISO date/time; a date includes that day)"
    )
    labelled_only: bool = False
    raw: bool = Field(
        default=False,
        description="CSV cells as stored: no ' before text starting with = + - @",
    )

    @field_validator("split")
    @classmethod
    def _three_fractions(cls, v: list[float]) -> list[float]:
        if len(v) != 3 or any(x < 0 for x in v) or abs(sum(v) - 1.0) > 1e-6:
            raise ValueError("split must be three fractions >= 0 that add up to 1")
        return v


class LabelImportRow(BaseModel):
    row: int = Field(description="Line number in the file (the header is line 1)")
    key: str = Field(description="The sha256 or file name the row was matched by")
    status: str = Field(
        description="set | overwrite | unchanged | conflict | unknown_item | ambiguous | "
        "invalid | no_label | duplicate"
    )
    item_id: int | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    message: str


class LabelImportReport(BaseModel):
    dry_run: bool = Field(description="True: nothing was written; statuses say what would be")
    overwrite: bool
    key_column: str
    value_columns: list[str]
    total: int
    changed: int = Field(description="Labels written (dry run: that would be written)")
    counts: dict[str, int]
    rows: list[LabelImportRow]
    truncated: bool = Field(description="Only the first rows are listed; counts cover all")


class ReportPublic(BaseModel):
    id: int
    project_id: int
    project_name: str | None
    case_id: int | None
    case_name: str | None
    user_id: int | None
    kind: str
    sha256: str | None
    size_bytes: int | None
    params: dict[str, Any]
    stale: bool = Field(
        default=False, description="The case was reopened after this report: regenerate it"
    )
    created_at: dt.datetime
    download_url: str


class ReportsPublic(BaseModel):
    data: list[ReportPublic]
    count: int


class DatasetImportPublic(BaseModel):
    """What re-importing a dataset ZIP created."""

    project_id: int
    name: str
    created: bool
    items: dict[str, Any]
    cases: Any = None
    labels: dict[str, Any]
