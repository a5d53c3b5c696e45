"""``segment``: 2-D segmentation of images from points, scribbles and masks.

Its trainer (pixel features + a fast head) comes with the 2-D segmentation work.
"""

from __future__ import annotations

from typing import Literal

from loupe.tasks.masks import MaskSchema, MaskTaskKind


class SegmentSchema(MaskSchema):
    task: Literal["segment"] = "segment"


class SegmentKind(MaskTaskKind):
    name = "segment"
    title = "Segment 2-D"
    description = "Masks of 2-D images, drawn from clicks and scribbles."
    schema_model = SegmentSchema
