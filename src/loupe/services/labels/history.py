"""An item's label history (the audit trail) with who made each change."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import AnnotationEvent, Project, User
from loupe.services.labels.core import history


def history_with_authors(
    db: Session, project: Project, item_id: int
) -> list[tuple[AnnotationEvent, str | None]]:
    """``(event, author e-mail or None)`` for each event of the item, oldest first.

    NOT_FOUND if the item is not in ``project``; None for events without a user
    (imports, models) or whose user was deleted.
    """
    events = history(db, project, item_id)
    ids = {e.user_id for e in events if e.user_id is not None}
    emails: dict[int, str] = (
        dict(db.execute(select(User.id, User.email).where(User.id.in_(ids))).all()) if ids else {}
    )
    return [(e, emails.get(e.user_id) if e.user_id is not None else None) for e in events]
