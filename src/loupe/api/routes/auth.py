"""Register, log in and out, who am I, API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from loupe.api.deps import CurrentUser, SessionDep, SettingsDep
from loupe.api.schemas.common import Message
from loupe.api.schemas.users import (
    LoginRequest,
    SessionPublic,
    TokenCreate,
    TokenCreated,
    TokenPublic,
    TokensPublic,
    UserPublic,
    UserRegister,
)
from loupe.db.models import ApiToken
from loupe.errors import ErrorCode, LoupeError
from loupe.services.auth import core as auth
from loupe.services.auth import site
from loupe.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


def _set_session(response: Response, settings: Settings, cookie: str, csrf: str) -> None:
    common = {
        "max_age": settings.session_max_age_s,
        "secure": settings.cookie_secure,
        "samesite": "lax",
        "path": "/",
    }
    response.set_cookie(auth.SESSION_COOKIE, cookie, httponly=True, **common)  # type: ignore[arg-type]
    # Readable by the page so it can echo it in the X-CSRF-Token header.
    response.set_cookie(auth.CSRF_COOKIE, csrf, httponly=False, **common)  # type: ignore[arg-type]


@router.post("/register", response_model=SessionPublic, status_code=201)
def register(
    body: UserRegister, db: SessionDep, settings: SettingsDep, response: Response
) -> SessionPublic:
    """Create an account and log in. The first account becomes site admin."""
    first = auth.count_users(db) == 0
    if not first and not site.current(db, settings).allow_registration:
        raise LoupeError(ErrorCode.REGISTRATION_CLOSED, "registration is turned off; ask an admin")
    user = auth.create_user(
        db, email=body.email, password=body.password, name=body.name, admin=first
    )
    assert settings.secret_key
    cookie, csrf = auth.new_session(user, settings.secret_key)
    _set_session(response, settings, cookie, csrf)
    return SessionPublic(user=UserPublic.model_validate(user), csrf_token=csrf)


@router.post("/login", response_model=SessionPublic)
def login(
    body: LoginRequest, db: SessionDep, settings: SettingsDep, response: Response
) -> SessionPublic:
    user = auth.authenticate(db, body.email, body.password)
    assert settings.secret_key
    cookie, csrf = auth.new_session(user, settings.secret_key)
    _set_session(response, settings, cookie, csrf)
    return SessionPublic(user=UserPublic.model_validate(user), csrf_token=csrf)


@router.post("/logout", response_model=Message)
def logout(response: Response) -> Message:
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    response.delete_cookie(auth.CSRF_COOKIE, path="/")
    return Message(message="logged out")


@router.get("/me", response_model=SessionPublic)
def me(user: CurrentUser, request: Request) -> SessionPublic:
    csrf = getattr(request.state, "csrf", "")
    return SessionPublic(user=UserPublic.model_validate(user), csrf_token=csrf)


@router.get("/tokens", response_model=TokensPublic)
def list_tokens(user: CurrentUser, db: SessionDep) -> TokensPublic:
    rows = db.scalars(
        select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
    ).all()
    return TokensPublic(data=[TokenPublic.model_validate(r) for r in rows], count=len(rows))


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenCreate, user: CurrentUser, db: SessionDep) -> TokenCreated:
    row, secret = auth.create_token(db, user, name=body.name, expires_days=body.expires_days)
    return TokenCreated(**TokenPublic.model_validate(row).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", response_model=Message)
def delete_token(token_id: int, user: CurrentUser, db: SessionDep) -> Message:
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"token {token_id} not found")
    db.delete(row)
    return Message(message="token revoked")
