"""Thumbnails: by item id with a session, or by a signed expiring URL."""

from __future__ import annotations

import base64
from typing import Any

from fastapi.testclient import TestClient

from loupe.services.items.signed_urls import WINDOW_S, check_thumbnail, thumbnail_url


def test_signed_thumbnail_urls(
    app: Any, login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    make_item(project)
    c = login(owner)
    item = c.get(f"/api/projects/{project.id}/items").json()["data"][0]
    url = item["thumbnail_url"]
    assert url.startswith(f"/api/thumbs/{item['sha256']}.jpg?exp=")
    by_id = c.get(f"/api/projects/{project.id}/items/{item['id']}/thumbnail")
    assert by_id.status_code == 200 and by_id.content[:2] == b"\xff\xd8"
    with TestClient(app) as anonymous:  # no session: the signature is the key
        r = anonymous.get(url)
        assert r.status_code == 200 and r.content == by_id.content
        assert r.headers["content-type"] == "image/jpeg"
        forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
        assert anonymous.get(forged).status_code == 403
        other = url.replace(item["sha256"], "0" * 64)
        assert anonymous.get(other).status_code == 403
    # the grid's first page carries the thumbnails inline (one request, not one per tile)
    assert item["thumbnail_data"] is None
    inline = c.get(
        f"/api/projects/{project.id}/items", params={"inline_thumbnails": "true"}
    ).json()["data"][0]
    prefix = "data:image/jpeg;base64,"
    assert inline["thumbnail_data"].startswith(prefix)
    assert base64.b64decode(inline["thumbnail_data"][len(prefix) :]) == by_id.content


def test_signature_expiry_and_window() -> None:
    import pytest

    from loupe.errors import LoupeError

    sha = "ab" * 32
    url = thumbnail_url("k" * 40, sha, now=1_000_000)
    exp = int(url.split("exp=")[1].split("&")[0])
    sig = url.split("sig=")[1]
    assert exp - 1_000_000 > WINDOW_S  # valid for at least one whole window
    # the same URL within a window (browser cache hits), a new one after it
    assert thumbnail_url("k" * 40, sha, now=1_000_000 + 10) == url
    check_thumbnail("k" * 40, sha, exp, sig, now=1_000_000)
    with pytest.raises(LoupeError, match="expired"):
        check_thumbnail("k" * 40, sha, exp, sig, now=exp + 1)
    with pytest.raises(LoupeError):
        check_thumbnail("another-secret" * 3, sha, exp, sig, now=1_000_000)
