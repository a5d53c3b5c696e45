"""Registration, login, sessions, CSRF and API tokens on the real app."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.conftest import PASSWORD


def test_first_user_is_admin_and_later_ones_are_members(client: TestClient) -> None:
    r1 = client.post("/api/auth/register", json={"email": "A@Lab.org", "password": PASSWORD})
    assert r1.status_code == 202, r1.text
    me = client.post("/api/auth/login", json={"email": "a@lab.org", "password": PASSWORD})
    assert me.json()["user"]["role"] == "admin"
    assert me.json()["user"]["email"] == "a@lab.org"
    r2 = client.post("/api/auth/register", json={"email": "b@lab.org", "password": PASSWORD})
    assert r2.status_code == 202
    me = client.post("/api/auth/login", json={"email": "b@lab.org", "password": PASSWORD})
    assert me.json()["user"]["role"] == "member"


def test_password_is_argon2_hashed(client: TestClient, db: Any) -> None:
    from sqlalchemy import select

    from loupe.db.models import User

    client.post("/api/auth/register", json={"email": "h@lab.org", "password": PASSWORD})
    stored = db.scalar(select(User.password_hash).where(User.email == "h@lab.org"))
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_login_sets_httponly_lax_cookie_and_wrong_password_fails(
    client: TestClient, make_user: Any
) -> None:
    user = make_user("c@lab.org")
    bad = client.post("/api/auth/login", json={"email": user.email, "password": "nope-nope"})
    assert bad.status_code == 401
    assert bad.json()["detail"]["code"] == "unauthenticated"
    r = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert r.status_code == 200
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("loupe_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session
    me = client.get("/api/auth/me")
    assert me.status_code == 200 and me.json()["user"]["email"] == "c@lab.org"
    assert me.json()["csrf_token"] == r.json()["csrf_token"]


def test_cookie_writes_need_the_csrf_header(client: TestClient, make_user: Any) -> None:
    user = make_user()
    r = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    csrf = r.json()["csrf_token"]
    body = {"name": "p1", "task": "classify", "schema": {"classes": [{"name": "a"}, {"name": "b"}]}}
    no_header = client.post("/api/projects", json=body)
    assert no_header.status_code == 403
    assert no_header.json()["detail"]["code"] == "csrf_failed"
    wrong = client.post("/api/projects", json=body, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    ok = client.post("/api/projects", json=body, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 201, ok.text


def test_logout_ends_the_session(client: TestClient, make_user: Any) -> None:
    user = make_user()
    r = client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    client.post("/api/auth/logout", headers={"X-CSRF-Token": r.json()["csrf_token"]})
    assert client.get("/api/auth/me").status_code == 401
    assert r.status_code == 200


def test_tampered_cookie_is_rejected(client: TestClient, make_user: Any) -> None:
    user = make_user()
    client.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    value = client.cookies.get("loupe_session")
    assert value
    tampered = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    client.cookies.clear()
    r = client.get("/api/auth/me", headers={"Cookie": f"loupe_session={tampered}"})
    assert r.status_code == 401
    ok = client.get("/api/auth/me", headers={"Cookie": f"loupe_session={value}"})
    assert ok.status_code == 200


def test_api_token_works_without_csrf_and_can_be_revoked(
    app: Any, login: Any, make_user: Any
) -> None:
    user = make_user()
    c = login(user)
    r = c.post("/api/auth/tokens", json={"name": "script"})
    assert r.status_code == 201
    token = r.json()["token"]
    assert token.startswith("lp_")
    assert "token" not in c.get("/api/auth/tokens").json()["data"][0]
    with TestClient(app) as script:
        h = {"Authorization": f"Bearer {token}"}
        body = {
            "name": "via-token",
            "task": "score",
            "schema": {"metrics": [{"name": "fibrosis", "min": 0, "max": 4, "step": 1}]},
        }
        created = script.post("/api/projects", json=body, headers=h)
        assert created.status_code == 201, created.text
        c.delete(f"/api/auth/tokens/{r.json()['id']}")
        assert script.get("/api/projects", headers=h).status_code == 401
        bogus = script.get("/api/projects", headers={"Authorization": "Bearer lp_nope"})
        assert bogus.status_code == 401


def test_registration_can_be_turned_off(client: TestClient, settings: Any, make_user: Any) -> None:
    make_user()
    settings.allow_registration = False
    r = client.post("/api/auth/register", json={"email": "x@lab.org", "password": PASSWORD})
    assert r.status_code == 403
    assert r.json()["detail"]["code"] == "registration_closed"


def test_password_change_by_admin_logs_out_old_sessions(login: Any, make_user: Any) -> None:
    admin = make_user(admin=True)
    user = make_user()
    c_user = login(user)
    c_admin = login(admin)
    assert c_user.get("/api/auth/me").status_code == 200
    r = c_admin.patch(f"/api/users/{user.id}", json={"password": "another secret!"})
    assert r.status_code == 200
    assert c_user.get("/api/auth/me").status_code == 401


def test_admin_turns_registration_off_and_on(app: Any, login: Any, make_user: Any) -> None:
    admin, member = make_user(admin=True), make_user()
    c = login(admin)
    assert c.get("/api/admin/settings").json() == {"allow_registration": True}
    assert login(member).patch("/api/admin/settings", json={}).status_code == 403
    r = c.patch("/api/admin/settings", json={"allow_registration": False})
    assert r.status_code == 200 and r.json() == {"allow_registration": False}
    with TestClient(app) as anon:
        info = anon.get("/api/info").json()
        assert info["allow_registration"] is False and info["has_users"] is True
        closed = anon.post("/api/auth/register", json={"email": "n@lab.org", "password": PASSWORD})
        assert closed.status_code == 403
        c.patch("/api/admin/settings", json={"allow_registration": True})
        opened = anon.post("/api/auth/register", json={"email": "n@lab.org", "password": PASSWORD})
        assert opened.status_code == 202
