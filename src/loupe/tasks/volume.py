"""``volume``: 3-D segmentation of NIfTI / DICOM volumes.

Its segmenters (voxel classifier, MONAI UNet, nnU-Net) come with the 3-D work.
"""

from __future__ import annotations

from typing import Literal

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.masks import MaskSchema, MaskTaskKind


class VolumeSchema(MaskSchema):
    task: Literal["volume"] = "volume"


class VolumeKind(MaskTaskKind):
    name = "volume"
    title = "Segment 3-D"
    description = "Label masks of 3-D volumes (NIfTI, DICOM series)."
    schema_model = VolumeSchema


def require_volume(task: str, project_id: int) -> None:
    """CONFLICT (409) unless the project is a volume project (its routes and jobs):
    the project exists and the caller may read it, it just has no volumes."""
    if task != VolumeKind.name:
        raise LoupeError(
            ErrorCode.CONFLICT, f"project {project_id} is a {task} project, not a volume one"
        )
