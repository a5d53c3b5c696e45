"""Register, log in and out, who am I, API tokens."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from loupe.api.deps import CurrentUser, OptionalUser, SessionDep, SettingsDep
from loupe.api.params import Id
from loupe.api.schemas.common import ErrorResponse, Message
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
from loupe.services.auth import site, throttle
from loupe.settings import Settings

router = APIRouter(prefix="/auth", tags=["auth"])


def _set_session(
    request: Request, response: Response, settings: Settings, cookie: str, csrf: str
) -> None:
    common = {
        "max_age": settings.session_max_age_s,
        # Secure by setting, and always when the page came over HTTPS.
        "secure": settings.cookie_secure or request.url.scheme == "https",
        "samesite": "lax",
        "path": "/",
    }
    response.set_cookie(auth.SESSION_COOKIE, cookie, httponly=True, **common)  # type: ignore[arg-type]
    # Readable by the page so it can echo it in the X-CSRF-Token header.
    response.set_cookie(auth.CSRF_COOKIE, csrf, httponly=False, **common)  # type: ignore[arg-type]


def _limits(settings: Settings) -> throttle.LoginLimits:
    return throttle.LoginLimits(
        per_account=settings.login_max_failures_per_account,
        per_address=settings.login_max_failures_per_address,
        window=dt.timedelta(seconds=settings.login_window_s),
    )


REGISTERED = "registration received: log in with this e-mail address and password"


@router.post(
    "/register",
    response_model=Message,
    status_code=202,
    responses={403: {"model": ErrorResponse, "description": "Registration is turned off"}},
)
def register(body: UserRegister, db: SessionDep, settings: SettingsDep) -> Message:
    """Create an account, then log in with ``POST /auth/login``. The first account is admin.

    The answer is the same (202, the same message) whether the address was
    free or already has an account, and the password is hashed either way so
    the time taken matches too: registering never tells a stranger which
    addresses have accounts. With no e-mail to confirm an address, this is
    the sound choice: the account holder learns the outcome by logging in,
    and logins are rate limited per account and per address, so probing
    addresses costs as much as guessing passwords at the login form.
    """
    first = auth.count_users(db) == 0
    if not first and not site.current(db, settings).allow_registration:
        raise LoupeError(ErrorCode.REGISTRATION_CLOSED, "registration is turned off; ask an admin")
    if auth.find_user(db, body.email) is not None:
        auth.hash_password(body.password)  # the same work as a new account
        return Message(message=REGISTERED)
    auth.create_user(db, email=body.email, password=body.password, name=body.name, admin=first)
    return Message(message=REGISTERED)


@router.post(
    "/login",
    response_model=SessionPublic,
    responses={429: {"model": ErrorResponse, "description": "Too many failed logins"}},
)
def login(
    body: LoginRequest,
    request: Request,
    db: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> SessionPublic:
    """Log in (a session cookie plus its CSRF token); rate limited per account and address."""
    limits = _limits(settings)
    address = request.client.host if request.client else None
    throttle.check(db, body.email, address, limits)
    try:
        user = auth.authenticate(db, body.email, body.password)
    except LoupeError:
        throttle.record_failure(db, body.email, address, limits)
        db.commit()  # the failure counts although the request fails
        raise
    throttle.clear_account(db, body.email)
    assert settings.secret_key
    cookie, csrf = auth.new_session(db, user, settings.secret_key, settings.session_max_age_s)
    _set_session(request, response, settings, cookie, csrf)
    return SessionPublic(user=UserPublic.model_validate(user), csrf_token=csrf)


@router.post("/logout", response_model=Message)
def logout(request: Request, response: Response, _user: OptionalUser, db: SessionDep) -> Message:
    """End the session on the server: its cookie stops working everywhere. Needs CSRF."""
    data = getattr(request.state, "session", None)
    if isinstance(data, auth.SessionData):
        auth.end_session(db, data)
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
def delete_token(token_id: Id, user: CurrentUser, db: SessionDep) -> Message:
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"token {token_id} not found")
    db.delete(row)
    return Message(message="token revoked")
