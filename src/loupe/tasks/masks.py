"""What the mask kinds (``segment``, ``volume``) share: a schema of label values.

Schema ``{"classes": [{"name", "color", "value"}]}``; value 0 is background.
Labels are ``mask`` (a lossless mask file, referenced by the payload) or
``points`` (clicks and scribbles in the payload).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator, model_validator

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.base import PALETTE, LabelValue, Name, StrictModel, TaskKind, check_color, unique


class MaskClassDef(StrictModel):
    name: Name
    color: str | None = None
    value: int | None = Field(default=None, ge=1, le=255)

    @field_validator("color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        return check_color(v)


class MaskSchema(StrictModel):
    classes: list[MaskClassDef] = Field(min_length=1, max_length=255)

    @model_validator(mode="after")
    def _fill(self) -> MaskSchema:
        unique([c.name for c in self.classes], "class name")
        unique([c.value for c in self.classes if c.value is not None], "label value")
        used = {c.value for c in self.classes if c.value is not None}
        free = (v for v in range(1, 256) if v not in used)
        for i, c in enumerate(self.classes):
            if c.value is None:
                c.value = next(free)
            if c.color is None:
                c.color = PALETTE[i % len(PALETTE)]
        return self


class MaskTaskKind(TaskKind):
    """A kind whose labels are masks or points over the image grid."""

    label_kinds = ("mask", "points")

    def check_value(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        if not isinstance(value.data, dict) or not value.data:
            raise LoupeError(
                ErrorCode.INVALID, f"a {value.kind} label needs a non-empty 'data' object"
            )
        return LabelValue(kind=value.kind, data=value.data, note=value.note)
