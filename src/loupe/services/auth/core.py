"""Users, passwords (argon2 via pwdlib), API tokens and signed session cookies."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pwdlib import PasswordHash
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import ApiToken, SiteRole, User
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError

_hasher = PasswordHash.recommended()  # argon2id with current OWASP parameters
TOKEN_PREFIX = "lp_"
MIN_PASSWORD_LEN = 8
# Verifying against a dummy hash when the user is unknown keeps login timing flat.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str) -> bool:
    return _hasher.verify(password, password_hash)


def normalise_email(email: str) -> str:
    return email.strip().lower()


def create_user(
    db: Session, *, email: str, password: str, name: str = "", admin: bool = False
) -> User:
    email = normalise_email(email)
    if "@" not in email or len(email) > 320:
        raise LoupeError(ErrorCode.INVALID, f"{email!r} is not an e-mail address")
    if len(password) < MIN_PASSWORD_LEN:
        raise LoupeError(
            ErrorCode.INVALID, f"password must have at least {MIN_PASSWORD_LEN} characters"
        )
    if db.scalar(select(User.id).where(User.email == email)) is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"a user with e-mail {email!r} already exists")
    user = User(
        email=email,
        name=name or email.split("@")[0],
        password_hash=hash_password(password),
        role=SiteRole.admin.value if admin else SiteRole.member.value,
    )
    db.add(user)
    db.flush()
    return user


def count_users(db: Session) -> int:
    return db.scalar(select(func.count(User.id))) or 0


def authenticate(db: Session, email: str, password: str) -> User:
    user = db.scalar(select(User).where(User.email == normalise_email(email)))
    if user is None:
        verify_password(password, _DUMMY_HASH)
        raise LoupeError(ErrorCode.UNAUTHENTICATED, "wrong e-mail or password")
    valid, updated = _hasher.verify_and_update(password, user.password_hash)
    if not valid or not user.is_active:
        raise LoupeError(ErrorCode.UNAUTHENTICATED, "wrong e-mail or password")
    if updated is not None:  # parameters changed since it was hashed
        user.password_hash = updated
    user.last_login_at = utcnow()
    return user


# --- API tokens -----------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    db: Session, user: User, *, name: str, expires_days: int | None = None
) -> tuple[ApiToken, str]:
    """Create a token; the plain secret is returned once and never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=expires_days) if expires_days else None
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=_token_digest(secret),
        prefix=secret[:10],
        expires_at=expires,
    )
    db.add(row)
    db.flush()
    return row, secret


def user_for_token(db: Session, token: str) -> User | None:
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(token)))
    if row is None or (row.expires_at is not None and row.expires_at < utcnow()):
        return None
    user = db.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    row.last_used_at = utcnow()
    return user


# --- Session cookies --------------------------------------------------------------

SESSION_COOKIE = "loupe_session"
CSRF_COOKIE = "loupe_csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True)
class SessionData:
    user_id: int
    csrf: str
    # Part of the password hash: changing the password logs out other sessions.
    fingerprint: str


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="loupe-session")


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def new_session(user: User, secret_key: str) -> tuple[str, str]:
    """Return (signed cookie value, csrf token) for a freshly logged-in user."""
    csrf = secrets.token_urlsafe(24)
    payload: dict[str, Any] = {"u": user.id, "c": csrf, "f": _fingerprint(user)}
    return _serializer(secret_key).dumps(payload), csrf


def read_session(value: str, secret_key: str, max_age_s: int) -> SessionData | None:
    try:
        payload = _serializer(secret_key).loads(value, max_age=max_age_s)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict) or not {"u", "c", "f"} <= payload.keys():
        return None
    return SessionData(user_id=int(payload["u"]), csrf=str(payload["c"]), fingerprint=payload["f"])


def session_user(db: Session, data: SessionData) -> User | None:
    user = db.get(User, data.user_id)
    if user is None or not user.is_active or _fingerprint(user) != data.fingerprint:
        return None
    return user
