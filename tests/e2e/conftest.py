"""End-to-end fixtures: a real ``loupe serve`` subprocess and headless Chromium.

The server runs on a free port with a fresh ``LOUPE_HOME`` (SQLite, the job worker
child process, a random secret); users are created with ``loupe user create``.
The browser is Debian's ``chromium`` driven by pytest-playwright.
Set ``LOUPE_SCREENSHOTS=1`` to (re)write ``docs/screenshots/*.png``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = ROOT / "src" / "loupe" / "web_dist"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("LOUPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "e2e correct horse battery"
USERS = {
    "alice": "alice@example.org",
    "bob": "bob@example.org",
    "dave": "dave@example.org",
    "root": "root@example.org",  # the site administrator
}
# Two small members train in seconds on a CPU: the hand-made features and MobileNetV2.
FAST_ENSEMBLE = ("classic", "mobilenet_v2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    home: Path
    env: dict[str, str]
    log: Path
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))
    pid: int = 0  # of the `loupe serve` process

    @property
    def db_url(self) -> str:
        return f"sqlite:///{(self.home / 'loupe.db').resolve()}"

    def client(self, who: str = "alice") -> httpx.Client:
        """An API client logged in as ``who`` (cookie session + CSRF header)."""
        c = httpx.Client(base_url=self.url, timeout=30)
        r = c.post("/api/auth/login", json={"email": self.users[who], "password": PASSWORD})
        r.raise_for_status()
        c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
        return c

    def train(
        self,
        project_id: int,
        *,
        who: str = "alice",
        members: tuple[str, ...] = FAST_ENSEMBLE,
        timeout: float = 120,
    ) -> dict[str, Any]:
        """Train through the API (real training: features, heads, drafts) and wait
        for the job; returns the finished job. For tests whose subject is not training."""
        api = self.client(who)
        try:
            api.patch(
                f"/api/projects/{project_id}", json={"settings": {"ensemble": list(members)}}
            ).raise_for_status()
            r = api.post(f"/api/projects/{project_id}/train", json={"mode": "frozen"})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            deadline = time.monotonic() + timeout
            while True:
                job = api.get(f"/api/jobs/{job_id}").json()
                if job["status"] in ("done", "failed", "cancelled"):
                    assert job["status"] == "done", job
                    return dict(job)
                assert time.monotonic() < deadline, f"training did not finish: {job}"
                time.sleep(0.25)
        finally:
            api.close()


def _cli(env: dict[str, str], *args: str, **extra_env: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "loupe.cli", *args],
        env={**env, **extra_env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"loupe {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not (WEB_DIST / "index.html").exists():
        pytest.fail("the browser app is not built: run `make web-build` (or `make setup`)")
    home = tmp_path_factory.mktemp("loupe-e2e-home")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LOUPE_") or k in ("LOUPE_SCREENSHOTS", "LOUPE_CHROMIUM")
    }
    env.update(
        LOUPE_HOME=str(home),
        LOUPE_SECRET_KEY=secrets.token_urlsafe(48),
        PYTHONUNBUFFERED="1",
    )
    for name, email in USERS.items():
        admin = ["--admin"] if name == "root" else []
        _cli(env, "user", "create", email, "--name", name.title(), *admin, LOUPE_PASSWORD=PASSWORD)
    port = _free_port()
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loupe.cli", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the server did not answer /api/health:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)
    try:
        yield LiveServer(url=url, home=home, env=env, log=log, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` (make setup does it)")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": CHROMIUM_ARGS,
        "headless": True,
    }


@pytest.fixture
def browser_context_args(
    browser_context_args: dict[str, Any], live_server: LiveServer
) -> dict[str, Any]:
    return {
        **browser_context_args,
        "base_url": live_server.url,
        "viewport": {"width": 1400, "height": 860},
    }


@pytest.fixture
def page(page: Any) -> Any:
    page.set_default_timeout(10_000)
    return page


@pytest.fixture
def shot() -> Any:
    """``shot(page, 'name')`` writes docs/screenshots/name.png when LOUPE_SCREENSHOTS=1."""

    def _shot(page: Any, name: str) -> None:
        if os.environ.get("LOUPE_SCREENSHOTS") != "1":
            return
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.wait_for_timeout(300)  # let thumbnails and transitions settle
        # Passing notifications are not part of the screen being documented.
        page.add_style_tag(content=".toasts { visibility: hidden !important }")
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
        page.add_style_tag(content=".toasts { visibility: visible !important }")

    return _shot


def _login(page: Any, who: str = "alice", *, path: str = "/") -> None:
    page.goto(path)
    page.get_by_label("Email").fill(USERS[who])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()


@pytest.fixture
def ui_login() -> Any:
    """``ui_login(page, "alice", path="/projects/3")``: log in through the form."""
    return _login


def _tiles_folder(root: Path, cases: dict[str, int], *, size: int = 96) -> Path:
    """Write real PNG tiles cut from scikit-image's microscopy images into root/<case>/."""
    from PIL import Image
    from skimage import data

    # Both images ship inside the scikit-image wheel (no download).
    sources = [np.asarray(data.immunohistochemistry()), np.asarray(data.retina())[300:800, 300:800]]
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for case, count in cases.items():
        (root / case).mkdir(exist_ok=True)
        for k in range(count):
            img, p = sources[n % 2], n // 2
            r, c = (p % 6) * 64, (p // 6) * 64
            tile = np.ascontiguousarray(img[r : r + size, c : c + size])
            Image.fromarray(tile).save(root / case / f"{case}_tile{k:02d}.png")
            n += 1
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """slides/P-001/*.png and slides/P-002/*.png: six real tiles per case."""
    return _tiles_folder(tmp_path / "slides", {"P-001": 6, "P-002": 6})


@pytest.fixture
def upload() -> Any:
    """``upload(client, project_id, paths, case='')`` through the API; returns item ids."""

    def _upload(
        client: httpx.Client, project_id: int, files: list[Path], case: str = ""
    ) -> list[int]:
        parts = [("files", (p.name, p.read_bytes(), "image/png")) for p in files]
        data = {"case": case} if case else {}
        r = client.post(f"/api/projects/{project_id}/uploads", files=parts, data=data)
        r.raise_for_status()
        return list(r.json()["item_ids"])

    return _upload


@pytest.fixture(scope="session", autouse=True)
def _fresh_screenshots() -> None:
    # A fresh set per run, so a renamed screen leaves no stale picture behind.
    if os.environ.get("LOUPE_SCREENSHOTS") == "1" and SCREENSHOTS.exists():
        for png in SCREENSHOTS.glob("*.png"):
            png.unlink()
