"""Dependency-injection aliases: the seam between routes and the rest.

``SessionDep``, ``SettingsDep``, ``CurrentUser`` and ``project_dep(role)``.
Tests swap parts with ``app.dependency_overrides``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from loupe.db.models import Project, ProjectRole, User
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services.auth import core as auth
from loupe.settings import Settings, get_settings

log = logging.getLogger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLE_RANK = {
    ProjectRole.viewer.value: 0,
    ProjectRole.annotator.value: 1,
    ProjectRole.reviewer.value: 2,
    ProjectRole.owner.value: 3,
}


async def settings_dep() -> Settings:
    # async: pure, so FastAPI calls it in the event loop (no thread-pool hop per request)
    return get_settings()


SettingsDep = Annotated[Settings, Depends(settings_dep)]


def get_session(request: Request, settings: SettingsDep) -> Iterator[Session]:
    """One transaction per request: committed on success, rolled back on error."""
    with session_scope(settings.db_url, write=request.method not in SAFE_METHODS) as session:
        yield session


# scope="function": commit before the response is sent, not after it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def optional_user(request: Request, db: SessionDep, settings: SettingsDep) -> User | None:
    return authenticate(request, db, settings)


def authenticate(request: Request, db: Session, settings: Settings) -> User | None:
    """The caller from an API token or a session cookie (CSRF-checked on writes)."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        found = auth.token_user(db, header[7:].strip())
        if found is None:
            raise LoupeError(ErrorCode.UNAUTHENTICATED, "invalid or expired API token")
        user, token = found
        if auth.token_use_is_stale(token):
            _record_token_use(request, db, settings, token.id)
        return user  # tokens are not sent by browsers on their own: no CSRF check
    data = _cookie_session(request, settings)
    if data is None:
        return None
    session_user = auth.session_user(db, data)
    if session_user is None:
        return None
    _accept_session(request, data)
    return session_user


def _cookie_session(request: Request, settings: Settings) -> auth.SessionData | None:
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    if not cookie:
        return None
    assert settings.secret_key
    return auth.read_session(cookie, settings.secret_key, settings.session_max_age_s)


def _accept_session(request: Request, data: auth.SessionData) -> None:
    """Check the CSRF header of a cookie session's write; keep the session on the request."""
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(auth.CSRF_HEADER)
        if not sent or sent != data.csrf:
            raise LoupeError(
                ErrorCode.CSRF, f"missing or wrong {auth.CSRF_HEADER} header for a cookie session"
            )
    request.state.csrf = data.csrf
    request.state.session = data


def authorize_project(
    request: Request, db: Session, settings: Settings, project_id: int, min_role: ProjectRole
) -> tuple[User, Project]:
    """The caller and the project, role-checked, in as few statements as possible.

    For a cookie session (the web app) the session, the user, the project and
    the membership come back in one statement. The lean routes (a label write)
    call this inside their one worker-thread call instead of chaining the
    ``CurrentUser`` and ``*Project`` dependencies (a thread hop each). The
    answers and errors are the same as those dependencies'.
    """
    data = None if _has_bearer(request) else _cookie_session(request, settings)
    if data is None:
        user = authenticate(request, db, settings)
        if user is None:
            raise LoupeError(ErrorCode.UNAUTHENTICATED, "log in first")
        project, role = auth.project_and_role(db, project_id, user)
    else:
        found, project, role = auth.session_user_and_project(db, data, project_id)
        if found is None:
            raise LoupeError(ErrorCode.UNAUTHENTICATED, "log in first")
        _accept_session(request, data)
        user = found
    return user, _checked_project(project, role, project_id, min_role)


@contextmanager
def project_transaction(
    request: Request, settings: Settings, project_id: int, min_role: ProjectRole
) -> Iterator[tuple[Session, User, Project]]:
    """One transaction holding the role-checked caller and project (for lean routes).

    Committed when the block ends without error, before the route answers.
    """
    with session_scope(settings.db_url, write=request.method not in SAFE_METHODS) as db:
        user, project = authorize_project(request, db, settings, project_id, min_role)
        yield db, user, project


async def credentials_sent(request: Request) -> None:
    """401 before anything else when a request carries no credentials at all.

    For the lean routes, which authenticate inside their one thread-pool call:
    an anonymous caller learns nothing from body validation errors.
    """
    if not _has_bearer(request) and not request.cookies.get(auth.SESSION_COOKIE):
        raise LoupeError(ErrorCode.UNAUTHENTICATED, "log in first")


CredentialsSent = Depends(credentials_sent)
M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """A JSON body validated as FastAPI would, for routes that read it themselves."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _has_bearer(request: Request) -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _checked_project(
    project: Project | None, role: str | None, project_id: int, min_role: ProjectRole
) -> Project:
    if project is None or role is None:
        # Same answer for 'missing' and 'not yours': ids do not leak.
        raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
    require_role(role, min_role, project_id)
    return project


def require_role(role: str, min_role: ProjectRole, project_id: int | None) -> None:
    """FORBIDDEN unless ``role`` (the user's in the project) reaches ``min_role``."""
    if ROLE_RANK[role] < ROLE_RANK[min_role.value]:
        raise LoupeError(
            ErrorCode.FORBIDDEN,
            f"this needs the {min_role.value} role in project {project_id}; you are {role}",
        )


def _record_token_use(request: Request, db: Session, settings: Settings, token_id: int) -> None:
    """Write ``last_used_at``: in a write request's own transaction, else in a short one.

    A read request's transaction never writes: on SQLite upgrading a read
    snapshot to a writer fails with 'database is locked' under concurrency.
    The separate write is best effort; a busy database only skips it.
    """
    if request.method not in SAFE_METHODS:
        auth.touch_token(db, token_id)
        return
    try:
        with session_scope(settings.db_url, write=True) as own:
            auth.touch_token(own, token_id)
    except OperationalError as exc:
        log.info("token %s: last use not recorded (%s)", token_id, exc.orig)


OptionalUser = Annotated[User | None, Depends(optional_user)]


async def current_user(user: OptionalUser) -> User:
    if user is None:
        raise LoupeError(ErrorCode.UNAUTHENTICATED, "log in first")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise LoupeError(ErrorCode.FORBIDDEN, "site administrators only")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


# The caller's effective role in a project (one rule, in services.auth).
project_role = auth.project_role


ProjectIdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]


def project_dep(min_role: ProjectRole) -> Callable[..., Project]:
    """A dependency that loads ``{project_id}`` and checks the caller's role."""

    def _load(project_id: ProjectIdPath, db: SessionDep, user: CurrentUser) -> Project:
        project, role = auth.project_and_role(db, project_id, user)
        return _checked_project(project, role, project_id, min_role)

    return _load


ANNOTATOR = ProjectRole.annotator
ViewerProject = Annotated[Project, Depends(project_dep(ProjectRole.viewer))]
AnnotatorProject = Annotated[Project, Depends(project_dep(ProjectRole.annotator))]
ReviewerProject = Annotated[Project, Depends(project_dep(ProjectRole.reviewer))]
OwnerProject = Annotated[Project, Depends(project_dep(ProjectRole.owner))]
