"""Scale-out on the real PostgreSQL and Redis: two web servers and two workers.

Web server A is ``loupe serve --workers 2`` (two uvicorn processes on one
port), web server B a plain ``loupe serve`` on another port; two
``loupe worker`` processes consume the queues. Nothing that matters lives in
one process's memory, so ingest -> label -> retrain -> drafts -> export works
through A and B alternately: a session made on A works on B (and a logout on B
ends it on A), leases keep two annotators on different servers apart, and a
job started on A is followed on B (state and SSE progress).

The database is a fresh PostgreSQL database made by the test; the queues use
Redis database 15 under a queue name of their own, whose keys are deleted
afterwards (never FLUSHDB).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from tests.conftest import PG_ADMIN_URL, _pg_url
from tests.integration.test_backup import _pngs

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("LOUPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
PASSWORD = "scale-out correct horse battery"
START_TIMEOUT_S = 60.0
JOB_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Deployment:
    """A LOUPE_HOME, a database and the processes started on them (all stopped at the end)."""

    home: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str, **extra: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "loupe.cli", *args],
            env={**self.env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"loupe {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.home / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "loupe.cli", *args],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: uvicorn's children go too
            )
        self.procs.append(proc)
        return proc

    def serve(self, name: str, *args: str, port: int | None = None) -> str:
        """Start ``loupe serve`` and wait for /api/health; returns its base URL."""
        port = port or free_port()
        proc = self.spawn(name, "serve", "--port", str(port), "--no-worker", *args)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc, self.home / f"{name}.log")
        return url

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.home.glob("*.log"))

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs:  # all at once: their graceful stops overlap
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            self.stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer /api/health:\n{log.read_text()[-4000:]}")
        time.sleep(0.2)


def base_env(home: Path, **loupe: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    env.update(
        LOUPE_HOME=str(home),
        LOUPE_SECRET_KEY=secrets.token_urlsafe(48),
        PYTHONUNBUFFERED="1",
        **{f"LOUPE_{k.upper()}": v for k, v in loupe.items()},
    )
    return env


@contextlib.contextmanager
def fresh_pg_database(admin_url: str = PG_ADMIN_URL) -> Iterator[str]:
    """A new, empty PostgreSQL database on the shared server; dropped afterwards."""
    name = f"loupe_scale_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def login(url: str, email: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30)
    r = c.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return c


def same_session_on(client: httpx.Client, url: str) -> httpx.Client:
    """A client for ``url`` carrying ``client``'s session cookie and CSRF token."""
    other = httpx.Client(base_url=url, timeout=30, headers=dict(client.headers))
    for cookie in client.cookies.jar:
        other.cookies.set(cookie.name, cookie.value or "")
    return other


def wait_job(client: httpx.Client, job_id: int, logs: Any) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", f"{job}\n{logs()}"
            return dict(job)
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} not finished: {job}\n{logs()}")
        time.sleep(0.2)


def sse_events(client: httpx.Client, job_id: int) -> list[tuple[str, Any]]:
    """Every SSE event of a job until ``end`` (bounded by the client's timeout)."""
    events: list[tuple[str, Any]] = []
    name = ""
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((name, json.loads(line.split(":", 1)[1])))
                if name == "end":
                    break
    return events


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    from huey import RedisHuey

    queue_name = f"loupe_scale_{uuid.uuid4().hex[:10]}"
    with fresh_pg_database() as db_url:
        home = tmp_path / "home"
        home.mkdir()
        dep = Deployment(
            home, base_env(home, database_url=db_url, queue_url=REDIS_URL, queue_name=queue_name)
        )
        try:
            yield dep
        finally:
            dep.stop_all()
            for name in (queue_name, f"{queue_name}-gpu"):
                RedisHuey(name, url=REDIS_URL).storage.flush_all()  # this queue's keys only


