"""Site administration of users."""

from __future__ import annotations

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from loupe.api.deps import AdminUser, SessionDep
from loupe.api.params import Id, Offset
from loupe.api.schemas.users import UserCreate, UserPublic, UsersPublic, UserUpdate
from loupe.db.models import SiteRole, User
from loupe.errors import ErrorCode, LoupeError
from loupe.services.auth import core as auth

router = APIRouter(prefix="/users", tags=["users"])


@router.get("", response_model=UsersPublic)
def list_users(
    _admin: AdminUser,
    db: SessionDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: Offset = 0,
) -> UsersPublic:
    rows = db.scalars(select(User).order_by(User.id).limit(limit).offset(offset)).all()
    count = db.scalar(select(func.count(User.id))) or 0
    return UsersPublic(data=[UserPublic.model_validate(u) for u in rows], count=count)


@router.post("", response_model=UserPublic, status_code=201)
def create_user(body: UserCreate, _admin: AdminUser, db: SessionDep) -> User:
    return auth.create_user(
        db, email=body.email, password=body.password, name=body.name, admin=body.admin
    )


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(user_id: Id, body: UserUpdate, admin: AdminUser, db: SessionDep) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"user {user_id} not found")
    if user.id == admin.id and (body.role == SiteRole.member.value or body.is_active is False):
        raise LoupeError(ErrorCode.CONFLICT, "you cannot demote or deactivate yourself")
    if body.name is not None:
        user.name = body.name
    if body.role is not None:
        user.role = body.role
    if body.is_active is not None:
        user.is_active = body.is_active
    if body.password is not None:
        user.password_hash = auth.hash_password(body.password)
    db.flush()
    return user
