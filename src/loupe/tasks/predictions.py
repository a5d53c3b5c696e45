"""Writing a model version's predictions (shared by every kind's trainer)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from loupe.db.models import Prediction
from loupe.db.session import session_scope
from loupe.tasks.prediction_arrays import write_after_insert
from loupe.tasks.types import PredictionRow

if TYPE_CHECKING:
    from loupe.settings import Settings

log = logging.getLogger(__name__)

INSERT_CHUNK = 2000


def prediction_values(
    project_id: int, version_id: int, rows: Sequence[PredictionRow]
) -> list[dict[str, Any]]:
    """The ``predictions`` table's values of ``rows`` for one bulk insert."""
    return [
        {
            "project_id": project_id,
            "item_id": r.item_id,
            "model_version_id": version_id,
            "label": r.label,
            "confidence": r.confidence,
            "uncertainty": r.uncertainty,
            "flagged": r.flagged,
            "flag_reason": r.flag_reason,
            "output": r.output,
            "members": r.members,
        }
        for r in rows
    ]


def insert_prediction_rows(
    settings: Settings, project_id: int, version_id: int, rows: Sequence[PredictionRow]
) -> None:
    """Bulk-insert a version's predictions in chunks (before it becomes active), then
    write the version's queue-arrays file so that no web process decodes the rows."""
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        with session_scope(settings.db_url) as db:
            db.execute(insert(Prediction), prediction_values(project_id, version_id, part))
    try:
        write_after_insert(settings, project_id, version_id, rows)
    except Exception:  # only a speed-up: the queue decodes the rows without it
        log.exception("could not write the queue arrays of model version %s", version_id)
