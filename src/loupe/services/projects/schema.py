"""Project label schemas per task, and validation of labels against them.

classify: ``{"classes": [{"name", "color", "hotkey"}], "multiclass": bool}``;
'unsure' and 'skip' are always available and are not classes.
score: ``{"metrics": [{"name", "min", "max", "step"}]}``.
segment / volume: ``{"classes": [{"name", "color", "value"}]}`` (value 0 is background).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loupe.errors import ErrorCode, LoupeError

RESERVED_LABELS = frozenset({"unsure", "skip"})
RESERVED_HOTKEYS = frozenset({"0", "x", "z"})  # unsure, skip, undo in the grid
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
# A qualitative palette (Okabe-Ito + Tableau) for classes created without a colour.
PALETTE = [
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
]  # fmt: skip
Name = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f/\\]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassDef(_Strict):
    name: Name
    color: str | None = None
    hotkey: str | None = Field(default=None, max_length=1)
    description: str = ""

    @field_validator("color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        if v is not None and not _COLOR.match(v):
            raise ValueError(f"colour {v!r} is not #rrggbb")
        return v.lower() if v else v


class MetricDef(_Strict):
    name: Name
    min: float = 0.0
    max: float = 4.0
    step: float = 1.0
    description: str = ""

    @model_validator(mode="after")
    def _range(self) -> MetricDef:
        if not self.max > self.min:
            raise ValueError(f"metric {self.name!r}: max ({self.max}) must exceed min ({self.min})")
        if not 0 < self.step <= self.max - self.min:
            raise ValueError(f"metric {self.name!r}: step ({self.step}) must be in (0, max-min]")
        return self


class ClassifySchema(_Strict):
    task: Literal["classify"] = "classify"
    classes: list[ClassDef] = Field(min_length=2, max_length=200)

    @model_validator(mode="after")
    def _fill(self) -> ClassifySchema:
        _unique([c.name for c in self.classes], "class name")
        for c in self.classes:
            if c.name.lower() in RESERVED_LABELS:
                raise ValueError(f"class name {c.name!r} is reserved (unsure/skip always exist)")
        used = {c.hotkey for c in self.classes if c.hotkey}
        _unique([c.hotkey for c in self.classes if c.hotkey], "hotkey")
        bad = used & RESERVED_HOTKEYS
        if bad:
            raise ValueError(f"hotkey {sorted(bad)[0]!r} is reserved (0 unsure, X skip, Z undo)")
        free = [str(d) for d in range(1, 10) if str(d) not in used]
        for i, c in enumerate(self.classes):
            if c.color is None:
                c.color = PALETTE[i % len(PALETTE)]
            if c.hotkey is None and free:
                c.hotkey = free.pop(0)
        return self

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2


class ScoreSchema(_Strict):
    task: Literal["score"] = "score"
    metrics: list[MetricDef] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> ScoreSchema:
        _unique([m.name for m in self.metrics], "metric name")
        return self


class MaskClassDef(_Strict):
    name: Name
    color: str | None = None
    value: int | None = Field(default=None, ge=1, le=255)

    _c = field_validator("color")(ClassDef._color.__func__)  # type: ignore[attr-defined]


class _MaskSchema(_Strict):
    classes: list[MaskClassDef] = Field(min_length=1, max_length=255)

    @model_validator(mode="after")
    def _fill(self) -> _MaskSchema:
        _unique([c.name for c in self.classes], "class name")
        _unique([c.value for c in self.classes if c.value is not None], "label value")
        used = {c.value for c in self.classes if c.value is not None}
        free = (v for v in range(1, 256) if v not in used)
        for i, c in enumerate(self.classes):
            if c.value is None:
                c.value = next(free)
            if c.color is None:
                c.color = PALETTE[i % len(PALETTE)]
        return self


class SegmentSchema(_MaskSchema):
    task: Literal["segment"] = "segment"


class VolumeSchema(_MaskSchema):
    task: Literal["volume"] = "volume"


SCHEMAS: dict[str, type[_Strict]] = {
    "classify": ClassifySchema,
    "score": ScoreSchema,
    "segment": SegmentSchema,
    "volume": VolumeSchema,
}


def _unique(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        key = v.lower() if isinstance(v, str) else v
        if key in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(key)


def _errors_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "schema"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def validate_schema(task: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a project schema; return it as plain JSON data."""
    if task not in SCHEMAS:
        raise LoupeError(ErrorCode.INVALID, f"unknown task {task!r}; use one of {sorted(SCHEMAS)}")
    try:
        model = SCHEMAS[task].model_validate({**schema, "task": task})
    except ValidationError as exc:
        raise LoupeError(ErrorCode.INVALID, f"invalid {task} schema: {_errors_text(exc)}") from exc
    return model.model_dump(mode="json")


