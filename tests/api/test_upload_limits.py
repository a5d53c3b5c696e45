"""Size limits before the disk (issue 11, item 3): streamed bodies stop at the
limit, interrupted uploads leave nothing, stale temp files go at start-up,
JSON bodies and free text are capped."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

MiB = 1 << 20
CHUNK = 64 * 1024
BOUNDARY = "loupe-test-boundary"


def _disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Body:
    """A multipart body of ``size`` bytes of file data, streamed in 64 KiB chunks."""

    def __init__(self, size: int, watch: Path, *, fail_after: int | None = None) -> None:
        self.size, self.watch, self.fail_after = size, watch, fail_after
        self.pulled = 0
        self.max_on_disk = 0

    async def stream(self) -> AsyncIterator[bytes]:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; '
            'filename="big.png"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        yield head.encode()
        chunk = b"\x89" * CHUNK
        for _ in range(self.size // CHUNK):
            self.max_on_disk = max(self.max_on_disk, _disk_bytes(self.watch))
            if self.fail_after is not None and self.pulled >= self.fail_after:
                raise ConnectionResetError("client went away")
            self.pulled += len(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


def _send(app: Any, url: str, body: Body, token: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            return await c.post(
                url,
                content=body.stream(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                },
            )

    return asyncio.run(go())


@pytest.fixture
def setup(login: Any, make_user: Any, make_project: Any) -> Callable[[], tuple[Any, str]]:
    def _make() -> tuple[Any, str]:
        owner = make_user()
        project = make_project(owner)
        r = login(owner).post("/api/auth/tokens", json={"name": "upload"})
        return project, r.json()["token"]

    return _make


@pytest.mark.parametrize(
    "route",
    [
        "/api/projects/{p}/uploads",
        "/api/projects/{p}/labels/import",
        "/api/projects/import-dataset",
    ],
)
def test_a_body_over_the_limit_stops_at_the_limit(
    route: str, app: Any, settings: Any, setup: Any
) -> None:
    limit = 1 * MiB
    settings.max_upload_bytes = limit
    settings.max_label_file_bytes = limit
    project, token = setup()
    body = Body(limit + 8 * MiB, settings.home)
    before = _disk_bytes(settings.home)
    r = _send(app, route.replace("{p}", str(project.id)), body, token)
    assert r.status_code == 413, r.text
    assert r.json()["detail"]["code"] == "too_large"
    assert body.pulled <= limit + 2 * CHUNK, f"read {body.pulled} bytes past a {limit} limit"
    assert body.max_on_disk - before <= limit + 2 * CHUNK
    assert not list(settings.media_dir.glob(".upload-*"))
    print(f"{route}: pulled {body.pulled} B, on disk at most {body.max_on_disk - before} B")


def test_an_interrupted_upload_leaves_no_temp_file(app: Any, settings: Any, setup: Any) -> None:
    project, token = setup()
    body = Body(4 * MiB, settings.home, fail_after=2 * MiB)
    with pytest.raises(ConnectionResetError):
        _send(app, f"/api/projects/{project.id}/uploads", body, token)
    assert body.max_on_disk > 0  # it did start writing
    assert not list(settings.media_dir.glob(".upload-*"))


def test_stale_temp_files_are_removed_at_start(app: Any, settings: Any) -> None:
    old = time.time() - 7200
    stale = settings.media_dir / ".upload-crashed"
    stale.write_bytes(b"x" * 1000)
    os.utime(stale, (old, old))
    stale_dir = settings.media_dir / ".zip-import-crashed"
    stale_dir.mkdir()
    (stale_dir / "a.png").write_bytes(b"y")
    os.utime(stale_dir, (old, old))
    part = settings.exports_dir / "1" / ".job1-x.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"z")
    os.utime(part, (old, old))
    young = settings.media_dir / ".upload-in-progress"
    young.write_bytes(b"busy")
    with TestClient(app):
        pass
    assert not stale.exists() and not stale_dir.exists() and not part.exists()
    assert young.exists()


def test_json_bodies_are_capped(login: Any, make_user: Any, settings: Any) -> None:
    c = login(make_user())
    big = {"name": "p", "task": "classify", "schema": {"classes": [{"name": "a"}]}}
    big["settings"] = {"padding": "x" * (settings.max_json_bytes + 10)}
    r = c.post("/api/projects", json=big)
    assert r.status_code == 413
    assert r.json()["detail"]["code"] == "too_large"


def test_free_text_fields_have_limits(login: Any, make_user: Any, make_project: Any) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    r = c.patch(f"/api/projects/{project.id}", json={"description": "d" * 10_001})
    assert r.status_code == 422
    r = c.post("/api/auth/login", json={"email": "a@b.c", "password": "p" * 10_000})
    assert r.status_code == 422