def test_two_web_servers_and_two_workers_share_everything(
    deployment: Deployment, tmp_path: Path
) -> None:
    dep = deployment
    dep.cli("db", "upgrade")  # once, before any server starts
    for who, admin in (("alice", True), ("bob", False)):
        flags = ["--admin"] if admin else []
        dep.cli("user", "create", f"{who}@example.org", *flags, LOUPE_PASSWORD=PASSWORD)
    url_a = dep.serve("web-a", "--workers", "2")
    url_b = dep.serve("web-b")
    dep.spawn("worker-1", "worker", "--queue", "cpu")
    dep.spawn("worker-2", "worker", "--queue", "cpu", "--queue", "gpu")

    # A session made on A works on B; both servers sign and check it the same way.
    alice_a = login(url_a, "alice@example.org")
    alice_b = same_session_on(alice_a, url_b)
    assert alice_b.get("/api/auth/me").json()["user"]["email"] == "alice@example.org"
    bob_b = login(url_b, "bob@example.org")
    bob_a = same_session_on(bob_b, url_a)

    r = alice_b.post(
        "/api/projects",
        json={
            "name": "Scale-out",
            "task": "classify",
            "schema": {"classes": [{"name": "tumour"}, {"name": "stroma"}]},
            "settings": {"ensemble": ["classic"]},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = alice_a.post(
        f"/api/projects/{pid}/members", json={"email": "bob@example.org", "role": "annotator"}
    )
    assert r.status_code == 201, r.text

    # Ingest: a server-side import job (run by a worker) through A, uploads through B.
    pngs = _pngs(28)
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name, body in pngs[:8]:
        (folder / name).write_bytes(body)
    r = alice_a.post(f"/api/projects/{pid}/imports", json={"paths": [str(folder)]})
    assert r.status_code == 202, r.text
    wait_job(alice_b, r.json()["job_id"], dep.logs)  # followed on the other server
    files = [("files", (n, b, "image/png")) for n, b in pngs[8:16]]
    r = bob_b.post(f"/api/projects/{pid}/uploads", files=files)
    assert r.status_code in (200, 201), r.text
    items = alice_a.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()
    assert items["count"] == 16

    # Leases: alice on A and bob on B are never served the same item.
    mine = [i["id"] for i in alice_a.post(f"/api/projects/{pid}/queue?n=6").json()["items"]]
    theirs = [i["id"] for i in bob_b.post(f"/api/projects/{pid}/queue?n=6").json()["items"]]
    assert len(mine) == 6 and len(theirs) == 6
    assert not set(mine) & set(theirs)
    again = [i["id"] for i in bob_a.post(f"/api/projects/{pid}/queue?n=6").json()["items"]]
    assert not set(mine) & set(again)  # bob on the other server: still apart

    # Labels through both servers alternately (each annotator's own leased items).
    for k, (item_id, client) in enumerate(
        [(i, alice_a if n % 2 else alice_b) for n, i in enumerate(mine)]
        + [(i, bob_b if n % 2 else bob_a) for n, i in enumerate(again)]
    ):
        r = client.put(
            f"/api/projects/{pid}/items/{item_id}/label",
            json={"kind": "class", "label": ("tumour", "stroma")[k % 2]},
        )
        assert r.status_code == 200, r.text
    # A stale write from the other server is refused (optimistic locking in the database).
    r = alice_b.put(
        f"/api/projects/{pid}/items/{mine[0]}/label",
        json={"kind": "class", "label": "stroma", "version": 0},
    )
    assert r.status_code == 409, r.text

    # Retrain on A; B streams its progress (SSE) and sees it finish.
    r = alice_a.post(f"/api/projects/{pid}/train", json={"mode": "frozen"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    events = sse_events(alice_b, job_id)
    assert events[-1][0] == "end" and events[-1][1]["status"] == "done", events
    progress = [e["progress"] for name, e in events if name == "progress"]
    assert progress and progress == sorted(progress) and progress[-1] == 1.0
    job = wait_job(bob_a, job_id, dep.logs)
    assert job["status"] == "done"

    # Drafts for every item, served by both servers.
    for client in (alice_a, bob_b):
        listed = client.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()["data"]
        assert sum(1 for it in listed if it.get("draft")) == 16

    # New items are drafted by the stored version, without a retraining: a ``predict``
    # job in chunks that both workers take (asked for on B by a reviewer, drafting off so
    # that the workers' own sweep does not start it first) ...
    r = alice_b.patch(f"/api/projects/{pid}", json={"settings": {"draft_new_items": False}})
    assert r.status_code == 200, r.text
    files = [("files", (n, b, "image/png")) for n, b in pngs[16:24]]
    assert bob_a.post(f"/api/projects/{pid}/uploads", files=files).status_code in (200, 201)
    r = alice_b.post(f"/api/projects/{pid}/predict", json={"chunk_size": 2})
    assert r.status_code == 202, r.text
    job = wait_job(alice_a, r.json()["id"], dep.logs)
    assert job["result"]["drafted"] == 8 and job["result"]["chunks"] == 4, job
    # ... and, with drafting on (the default), by the workers' sweep within seconds.
    r = alice_b.patch(f"/api/projects/{pid}", json={"settings": {"draft_new_items": True}})
    assert r.status_code == 200, r.text
    files = [("files", (n, b, "image/png")) for n, b in pngs[24:28]]
    assert bob_b.post(f"/api/projects/{pid}/uploads", files=files).status_code in (200, 201)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        listed = alice_a.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()["data"]
        if len(listed) == 28 and all(it.get("draft") for it in listed):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"new items not drafted: {listed}\n{dep.logs()}")
        time.sleep(0.5)

    # Export: queued on B, run by a worker, downloaded from A.
    r = bob_b.post(f"/api/projects/{pid}/exports", json={"format": "zip"})
    assert r.status_code == 202, r.text
    export_id = r.json()["id"]
    wait_job(alice_a, export_id, dep.logs)
    r = bob_a.get(f"/api/exports/{export_id}/download")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        csv_name = next(n for n in zf.namelist() if n.endswith(".csv"))
        rows = zf.read(csv_name).decode().splitlines()
    assert sum(1 for row in rows if "tumour" in row or "stroma" in row) >= 12

    # Log out on B: the session is gone on A too (sessions live in the database).
    assert alice_b.post("/api/auth/logout").status_code == 200
    assert alice_a.get("/api/auth/me").status_code == 401
    for c in (alice_a, alice_b, bob_a, bob_b):
        c.close()
