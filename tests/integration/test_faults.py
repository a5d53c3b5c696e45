"""Faults with real processes: the database, the queue or a web process goes away.

- PostgreSQL restarted while an annotator labels: requests get 503 (with
  Retry-After) while it is down, never a 500, and succeed afterwards on the
  same server (its pool recovers); every acknowledged label is stored.
- Redis restarted: a running job finishes, the worker reconnects and runs the
  next job; a queued job whose message Redis lost is still ``queued`` in the
  database and runs when retried; no job is left running.
- A web process killed mid-upload: no item and no media file; the retry succeeds.
- LOUPE_HOME full (a 6 MB tmpfs): the upload fails with a clear error, leaves no
  partial file, and the server works on.

PostgreSQL and Redis are private instances started by the test on free ports
(the shared ones on 5432/6379 are never restarted).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.integration.test_backup import _pngs
from tests.integration.test_scaleout import PASSWORD, Deployment, base_env, free_port, login

PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
REDIS_SERVER = shutil.which("redis-server")
WAIT_S = 60.0
EMAIL = "alice@example.org"


def _until(what: str, check: Any, timeout: float = WAIT_S, logs: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}\n{logs() if logs else ''}")
        time.sleep(0.05)


# --- a private PostgreSQL cluster ------------------------------------------------


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` as the postgres user, in a temporary folder, on a free port."""

    def __init__(self) -> None:
        if PG_BIN is None or os.geteuid() != 0:
            pytest.skip("needs root and /usr/lib/postgresql/*/bin to run a private cluster")
        import pwd

        self.user = pwd.getpwnam("postgres")
        self.root = Path(tempfile.mkdtemp(prefix="loupe-pg-"))
        os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, program: str, *args: str) -> None:
        r = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / program), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
        )
        assert r.returncode == 0, f"{program} failed: {r.stdout}\n{r.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        log = str(self.root / "server.log")
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


# --- a private Redis ---------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` without persistence on a free port: a restart loses its queue."""

    def __init__(self, root: Path) -> None:
        if REDIS_SERVER is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def _up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        _until("redis-server", _up)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- helpers -------------------------------------------------------------------------


@pytest.fixture
def make_deployment(tmp_path: Path) -> Iterator[Any]:
    made: list[Deployment] = []

    def _make(home: Path | None = None, **loupe: str) -> Deployment:
        home = home or tmp_path / f"home{len(made)}"
        home.mkdir(parents=True, exist_ok=True)
        dep = Deployment(home, base_env(home, **loupe))
        made.append(dep)
        dep.cli("db", "upgrade")
        dep.cli("user", "create", EMAIL, "--admin", LOUPE_PASSWORD=PASSWORD)
        return dep

    yield _make
    for dep in made:
        dep.stop_all()


def _project(api: httpx.Client, n_images: int) -> tuple[int, list[int]]:
    r = api.post(
        "/api/projects",
        json={
            "name": f"faults {uuid.uuid4().hex[:6]}",
            "task": "classify",
            "schema": {"classes": [{"name": "tumour"}, {"name": "stroma"}]},
        },
    )
    assert r.status_code == 201, r.text
    pid = int(r.json()["id"])
    ids: list[int] = []
    if n_images:
        files = [("files", (n, b, "image/png")) for n, b in _pngs(n_images)]
        r = api.post(f"/api/projects/{pid}/uploads", files=files)
        assert r.status_code in (200, 201), r.text
        ids = list(r.json()["item_ids"])
    return pid, ids


def _media_files(home: Path) -> list[Path]:
    """Files in LOUPE_HOME/media that are not temporary (names starting with a dot)."""
    media = home / "media"
    return [p for p in media.rglob("*") if p.is_file() and not p.name.startswith(".")]


