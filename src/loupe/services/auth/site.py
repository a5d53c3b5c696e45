"""Site-wide settings an admin can change at run time.

The environment gives the default (``LOUPE_ALLOW_REGISTRATION``); a value an
admin saved in the database wins over it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from loupe.db.models import SiteSetting
from loupe.settings import Settings

REGISTRATION = "allow_registration"


@dataclass(frozen=True)
class SiteSettings:
    allow_registration: bool


def current(db: Session, settings: Settings) -> SiteSettings:
    row = db.get(SiteSetting, REGISTRATION)
    allow = bool(row.value["enabled"]) if row is not None else settings.allow_registration
    return SiteSettings(allow_registration=allow)


def update(
    db: Session, settings: Settings, *, user_id: int, allow_registration: bool | None = None
) -> SiteSettings:
    if allow_registration is not None:
        row = db.get(SiteSetting, REGISTRATION)
        if row is None:
            row = SiteSetting(key=REGISTRATION)
            db.add(row)
        row.value = {"enabled": allow_registration}
        row.updated_by = user_id
        db.flush()
    return current(db, settings)
