"""Schemas of uploads and server-side imports."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IngestFailure(BaseModel):
    path: str = Field(description="The file as given: its original name for an upload")
    reason: str = Field(description="Why it was skipped, e.g. 'empty file (0 bytes)'")


class IngestReportPublic(BaseModel):
    """The outcome of an import: 200 even when some files failed."""

    imported: int = Field(description="New items created")
    existing: int = Field(description="Files whose content was already an item (kept as is)")
    failed: list[IngestFailure] = Field(default_factory=list)
    item_ids: list[int] = Field(
        default_factory=list, description="The item of every file imported or found, in order"
    )


class ImportCreate(BaseModel):
    """Import folders or files that are already on the server (site admins only)."""

    paths: list[str] = Field(min_length=1, max_length=1000, description="Server paths")
    case: str | None = Field(default=None, max_length=300, description="Put every item here")
    case_pattern: str | None = Field(
        default=None,
        max_length=1000,
        description="Regex on file names with a named group (?P<case>...)",
    )
    copy_files: bool = Field(
        default=False,
        alias="copy",
        description="Copy into Loupe's media folder instead of referencing in place",
    )

    model_config = {"populate_by_name": True}


class ImportJobPublic(BaseModel):
    job_id: int
    status: str
