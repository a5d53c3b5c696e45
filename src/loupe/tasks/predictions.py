"""Writing a model version's predictions (shared by every kind's trainer)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import insert

from loupe.db.models import Prediction
from loupe.db.session import session_scope
from loupe.tasks.types import PredictionRow

if TYPE_CHECKING:
    from loupe.settings import Settings

INSERT_CHUNK = 2000


def insert_prediction_rows(
    settings: Settings, project_id: int, version_id: int, rows: Sequence[PredictionRow]
) -> None:
    """Bulk-insert a version's predictions in chunks (before it becomes active)."""
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        with session_scope(settings.db_url) as db:
            db.execute(
                insert(Prediction),
                [
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
                    for r in part
                ],
            )
