"""Security headers, a CSP the app satisfies, safe user files, no server paths (issue 11, 6)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from loupe.api import app as app_module

HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def _check_headers(r: Any) -> None:
    for name, value in HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name)
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and "'unsafe-inline'" not in script_src.group(1)
    assert "img-src 'self' data: blob:" in csp


def test_every_response_carries_the_security_headers(
    client: TestClient, login: Any, make_user: Any
) -> None:
    c = login(make_user())
    responses = [
        client.get("/api/info"),
        client.get("/api/auth/me"),  # 401
        client.get("/api/openapi.json"),
        client.get("/api/nowhere"),  # 404
        c.get("/api/projects/0"),  # 422
        c.post("/api/projects", json={}),  # 422
        client.get("/"),
        client.get("/api/docs"),
    ]
    assert [r.status_code for r in responses[:3]] == [200, 401, 200]
    assert responses[3].status_code == 404 and responses[4].status_code == 422
    for r in responses:
        _check_headers(r)


def test_api_docs_load_their_assets_from_this_server_without_inline_script(
    client: TestClient,
) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    html = page.text
    assert "cdn.jsdelivr.net" not in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(body.strip() == "" for _, body in scripts)
    srcs = [re.search(r'src="([^"]+)"', attrs).group(1) for attrs, _ in scripts]  # type: ignore[union-attr]
    css = re.findall(r'href="([^"]+\.css)"', html)
    for url in srcs + css:
        assert url.startswith("/"), url
        r = client.get(url)
        assert r.status_code == 200, url
        _check_headers(r)
    init = client.get(srcs[-1]).text
    assert "/api/openapi.json" in init


def _no_inline_code(html: str) -> None:
    for attrs, body in re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S):
        assert "src=" in attrs and body.strip() == "", "inline <script> breaks script-src 'self'"
    assert not re.search(r"\son\w+=", html), "inline event handlers break the CSP"


def test_the_front_end_has_no_inline_script() -> None:
    root = Path(app_module.__file__).resolve().parents[3]
    _no_inline_code((root / "web" / "index.html").read_text())
    built = app_module.WEB_DIST / "index.html"
    if built.exists():  # after `make web-build`
        _no_inline_code(built.read_text())


def test_item_files_are_downloads_with_a_safe_type(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    from loupe.db.models import Item

    owner = make_user()
    project = make_project(owner)
    item = make_item(project)
    db.get(Item, item.id).filename = "evil.html"  # an upload's name is the user's choice
    db.commit()
    c = login(owner)
    r = c.get(f"/api/projects/{project.id}/items/{item.id}/file")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"].startswith("attachment")
    _check_headers(r)


def test_error_messages_do_not_show_server_paths(login: Any, make_user: Any, settings: Any) -> None:
    c = login(make_user())
    r = c.post(
        "/api/projects/import-dataset",
        files={"file": ("d.zip", b"not a zip at all", "application/zip")},
    )
    assert r.status_code == 422, r.text
    message = r.json()["detail"]["message"]
    assert str(settings.home) not in message and str(settings.home.resolve()) not in message
    assert not re.search(r"(^|\s)/\w+/", message), message
