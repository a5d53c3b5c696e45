"""Shared fixtures: a fresh real database per test (SQLite and PostgreSQL),
a TestClient on the real app, and factories for users and projects.

Every API test runs twice: ``[sqlite]`` and ``[postgres]``. Each test gets a
database of its own, cloned from a migrated template (no shared mutable DB).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from loupe.plugins import load_plugins

PG_ADMIN_URL = os.environ.get(
    "LOUPE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PASSWORD = "correct horse battery"

# Every test process has the built-in plug-ins, as the app, the CLI and the worker do.
load_plugins()


# `make test` (and so CI) sets this: a test that skips (a missing package, server or
# tool) fails instead, so that a broken set-up can never pass as green.
STRICT_SKIPS = os.environ.get("LOUPE_STRICT_SKIPS") == "1"


def _strict(report: Any) -> None:
    if STRICT_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and LOUPE_STRICT_SKIPS=1 (make test) forbids it: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _strict(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _strict(outcome.get_result())


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from loupe.db.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    from loupe.db.migrate import upgrade

    name = f"loupe_tpl_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    upgrade(_pg_url(name))
    from loupe.db.session import get_engine

    get_engine(_pg_url(name)).dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "loupe.db"
        shutil.copy(template, path)
        yield f"sqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("pg_template")
    name = f"loupe_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    url = _pg_url(name)
    yield url
    from loupe.db.session import get_engine

    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Settings for one test, also exported as LOUPE_* so jobs and the CLI see them."""
    from loupe.settings import Settings, get_settings

    home = tmp_path / "home"
    env = {
        "LOUPE_HOME": str(home),
        "LOUPE_DATABASE_URL": db_url,
        "LOUPE_SECRET_KEY": "test-secret-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "LOUPE_TESTING": "1",
        "LOUPE_JOBS_IMMEDIATE": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("LOUPE_QUEUE_URL", raising=False)
    get_settings.cache_clear()
    s = Settings()
    s.ensure_dirs()
    yield s
    get_settings.cache_clear()


@pytest.fixture
def app(settings: Any) -> Any:
    from loupe.api.app import create_app
    from loupe.api.deps import settings_dep

    application = create_app(settings, migrate=False)
    application.dependency_overrides[settings_dep] = lambda: settings
    return application


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture
def db(settings: Any) -> Iterator[Any]:
    """A session on the test database, for arranging and checking rows."""
    from loupe.db.session import session_factory

    session = session_factory(settings.db_url, write=True)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@pytest.fixture
def make_user(settings: Any) -> Callable[..., Any]:
    from loupe.db.session import session_scope
    from loupe.services.auth import core as auth

    def _make(email: str | None = None, *, admin: bool = False, password: str = PASSWORD) -> Any:
        with session_scope(settings.db_url) as s:
            user = auth.create_user(
                s,
                email=email or f"u{uuid.uuid4().hex[:8]}@example.org",
                password=password,
                admin=admin,
            )
        return user

    return _make


@pytest.fixture
def login(app: Any) -> Callable[..., TestClient]:
    """Return a new client logged in as ``user`` (cookie session + CSRF header)."""
    clients: list[TestClient] = []

    def _login(user: Any, password: str = PASSWORD) -> TestClient:
        c = TestClient(app)
        c.__enter__()
        clients.append(c)
        r = c.post("/api/auth/login", json={"email": user.email, "password": password})
        assert r.status_code == 200, r.text
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    yield _login
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def make_project(settings: Any) -> Callable[..., Any]:
    from loupe.db.session import session_scope
    from loupe.services.projects import core as projects

    def _make(
        owner: Any,
        *,
        task: str = "classify",
        schema: dict[str, Any] | None = None,
        name: str | None = None,
        settings_: dict[str, Any] | None = None,
    ) -> Any:
        if schema is None:
            schema = (
                {
                    "metrics": [
                        {"name": "fibrosis", "min": 0, "max": 4, "step": 1},
                        {"name": "atrophy", "min": 0, "max": 4, "step": 1},
                    ]
                }
                if task == "score"
                else {
                    "classes": [
                        {"name": "neutrophil"},
                        {"name": "lymphocyte"},
                        {"name": "monocyte"},
                    ]
                }
            )
        with session_scope(settings.db_url) as s:
            return projects.create_project(
                s,
                name=name or f"p-{uuid.uuid4().hex[:8]}",
                task=task,
                schema=schema,
                owner_id=owner.id,
                settings=settings_ or {},
            )

    return _make


@pytest.fixture
def make_item(settings: Any, tmp_path: Path) -> Callable[..., Any]:
    """Insert an item backed by a real PNG file (no ingest pipeline involved)."""
    import hashlib

    import numpy as np
    from PIL import Image

    from loupe.db.models import Item
    from loupe.db.session import session_scope

    counter = iter(range(1, 1_000_000))

    def _make(project: Any, *, case_id: int | None = None, name: str | None = None) -> Any:
        n = next(counter)
        path = tmp_path / "items" / (name or f"img_{n:05d}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(n)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with session_scope(settings.db_url) as s:
            item = Item(
                project_id=project.id,
                case_id=case_id,
                sha256=digest,
                uri=str(path),
                filename=path.name,
                format="png",
                shape=[32, 32, 3],
                axes="YXC",
                size_bytes=path.stat().st_size,
            )
            s.add(item)
            s.flush()
        return item

    return _make
