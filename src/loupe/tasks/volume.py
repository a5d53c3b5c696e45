"""``volume``: 3-D segmentation of NIfTI / DICOM volumes.

Its segmenters (voxel classifier, MONAI UNet, nnU-Net) come with the 3-D work.
"""

from __future__ import annotations

from typing import Literal

from loupe.tasks.masks import MaskSchema, MaskTaskKind


class VolumeSchema(MaskSchema):
    task: Literal["volume"] = "volume"


class VolumeKind(MaskTaskKind):
    name = "volume"
    title = "Segment 3-D"
    description = "Label masks of 3-D volumes (NIfTI, DICOM series)."
    schema_model = VolumeSchema
