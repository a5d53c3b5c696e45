"""The one rule for which model version of a project is active."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from loupe.db.models import ModelVersion


def make_active(db: Session, project_id: int, version_id: int, **values: Any) -> None:
    """Make ``version_id`` the project's only active version, setting ``values`` on it
    too (a finished training's status, metrics ...). Objects already in the session
    are updated alike (the ORM synchronises them)."""
    db.execute(
        update(ModelVersion)
        .where(ModelVersion.project_id == project_id, ModelVersion.active.is_(True))
        .values(active=False)
    )
    db.execute(
        update(ModelVersion).where(ModelVersion.id == version_id).values(active=True, **values)
    )
