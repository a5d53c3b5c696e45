"""Walk every route in the OpenAPI schema as anonymous, as a non-member and as
a viewer: nothing of the owner's project leaks, and no write succeeds."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from loupe.db.models import Base, Job, ModelVersion, Prediction

SECRET_PROJECT = "Secret Ward 7"
SECRET_FILE = "patient-secret-0042.png"
# Routes anyone may call (they only touch the caller's own session).
PUBLIC = {
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/logout"),
    ("GET", "/api/info"),
    ("GET", "/api/health"),
}
# Reads sent as POST (a query in the body): a viewer may call them, nothing is written.
READS_BY_POST = {
    ("POST", "/api/projects/{project_id}/similar"),
    ("POST", "/api/projects/{project_id}/items/by-ids"),
}
# Routes that take a signed URL instead of a session: 403 without the signature.
SIGNED = {("GET", "/api/thumbs/{sha256}.jpg")}
# Routes any logged-in user may call for themselves (they create or read only
# the caller's own things).
SELF_SERVICE = {
    ("GET", "/api/auth/me"),
    ("GET", "/api/auth/tokens"),
    ("POST", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/{token_id}"),
    ("GET", "/api/projects"),
    ("POST", "/api/projects"),
    ("GET", "/api/reports/mine"),
    ("POST", "/api/projects/import-dataset"),
}


def _routes(app: Any) -> list[tuple[str, str]]:
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method in ops:
            out.append((method.upper(), path))
    return sorted(out)


def _snapshot(db: Any) -> dict[str, Any]:
    db.rollback()
    snap: dict[str, Any] = {}
    for table in Base.metadata.sorted_tables:
        snap[table.name] = db.scalar(select(func.count()).select_from(table))
    snap["annotations"] = db.execute(text("SELECT item_id, version FROM annotations")).all()
    snap["projects_rows"] = db.execute(text("SELECT id, name, settings FROM projects")).all()
    snap["roles"] = db.execute(text("SELECT project_id, user_id, role FROM memberships")).all()
    snap["jobs_rows"] = db.execute(text("SELECT id, status, attempts FROM jobs")).all()
    snap["cases_rows"] = db.execute(text("SELECT id, name, status FROM cases")).all()
    snap["users_rows"] = db.execute(
        text("SELECT id, role, is_active, password_hash FROM users")
    ).all()
    db.rollback()  # end the read: on SQLite this session would hold the write lock
    return snap


def _world(make_user: Any, make_project: Any, make_item: Any, db: Any, login: Any) -> Any:
    from loupe.db.types import utcnow
    from loupe.services.labels.core import LabelValue, set_label
    from loupe.services.projects.core import add_member, get_or_create_case

    owner = make_user("owner-secret@example.org")
    viewer = make_user()
    stranger = make_user()
    project = make_project(owner, name=SECRET_PROJECT)
    case = get_or_create_case(db, project.id, "S-SECRET-CASE")
    db.commit()
    item = make_item(project, case_id=case.id, name=SECRET_FILE)
    set_label(db, project, item.id, LabelValue(kind="class", label="neutrophil"), user_id=owner.id)
    add_member(db, project, email=viewer.email, role="viewer")
    job = Job(
        project_id=project.id,
        kind="selftest",
        status="done",
        progress=1.0,
        message="secret-job-message",
        created_by=owner.id,
        finished_at=utcnow(),
    )
    db.add(job)
    version = ModelVersion(
        project_id=project.id,
        number=1,
        status="ready",
        active=True,
        members=["classic"],
        metrics={"note": "secret-metrics"},
    )
    db.add(version)
    db.flush()
    db.add(
        Prediction(
            project_id=project.id,
            item_id=item.id,
            model_version_id=version.id,
            label="monocyte",
            confidence=0.9,
            output={"probs": {"monocyte": 0.9}},
        )
    )
    db.commit()
    from loupe.services.reports.core import generate_case_report
    from loupe.settings import get_settings

    report = generate_case_report(get_settings(), project.id, case.id, owner.id)
    owner_client = login(owner)
    token_id = owner_client.post("/api/auth/tokens", json={"name": "secret-token"}).json()["id"]
    ids = {
        "project_id": project.id,
        "item_id": item.id,
        "case_id": case.id,
        "job_id": job.id,
        "user_id": owner.id,
        "token_id": token_id,
        "version_id": version.id,
        "sha256": item.sha256,
        "report_id": report.id,
        "level": 0,
        "col": 0,
        "row": 0,
    }
    return owner, viewer, stranger, ids


def _fill(path: str, ids: dict[str, int]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        assert name in ids, f"the walk does not know path parameter {{{name}}} ({path})"
        return str(ids[name])

    return re.sub(r"\{(\w+)\}", sub, path)


def _call(client: TestClient, method: str, url: str) -> Any:
    if method in ("GET", "DELETE"):
        return client.request(method, url)
    return client.request(method, url, json={})


def _assert_no_leak(method: str, path: str, r: Any) -> None:
    for marker in (
        SECRET_PROJECT,
        SECRET_FILE,
        "owner-secret@",
        "S-SECRET-CASE",
        "secret-job-message",
        "secret-token",
        "secret-metrics",
    ):
        assert marker not in r.text, f"{method} {path} leaked {marker!r}: {r.text[:200]}"


def test_anonymous_gets_401_everywhere_but_public_routes(
    app: Any, make_user: Any, make_project: Any, make_item: Any, db: Any, login: Any
) -> None:
    _, _, _, ids = _world(make_user, make_project, make_item, db, login)
    before = _snapshot(db)
    routes = _routes(app)
    assert len(routes) > 25
    with TestClient(app) as anon:
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            r = _call(anon, method, _fill(path, ids))
            if (method, path) in SIGNED:
                assert r.status_code == 403, f"{path} without a signature -> {r.status_code}"
                continue
            assert r.status_code == 401, f"{method} {path} -> {r.status_code} {r.text[:200]}"
            _assert_no_leak(method, path, r)
    assert _snapshot(db) == before


def test_non_member_sees_nothing_and_changes_nothing(
    app: Any, make_user: Any, make_project: Any, make_item: Any, db: Any, login: Any
) -> None:
    _, _, stranger, ids = _world(make_user, make_project, make_item, db, login)
    c = login(stranger)
    before = _snapshot(db)
    for method, path in _routes(app):
        if (method, path) in PUBLIC or (method, path) in SELF_SERVICE:
            continue
        r = _call(c, method, _fill(path, ids))
        assert r.status_code in (403, 404), f"{method} {path} -> {r.status_code} {r.text[:200]}"
        _assert_no_leak(method, path, r)
    # self-service reads list only the stranger's own things
    for path in ("/api/projects", "/api/auth/tokens", "/api/auth/me"):
        r = c.get(path)
        assert r.status_code == 200
        _assert_no_leak("GET", path, r)
    assert _snapshot(db) == before


def test_viewer_can_read_but_every_write_is_refused(
    app: Any, make_user: Any, make_project: Any, make_item: Any, db: Any, login: Any
) -> None:
    _, viewer, _, ids = _world(make_user, make_project, make_item, db, login)
    c = login(viewer)
    before = _snapshot(db)
    writes = 0
    for method, path in _routes(app):
        if (method, path) in PUBLIC or (method, path) in SELF_SERVICE:
            continue
        url = _fill(path, ids)
        if method == "GET":
            r = c.get(url)
            if "/projects/" in path:
                # 409: let in, but the project lacks what the read needs (e.g. no features
                # yet for similar images); never 401/403/404 for a member
                assert r.status_code in (200, 409), f"viewer cannot read {path}: {r.text[:200]}"
            else:
                assert r.status_code in (200, 403, 404), f"{path} -> {r.status_code}"
            continue
        if (method, path) in READS_BY_POST:
            r = c.post(url, json={"item_ids": [ids["item_id"]]})
            assert r.status_code in (200, 409), f"viewer cannot read {path}: {r.text[:200]}"
            continue
        writes += 1
        r = _call(c, method, url)
        assert r.status_code in (403, 404), f"viewer {method} {path} -> {r.status_code} {r.text}"
    assert writes >= 10
    assert _snapshot(db) == before
