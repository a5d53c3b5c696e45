"""Sessions and tokens (issue 11, item 5): server-side logout, login rate limits,
registration that does not reveal accounts, token expiry, Secure cookies, CSRF on logout."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from tests.conftest import PASSWORD


def test_logout_ends_the_session_on_the_server(app: Any, make_user: Any) -> None:
    user = make_user()
    with TestClient(app) as c:
        r = c.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        saved = c.cookies.get("loupe_session")
        assert saved and c.get("/api/auth/me").status_code == 200
        out = c.post("/api/auth/logout", headers={"X-CSRF-Token": r.json()["csrf_token"]})
        assert out.status_code == 200
    with TestClient(app) as thief:  # a copy of the cookie made before the logout
        stale = thief.get("/api/auth/me", headers={"Cookie": f"loupe_session={saved}"})
        assert stale.status_code == 401


def test_logout_needs_the_csrf_header(app: Any, make_user: Any) -> None:
    user = make_user()
    with TestClient(app) as c:
        c.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        r = c.post("/api/auth/logout")
        assert r.status_code == 403 and r.json()["detail"]["code"] == "csrf_failed"
        assert c.get("/api/auth/me").status_code == 200  # still logged in


def test_failed_logins_are_rate_limited_per_account(
    app: Any, settings: Any, make_user: Any
) -> None:
    settings.login_max_failures_per_account = 3
    user = make_user()
    with TestClient(app) as c:
        for _ in range(3):
            bad = c.post("/api/auth/login", json={"email": user.email, "password": "wrong-pass"})
            assert bad.status_code == 401
        r = c.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
        assert r.status_code == 429
        assert r.json()["detail"]["code"] == "rate_limited"
        assert 0 < int(r.headers["Retry-After"]) <= settings.login_window_s
        other = make_user()  # another account from the same address still works
        ok = c.post("/api/auth/login", json={"email": other.email, "password": PASSWORD})
        assert ok.status_code == 200


def test_failed_logins_are_rate_limited_per_address(
    app: Any, settings: Any, make_user: Any
) -> None:
    settings.login_max_failures_per_address = 4
    users = [make_user() for _ in range(3)]
    with TestClient(app) as c:
        for u in users[:2]:
            for _ in range(2):
                c.post("/api/auth/login", json={"email": u.email, "password": "wrong-pass"})
        r = c.post("/api/auth/login", json={"email": users[2].email, "password": PASSWORD})
        assert r.status_code == 429 and "Retry-After" in r.headers


def test_registering_a_taken_address_looks_like_a_fresh_registration(
    client: TestClient, make_user: Any
) -> None:
    taken = make_user()
    fresh = client.post("/api/auth/register", json={"email": "new@lab.org", "password": PASSWORD})
    again = client.post(
        "/api/auth/register", json={"email": taken.email, "password": "some other pass"}
    )
    assert fresh.status_code == again.status_code == 202
    assert fresh.json() == again.json()
    assert "set-cookie" not in fresh.headers and "set-cookie" not in again.headers
    # The holder of the taken address keeps the old password.
    ok = client.post("/api/auth/login", json={"email": taken.email, "password": PASSWORD})
    assert ok.status_code == 200


def test_token_lifetime_of_zero_days_is_refused(login: Any, make_user: Any) -> None:
    c = login(make_user())
    r = c.post("/api/auth/tokens", json={"name": "t", "expires_days": 0})
    assert r.status_code == 422


def test_cookies_are_secure_over_https_or_by_setting(
    app: Any, settings: Any, make_user: Any
) -> None:
    user = make_user()
    body = {"email": user.email, "password": PASSWORD}
    with TestClient(app, base_url="https://loupe.example") as https:
        cookies = https.post("/api/auth/login", json=body).headers.get_list("set-cookie")
        assert cookies and all("Secure" in c for c in cookies)
    with TestClient(app) as http:
        cookies = http.post("/api/auth/login", json=body).headers.get_list("set-cookie")
        assert cookies and not any("Secure" in c for c in cookies)
        settings.cookie_secure = True
        cookies = http.post("/api/auth/login", json=body).headers.get_list("set-cookie")
        assert all("Secure" in c for c in cookies)
