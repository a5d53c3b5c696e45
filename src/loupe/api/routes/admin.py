"""Site settings for administrators."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from loupe.api.deps import AdminUser, SessionDep, SettingsDep
from loupe.services.auth import site

router = APIRouter(prefix="/admin", tags=["admin"])


class SiteSettingsPublic(BaseModel):
    allow_registration: bool


class SiteSettingsUpdate(BaseModel):
    allow_registration: bool | None = None


@router.get("/settings", response_model=SiteSettingsPublic)
def get_site_settings(
    _admin: AdminUser, db: SessionDep, settings: SettingsDep
) -> SiteSettingsPublic:
    return SiteSettingsPublic(**vars(site.current(db, settings)))


@router.patch("/settings", response_model=SiteSettingsPublic)
def update_site_settings(
    body: SiteSettingsUpdate, admin: AdminUser, db: SessionDep, settings: SettingsDep
) -> SiteSettingsPublic:
    """Open or close self-service registration (the environment gives the default)."""
    new = site.update(db, settings, user_id=admin.id, allow_registration=body.allow_registration)
    return SiteSettingsPublic(**vars(new))
