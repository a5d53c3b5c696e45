"""Sessions in the browser: login errors, coming back after login, registration,
a lost session that keeps the page, and projects private to their members."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def _project(live_server: Any, who: str = "alice") -> tuple[Any, int, str]:
    api = live_server.client(who)
    name = f"Private {uuid.uuid4().hex[:6]}"
    r = api.post(
        "/api/projects",
        json={
            "name": name,
            "task": "classify",
            "schema": {"classes": [{"name": "a"}, {"name": "b"}]},
        },
    )
    r.raise_for_status()
    return api, int(r.json()["id"]), name


def test_login_error_then_back_to_the_page_asked_for(page: Any, live_server: Any) -> None:
    _, pid, name = _project(live_server)
    page.goto(f"/projects/{pid}?status=unlabelled")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Email").fill(live_server.users["alice"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text(re.compile("password|e-mail|email", re.I))
    page.get_by_label("Password").fill("e2e correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(rf"/projects/{pid}\?status=unlabelled$"))
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.get_by_label("Status filter")).to_have_value("unlabelled")


def test_second_user_cannot_see_the_first_users_project(
    page: Any, live_server: Any, ui_login: Any
) -> None:
    _, pid, name = _project(live_server, "alice")
    ui_login(page, "bob")
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()
    expect(page.get_by_text(name)).to_have_count(0)
    page.goto(f"/projects/{pid}")
    expect(page.get_by_role("alert")).to_contain_text(f"project {pid} not found")


def test_register_a_new_account(page: Any, live_server: Any) -> None:
    page.goto("/login")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Name").fill("Erin")
    page.get_by_label("Email").fill(f"erin-{uuid.uuid4().hex[:6]}@example.org")
    page.get_by_label("Password").fill("a long enough password")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="No projects yet")).to_be_visible()
    expect(page.get_by_text("Erin")).to_be_visible()


def test_lost_session_logs_in_again_and_keeps_the_work(
    page: Any, live_server: Any, ui_login: Any, folder: Any, upload: Any
) -> None:
    api, pid, _ = _project(live_server)
    ids = upload(api, pid, sorted((folder / "P-001").glob("*.png"))[:3])
    ui_login(page, "alice", path=f"/projects/{pid}")
    page.locator("[data-item-id]").first.locator(".thumb").click()

    page.context.clear_cookies()  # the session ends (expired, logged out elsewhere)
    page.keyboard.press("2")
    dialog = page.get_by_role("dialog", name="Your session has ended")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Password").fill("e2e correct horse battery")
    dialog.get_by_role("button", name="Log in").click()
    expect(dialog).to_be_hidden()

    # The key pressed before the login went through afterwards, on the same page.
    deadline = time.monotonic() + 10
    while api.get(f"/api/projects/{pid}/items/{ids[0]}").json()["annotation"] is None:
        assert time.monotonic() < deadline, "the label was lost"
        time.sleep(0.1)
    assert api.get(f"/api/projects/{pid}/items/{ids[0]}").json()["annotation"]["label"] == "b"
    expect(page.locator("[data-item-id]").first.locator(".chip")).to_have_text("b")


def test_admin_closes_and_reopens_registration(
    page: Any, live_server: Any, ui_login: Any, browser: Any
) -> None:
    ui_login(page, "root")
    site = page.get_by_role("region", name="Site settings")
    box = site.get_by_label("Anyone may register an account")
    expect(box).to_be_checked()
    try:
        box.uncheck()
        expect(site.get_by_role("status")).to_have_text("Saved")
        other = browser.new_context(base_url=live_server.url)
        try:
            anonymous = other.new_page()
            anonymous.goto("/login")
            expect(anonymous.get_by_role("button", name="Log in")).to_be_visible()
            expect(anonymous.get_by_role("link", name="Create an account")).to_have_count(0)
            r = anonymous.request.post(
                "/api/auth/register",
                data={"email": "late@example.org", "password": "a long enough password"},
            )
            assert r.status == 403
        finally:
            other.close()
    finally:
        box.check()
        expect(site.get_by_role("status")).to_have_text("Saved")
