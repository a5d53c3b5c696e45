"""Database hardening: concurrent clients, transient errors, out-of-range values.

Issue 11, item 4. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from loupe.db.models import ApiToken

N_CLIENTS = 8
N_REQUESTS = 12


def _token(client: TestClient) -> str:
    r = client.post("/api/auth/tokens", json={"name": "script"})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_eight_token_clients_labelling_at_once_get_no_5xx(
    app: Any, login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner, settings_={"retrain_every": 0})
    items = [make_item(project) for _ in range(N_CLIENTS * 2)]
    owner_client = login(owner)
    tokens = [_token(owner_client) for _ in range(N_CLIENTS)]
    statuses: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(N_CLIENTS)

    def work(n: int) -> None:
        c = TestClient(
            app,
            headers={"Authorization": f"Bearer {tokens[n]}"},
            raise_server_exceptions=False,
        )
        start.wait()
        mine = items[2 * n : 2 * n + 2]
        for k in range(N_REQUESTS):
            item = mine[k % 2]
            base = f"/api/projects/{project.id}/items/{item.id}"
            got = [
                c.put(base + "/label", json={"kind": "class", "label": "neutrophil"}).status_code,
                c.get(base).status_code,
                c.get(f"/api/projects/{project.id}/items?limit=5").status_code,
            ]
            with lock:
                statuses.extend(got)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    server_errors = [s for s in statuses if s >= 500]
    assert len(statuses) == N_CLIENTS * N_REQUESTS * 3
    assert server_errors == [], f"{len(server_errors)} 5xx of {len(statuses)}"
    assert set(statuses) == {200}


def test_token_last_used_is_written_rarely_and_not_by_reads(
    client: TestClient, login: Any, make_user: Any, db: Any
) -> None:
    c = login(make_user())
    token = _token(c)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/auth/me", headers=headers).status_code == 200
    first = db.scalar(select(ApiToken.last_used_at))
    assert first is not None  # the first use is recorded
    db.rollback()
    client.post("/api/auth/tokens", json={"name": "x"}, headers=headers)
    client.get("/api/auth/me", headers=headers)
    db.rollback()
    assert db.scalar(select(ApiToken.last_used_at).where(ApiToken.id == 1)) == first


def test_transient_database_errors_are_503_with_retry_after(app: Any, make_user: Any) -> None:
    from sqlalchemy.exc import OperationalError

    from loupe.api.deps import get_session

    def locked() -> Any:
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))
        yield  # pragma: no cover

    app.dependency_overrides[get_session] = locked
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/projects")
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    assert r.json()["detail"]["code"] == "unavailable"


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/{p}/items/9223372036854775808",
        "/api/projects/{p}/items/9223372036854775808/label/../history",
        "/api/projects/{p}/items?offset=1000000000000000000000000000000",
        "/api/projects/{p}/items?case_id=9223372036854775808",
        "/api/projects/{p}/items?after_id=9223372036854775808",
        "/api/projects/9223372036854775808",
        "/api/projects/{p}/cases/9223372036854775808",
        "/api/projects/{p}/versions/9223372036854775808",
        "/api/jobs/9223372036854775808",
        "/api/projects/{p}/jobs?offset=1000000000000000000000000000000",
        "/api/users?offset=1000000000000000000000000000000",
    ],
)
def test_ids_and_offsets_beyond_the_column_range_are_422(
    path: str, login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user(admin=True)
    project = make_project(owner)
    c = login(owner)
    r = c.get(path.replace("{p}", str(project.id)))
    assert r.status_code == 422, r.text


def test_big_ids_in_bodies_are_422(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    item = make_item(project)
    c = login(owner)
    body = {"item_ids": [2**63], "kind": "skip"}
    assert c.post(f"/api/projects/{project.id}/labels/batch", json=body).status_code == 422
    url = f"/api/projects/{project.id}/items/{item.id}/label"
    assert c.put(url, json={"kind": "skip", "version": 2**63}).status_code == 422


def test_nul_and_overlong_text_are_422(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    item = make_item(project)
    c = login(owner)
    url = f"/api/projects/{project.id}/items/{item.id}/label"
    assert c.put(url, json={"kind": "skip", "note": "a\x00b"}).status_code == 422
    r = c.put(url, json={"kind": "class", "label": "x" * 300})
    assert r.status_code == 422
    r = c.post(
        "/api/projects",
        json={"name": "n\x00", "task": "classify", "schema": {"classes": [{"name": "a"}]}},
    )
    assert r.status_code == 422
    r = c.post(
        "/api/projects",
        json={"name": "n" * 201, "task": "classify", "schema": {"classes": [{"name": "a"}]}},
    )
    assert r.status_code == 422
    r = c.patch(f"/api/projects/{project.id}/cases/1", json={"name": "c" * 400})
    assert r.status_code in (404, 422)


def test_two_first_labels_at_once_give_one_win_and_one_409(
    settings: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    """The second insert of an item's first label hits the unique constraint: 409."""
    from loupe.db.models import Project
    from loupe.db.session import session_factory
    from loupe.errors import ErrorCode, LoupeError
    from loupe.services.labels import core as labels

    owner = make_user()
    project = make_project(owner)
    item = make_item(project)
    value = labels.LabelValue(kind="class", label="neutrophil")
    first = session_factory(settings.db_url, write=True)()
    second = session_factory(settings.db_url, write=True)()
    outcome: list[Any] = []
    try:
        labels.set_label(first, first.get(Project, project.id), item.id, value, user_id=owner.id)

        def race() -> None:
            try:
                p = second.get(Project, project.id)
                labels.set_label(second, p, item.id, value, user_id=owner.id, expected_version=0)
                second.commit()
                outcome.append("ok")
            except LoupeError as exc:
                second.rollback()
                outcome.append(exc.code)
            except Exception as exc:  # the bug: an IntegrityError leaks as a 500
                second.rollback()
                outcome.append(type(exc).__name__)

        t = threading.Thread(target=race)
        t.start()
        t.join(0.5)  # the second writer now waits on the first one's lock
        first.commit()
        t.join(30)
    finally:
        first.close()
        second.close()
    assert outcome == [ErrorCode.STALE_VERSION]


def test_http_race_for_the_first_label_gives_200_and_409(
    app: Any, login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner, settings_={"retrain_every": 0})
    c = login(owner)
    token = _token(c)
    for _ in range(3):
        item = make_item(project)
        url = f"/api/projects/{project.id}/items/{item.id}/label"
        barrier = threading.Barrier(2)
        got: list[int] = []

        def put(
            label: str, url: str = url, barrier: threading.Barrier = barrier, got: list[int] = got
        ) -> None:
            tc = TestClient(
                app, headers={"Authorization": f"Bearer {token}"}, raise_server_exceptions=False
            )
            barrier.wait()
            r = tc.put(url, json={"kind": "class", "label": label, "version": 0})
            got.append(r.status_code)

        threads = [threading.Thread(target=put, args=(x,)) for x in ("neutrophil", "monocyte")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == [200, 409]


def test_overlong_or_nul_case_names_in_uploads_are_422_without_orphan_files(
    login: Any, make_user: Any, make_project: Any, settings: Any
) -> None:
    import io

    import numpy as np
    from PIL import Image

    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
    for case in ("c" * 400, "a\x00b"):
        r = c.post(
            f"/api/projects/{project.id}/uploads",
            files=[("files", ("x.png", buf.getvalue(), "image/png"))],
            data={"case": case},
        )
        assert r.status_code == 422, r.text
        assert [p for p in settings.media_dir.rglob("*") if p.is_file()] == []
