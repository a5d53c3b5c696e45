"""The shared types of the task-kind seam (re-exported by :mod:`loupe.tasks.base`).

Plain data that every kind and every service speaks: a label to write, a draft,
what a trainer reads and returns, a kind's export / import columns, the case
report's groups; plus the helpers the kinds' schema models share.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

# Label kinds every project takes besides its own: a person's 'not sure' and 'skip'.
DECISION_KINDS = ("unsure", "skip")
RESERVED_LABELS = frozenset(DECISION_KINDS)
NONE_KIND = "none"  # a cleared label keeps its row so versions keep counting up
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
# A qualitative palette (Okabe-Ito + Tableau) for classes created without a colour.
PALETTE = [
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
]  # fmt: skip


def _no_control_characters(value: str) -> str:
    # Any printable text is a name ('T-shirt/top'); archive paths are sanitised where made.
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("a name cannot contain control characters (tab, new line, ...)")
    return value


Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_control_characters)]


# --- data ----------------------------------------------------------------------


@dataclass(frozen=True)
class LabelValue:
    """A label to write: its kind and the fields that kind uses."""

    kind: str
    label: str | None = None
    scores: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    note: str | None = None


@dataclass(frozen=True)
class Draft:
    """A model's prediction for one item, as a kind reads it."""

    label: str | None
    output: Mapping[str, Any]


@dataclass
class TrainingData:
    """What a trainer needs from the database, read in one short transaction."""

    project_id: int
    task: str
    schema: dict[str, Any]
    settings: dict[str, Any]
    items: list[tuple[int, str | list[str]]]  # (item id, path or DICOM file list)
    labels: dict[int, Any]  # item id -> the kind's training target


@dataclass
class PredictionRow:
    """One item's prediction row (written to ``predictions``, never to labels)."""

    item_id: int
    label: str | None
    confidence: float | None
    uncertainty: float | None
    flagged: bool
    flag_reason: str | None
    output: dict[str, Any]
    members: dict[str, Any]


@dataclass
class FitOutcome:
    """A finished fit: predictions for every item and what the version records."""

    predictions: list[PredictionRow]
    metrics: dict[str, Any]
    calibration: dict[str, Any]
    params: dict[str, Any]
    state: dict[str, Any]
    trained_on_ids: list[int]
    label_counts: dict[str, int]
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def trained_on_digest(self) -> str:
        ids = ",".join(str(i) for i in sorted(self.trained_on_ids))
        return hashlib.sha256(ids.encode()).hexdigest()


@dataclass(frozen=True)
class ExportColumns:
    """A kind's columns in the CSV / ZIP export.

    ``label`` hold the human label, ``draft`` the model's draft. ``needs`` names
    the extra row fields the cells read: ``scores`` (the label's scores),
    ``data`` (the label's payload), ``pred_output`` (the draft's output).
    """

    label: tuple[str, ...]
    draft: tuple[str, ...]
    needs: frozenset[str] = frozenset()
    keys: tuple[str, ...] = ()  # the kind's own keys (e.g. metric names), for the cells


def number_cell(value: Any) -> Any:
    """A number as an export cell: ``""`` for None, a float rounded to 6 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return round(value, 6)
    return value


@dataclass(frozen=True)
class ImportColumns:
    """The value columns a label import reads: column name per kind-specific key."""

    values: tuple[str, ...]
    by_key: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ReportGroups:
    """The case report's counts table and thumbnail groups."""

    counts: list[tuple[str, int, str]]  # (name, n, #rrggbb)
    groups: dict[str, list[int]]  # group title -> item ids, in item order
    order: list[str]
    colors: dict[str, str]


OTHER_COLORS = {"unsure": "#9e9e9e", "skip": "#bdbdbd", "scored": "#4e79a7"}


# --- schema helpers --------------------------------------------------------------------


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_color(v: str | None) -> str | None:
    if v is not None and not _COLOR.match(v):
        raise ValueError(f"colour {v!r} is not #rrggbb")
    return v.lower() if v else v


def unique(values: Sequence[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        key = v.lower() if isinstance(v, str) else v
        if key in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(key)


def errors_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "schema"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
