"""Project label schemas and label validation, by the project's task kind.

The rules live in the task kinds (:mod:`loupe.tasks`); this module is the
services' entry to them.
"""

from __future__ import annotations

from typing import Any

from loupe.tasks import kind_of
from loupe.tasks.base import PALETTE, RESERVED_LABELS, LabelValue

__all__ = [
    "PALETTE",
    "RESERVED_LABELS",
    "schema_from_cli",
    "validate_label",
    "validate_schema",
]


def validate_schema(task: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise a project schema; return it as plain JSON data."""
    return kind_of(task).validate_schema(schema)


def schema_from_cli(
    task: str, *, classes: str | None = None, metrics: str | None = None
) -> dict[str, Any]:
    """Build a schema from ``--classes a,b,c`` or ``--metrics name:min:max:step,...``."""
    return kind_of(task).schema_from_cli(classes=classes, metrics=metrics)


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
    value = kind_of(task).validate_label(
        schema, LabelValue(kind=kind, label=label, scores=scores, data=data)
    )
    return value.label, value.scores
