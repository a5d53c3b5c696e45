"""Users, passwords (argon2 via pwdlib), API tokens and signed session cookies."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pwdlib import PasswordHash
from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from loupe.db.models import ApiToken, Membership, Project, ProjectRole, SiteRole, User, UserSession
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


def find_user(db: Session, email: str) -> User | None:
    return db.scalar(select(User).where(User.email == normalise_email(email)))


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


# ``last_used_at`` is written at most this often per token: a write per request
# would serialise every scripted client on SQLite's single writer.
TOKEN_TOUCH_INTERVAL = dt.timedelta(minutes=5)


def token_user(db: Session, token: str) -> tuple[User, ApiToken] | None:
    """The active user and token row for a plain token secret; None if unknown or expired.

    Reads only: call :func:`touch_token` (in a write transaction) to record the use.
    """
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(token)))
    if row is None or (row.expires_at is not None and row.expires_at < utcnow()):
        return None
    user = db.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return user, row


def token_use_is_stale(row: ApiToken) -> bool:
    """True when ``last_used_at`` is older than :data:`TOKEN_TOUCH_INTERVAL` (or unset)."""
    return row.last_used_at is None or row.last_used_at < utcnow() - TOKEN_TOUCH_INTERVAL


def touch_token(db: Session, token_id: int) -> None:
    """Record a use of a token unless one was recorded within the interval."""
    now = utcnow()
    db.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(
                ApiToken.last_used_at.is_(None),
                ApiToken.last_used_at < now - TOKEN_TOUCH_INTERVAL,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


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
    # The random id of the server-side session row (UserSession): logout deletes it.
    session_id: str


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="loupe-session")


def _fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def _session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_session(db: Session, user: User, secret_key: str, max_age_s: int) -> tuple[str, str]:
    """Start a server-side session; return (signed cookie value, csrf token).

    The cookie is only valid while its ``UserSession`` row exists: logging
    out deletes the row, so a copy of the cookie stops working too.
    """
    now = utcnow()
    session_id = secrets.token_urlsafe(32)
    db.execute(
        delete(UserSession).where(UserSession.user_id == user.id, UserSession.expires_at < now)
    )
    db.add(
        UserSession(
            id_hash=_session_digest(session_id),
            user_id=user.id,
            created_at=now,
            expires_at=now + dt.timedelta(seconds=max_age_s),
        )
    )
    db.flush()
    csrf = secrets.token_urlsafe(24)
    payload: dict[str, Any] = {"u": user.id, "c": csrf, "f": _fingerprint(user), "s": session_id}
    return _serializer(secret_key).dumps(payload), csrf


def read_session(value: str, secret_key: str, max_age_s: int) -> SessionData | None:
    try:
        payload = _serializer(secret_key).loads(value, max_age=max_age_s)
    except (BadSignature, SignatureExpired):
        return None
    if not isinstance(payload, dict) or not {"u", "c", "f", "s"} <= payload.keys():
        return None
    return SessionData(
        user_id=int(payload["u"]),
        csrf=str(payload["c"]),
        fingerprint=str(payload["f"]),
        session_id=str(payload["s"]),
    )


def session_user(db: Session, data: SessionData) -> User | None:
    """The session's user, or None if it was logged out, expired or the password changed."""
    found = db.execute(
        select(UserSession, User)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.id_hash == _session_digest(data.session_id))
    ).first()  # one statement: this runs on every request
    if found is None:
        return None
    row, user = found
    if row.user_id != data.user_id or row.expires_at < utcnow():
        return None
    if not user.is_active or _fingerprint(user) != data.fingerprint:
        return None
    return user


# Built once (the label path runs it on every submit): binding values is all
# that is left per request.
_SESSION_USER_PROJECT = (
    select(UserSession, User, Project, Membership.role)
    .select_from(UserSession)
    .join(User, User.id == UserSession.user_id)
    .outerjoin(Project, Project.id == bindparam("project_id"))
    .outerjoin(
        Membership,
        and_(Membership.project_id == Project.id, Membership.user_id == User.id),
    )
    .where(UserSession.id_hash == bindparam("digest"))
)


def session_user_and_project(
    db: Session, data: SessionData, project_id: int
) -> tuple[User | None, Project | None, str | None]:
    """The session's user, a project and the user's role in it, in one statement.

    The hot write paths (a label) run this instead of :func:`session_user` plus
    :func:`project_and_role`. ``(None, None, None)`` when the session is not
    valid; ``(user, None, None)`` when the project does not exist.
    """
    found = db.execute(
        _SESSION_USER_PROJECT,
        {"digest": _session_digest(data.session_id), "project_id": project_id},
    ).first()
    if found is None:
        return None, None, None
    row, user, project, role = found
    if row.user_id != data.user_id or row.expires_at < utcnow():
        return None, None, None
    if not user.is_active or _fingerprint(user) != data.fingerprint:
        return None, None, None
    if project is None:
        return user, None, None
    return user, project, effective_role(user, role)


def end_session(db: Session, data: SessionData) -> None:
    """Log out: delete the server-side session (every copy of its cookie stops working)."""
    db.execute(delete(UserSession).where(UserSession.id_hash == _session_digest(data.session_id)))


def effective_role(user: User, membership_role: str | None) -> str | None:
    """The one rule for a caller's role in a project: site admins act as owners."""
    return ProjectRole.owner.value if user.is_admin else membership_role


def project_role(db: Session, project: Project, user: User) -> str | None:
    """The user's effective role in ``project`` (None: not a member)."""
    if user.is_admin:
        return effective_role(user, None)
    role = db.scalar(
        select(Membership.role).where(
            Membership.project_id == project.id, Membership.user_id == user.id
        )
    )
    return effective_role(user, role)


def project_and_role(db: Session, project_id: int, user: User) -> tuple[Project | None, str | None]:
    """The project and the user's effective role in it, in one statement.

    Site admins act as owners. ``(None, None)`` when the project does not exist.
    """
    found = db.execute(
        select(Project, Membership.role)
        .outerjoin(
            Membership,
            and_(Membership.project_id == Project.id, Membership.user_id == user.id),
        )
        .where(Project.id == project_id)
    ).first()
    if found is None:
        return None, None
    project, role = found
    return project, effective_role(user, role)