# --- PostgreSQL restarted during labelling ------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_restart_gives_503_then_recovers(
    private_pg: PrivatePostgres, make_deployment: Any
) -> None:
    dep = make_deployment(database_url=private_pg.url)
    url = dep.serve("web")
    api = login(url, EMAIL)
    pid, ids = _project(api, 4)

    statuses: list[int] = []
    acked: list[tuple[int, str, int]] = []  # item, label, version
    stop = threading.Event()

    def _label() -> None:
        c = login(url, EMAIL)
        k = 0
        while not stop.is_set():
            item_id, label = ids[k % 4], ("tumour", "stroma")[(k // 4) % 2]
            try:
                r = c.put(
                    f"/api/projects/{pid}/items/{item_id}/label",
                    json={"kind": "class", "label": label},
                )
            except httpx.HTTPError:
                statuses.append(-1)
                continue
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked.append((item_id, label, int(r.json()["version"])))
            else:
                time.sleep(0.05)
            k += 1
        c.close()

    thread = threading.Thread(target=_label, daemon=True)
    thread.start()
    try:
        _until("labels before the restart", lambda: len(acked) >= 5, logs=dep.logs)
        private_pg.stop()
        r = api.put(
            f"/api/projects/{pid}/items/{ids[0]}/label", json={"kind": "class", "label": "stroma"}
        )
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After") and r.json()["detail"]["code"] == "unavailable"
        assert api.get("/api/health").status_code == 503
        down = len(statuses)
        _until("503s while down", lambda: statuses[down:].count(503) >= 3, logs=dep.logs)
        before = len(acked)
        private_pg.start()
        _until("labels after the restart", lambda: len(acked) >= before + 5, logs=dep.logs)
    finally:
        stop.set()
        thread.join(30)
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert api.get("/api/health").status_code == 200
    # Every acknowledged label is in the audit trail with the version the client was told.
    for item_id, label, version in acked:
        history = api.get(f"/api/projects/{pid}/items/{item_id}/history").json()
        events = history["data"] if isinstance(history, dict) else history
        assert any(
            e["version"] == version and (e.get("after") or {}).get("label") == label for e in events
        ), (item_id, label, version)
    api.close()


# --- Redis restarted ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.redis
def test_redis_restart_loses_no_running_job_and_a_lost_message_is_retried(
    tmp_path: Path, make_deployment: Any
) -> None:
    from loupe.jobs import core as jobs
    from loupe.settings import Settings

    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        dep = make_deployment(
            queue_url=redis.url,
            queue_name=f"faults_{uuid.uuid4().hex[:8]}",
            job_heartbeat_s="0.2",
        )
        settings = Settings(
            **{k[6:].lower(): v for k, v in dep.env.items() if k.startswith("LOUPE_")}
        )
        worker = dep.spawn("worker", "worker", "--queue", "cpu")

        def _status(job_id: int) -> str:
            return str(jobs.fetch_job(settings, job_id).status)

        running = jobs.submit(
            settings, kind="selftest", project_id=None, params={"steps": 30, "seconds": 0.1},
            user_id=None,
        )  # fmt: skip
        _until("the job to run", lambda: _status(running.id) == "running", logs=dep.logs)
        redis.kill()
        redis.start()  # empty: the queue is gone, the running job is not
        _until("the running job", lambda: _status(running.id) == "done", logs=dep.logs)
        after = jobs.submit(
            settings, kind="selftest", project_id=None, params={"steps": 2}, user_id=None
        )
        _until("a job after the restart", lambda: _status(after.id) == "done", logs=dep.logs)

        # A message lost with Redis: the job is still queued in the database, and a
        # retry (POST /api/jobs/{id}/retry) enqueues it again.
        dep.stop(worker)
        lost = jobs.submit(
            settings, kind="selftest", project_id=None, params={"steps": 2}, user_id=None
        )
        redis.kill()
        redis.start()
        assert _status(lost.id) == "queued"
        dep.spawn("worker-2", "worker", "--queue", "cpu")
        jobs.retry_job(settings, lost.id, user_id=None)
        _until("the retried job", lambda: _status(lost.id) == "done", logs=dep.logs)
        assert all(
            _status(j) == "done" for j in (running.id, after.id, lost.id)
        )  # none left running
    finally:
        redis.kill()


# --- a web process killed mid-upload --------------------------------------------------


def _multipart(name: str, body: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + body + f"\r\n--{boundary}--\r\n".encode(), boundary


def _big_png() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()  # noise does not compress: ~3 MB
    Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_web_process_killed_mid_upload_leaves_no_item(make_deployment: Any) -> None:
    dep = make_deployment()
    url = dep.serve("web")
    api = login(url, EMAIL)
    pid, _ = _project(api, 0)
    png = _big_png()
    payload, boundary = _multipart("big.png", png)
    port = int(url.rsplit(":", 1)[1])
    cookies = "; ".join(f"{c.name}={c.value}" for c in api.cookies.jar)
    head = (
        f"POST /api/projects/{pid}/uploads HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(payload)}\r\nCookie: {cookies}\r\n"
        f"X-CSRF-Token: {api.headers['X-CSRF-Token']}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + payload[: len(payload) // 2])
        time.sleep(0.5)  # let the server read part of the body (not an assertion)
        web = dep.procs[-1]
        os.killpg(web.pid, signal.SIGKILL)
        web.wait(10)
    api.close()

    url = dep.serve("web-restarted")
    api = login(url, EMAIL)
    assert api.get(f"/api/projects/{pid}/items").json()["count"] == 0
    assert _media_files(dep.home) == []
    r = api.post(f"/api/projects/{pid}/uploads", files=[("files", ("big.png", png, "image/png"))])
    assert r.status_code in (200, 201), r.text
    (item_id,) = r.json()["item_ids"]
    assert api.get(f"/api/projects/{pid}/items/{item_id}/file").content == png
    assert len(_media_files(dep.home)) == 1
    api.close()


# --- LOUPE_HOME full -----------------------------------------------------------------


@pytest.fixture
def small_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "small-home"
    home.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(home)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield home
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)


@pytest.mark.slow
def test_full_loupe_home_fails_the_upload_cleanly(
    small_home: Path, make_deployment: Any, tmp_path: Path
) -> None:
    # The database lives elsewhere: this is about the files (media, thumbnails).
    dep = make_deployment(small_home, database_url=f"sqlite:///{tmp_path / 'loupe.db'}")
    url = dep.serve("web")
    api = login(url, EMAIL)
    pid, ids = _project(api, 2)
    rng = np.random.default_rng(1)
    bodies = []
    for k in range(3):  # ~3 MB each: the third cannot fit in 6 MB
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(buf, "PNG")
        bodies.append((f"noise{k}.png", buf.getvalue()))
    results = []
    for name, body in bodies:
        r = api.post(f"/api/projects/{pid}/uploads", files=[("files", (name, body, "image/png"))])
        results.append(r)
        if r.status_code >= 400:
            break
    failed = [r for r in results if r.status_code >= 400]
    assert failed, [r.status_code for r in results]
    assert failed[0].status_code == 503, failed[0].text + dep.logs()
    assert "space" in failed[0].json()["detail"]["message"].lower()
    # No partial file: every media file is a complete upload of an item.
    items = api.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()
    assert items["count"] == len(ids) + len(results) - len(failed)
    for item in items["data"]:
        got = api.get(f"/api/projects/{pid}/items/{item['id']}/file")
        assert got.status_code == 200
    assert len(_media_files(small_home)) == items["count"]
    leftovers = [p.name for p in (small_home / "media").rglob(".upload-*")]
    assert leftovers == [], leftovers  # the failed upload's temporary file is gone
    assert api.get("/api/health").status_code == 200  # the server works on
    api.close()