def schema_from_cli(
    task: str, *, classes: str | None = None, metrics: str | None = None
) -> dict[str, Any]:
    """Build a schema from ``--classes a,b,c`` or ``--metrics name:min:max:step,...``."""
    if metrics:
        if task != "score":
            raise LoupeError(ErrorCode.INVALID, "--metrics is only for --task score")
        out = []
        for spec in metrics.split(","):
            parts = spec.strip().split(":")
            if len(parts) not in (1, 3, 4):
                raise LoupeError(
                    ErrorCode.INVALID, f"metric {spec!r}: use name or name:min:max[:step]"
                )
            m: dict[str, Any] = {"name": parts[0]}
            try:
                if len(parts) >= 3:
                    m["min"], m["max"] = float(parts[1]), float(parts[2])
                if len(parts) == 4:
                    m["step"] = float(parts[3])
            except ValueError as exc:
                raise LoupeError(ErrorCode.INVALID, f"metric {spec!r}: {exc}") from exc
            out.append(m)
        return validate_schema(task, {"metrics": out})
    if classes:
        if task == "score":
            raise LoupeError(ErrorCode.INVALID, "score projects take --metrics, not --classes")
        names = [c.strip() for c in classes.split(",") if c.strip()]
        return validate_schema(task, {"classes": [{"name": n} for n in names]})
    raise LoupeError(ErrorCode.INVALID, "give --classes, --metrics or --schema")


def class_names(schema: dict[str, Any]) -> list[str]:
    return [c["name"] for c in schema.get("classes", [])]


def validate_label(
    task: str,
    schema: dict[str, Any],
    *,
    kind: str,
    label: str | None = None,
    scores: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[str | None, dict[str, float] | None]:
    """Check that a label fits the project; return the normalised (label, scores)."""
    if kind in ("unsure", "skip"):
        return None, None
    if kind == "class":
        if task != "classify":
            raise LoupeError(ErrorCode.INVALID, f"a {task} project does not take class labels")
        names = class_names(schema)
        if label not in names:
            raise LoupeError(
                ErrorCode.INVALID, f"label {label!r} is not a class of this project: {names}"
            )
        return label, None
    if kind == "scores":
        if task != "score":
            raise LoupeError(ErrorCode.INVALID, f"a {task} project does not take scores")
        return None, _validate_scores(schema, scores or {})
    if kind in ("mask", "points"):
        if task not in ("segment", "volume"):
            raise LoupeError(ErrorCode.INVALID, f"a {task} project does not take {kind} labels")
        if not isinstance(data, dict) or not data:
            raise LoupeError(ErrorCode.INVALID, f"a {kind} label needs a non-empty 'data' object")
        return None, None
    raise LoupeError(
        ErrorCode.INVALID,
        f"unknown label kind {kind!r}; use class, scores, unsure, skip, mask or points",
    )


def _validate_scores(schema: dict[str, Any], scores: dict[str, Any]) -> dict[str, float]:
    metrics = {m["name"]: m for m in schema.get("metrics", [])}
    unknown = sorted(set(scores) - set(metrics))
    if unknown:
        raise LoupeError(ErrorCode.INVALID, f"unknown metric(s) {unknown}; known: {list(metrics)}")
    if not scores:
        raise LoupeError(ErrorCode.INVALID, "scores must name at least one metric")
    out: dict[str, float] = {}
    for name, value in scores.items():
        m = metrics[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise LoupeError(ErrorCode.INVALID, f"score {name!r}={value!r} is not a number")
        v = float(value)
        if not m["min"] <= v <= m["max"]:
            raise LoupeError(
                ErrorCode.INVALID, f"score {name!r}={v} is outside [{m['min']}, {m['max']}]"
            )
        steps = (v - m["min"]) / m["step"]
        if abs(steps - round(steps)) > 1e-6:
            raise LoupeError(
                ErrorCode.INVALID, f"score {name!r}={v} is not on the step {m['step']} grid"
            )
        out[name] = v
    return out
