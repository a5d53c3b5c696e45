"""`loupe serve` keeps model code out of the web process: a training runs in the
worker child process, at a lower CPU priority, and the server never loads torch
or ONNX Runtime (checked in /proc/<pid>/maps, the shared objects a process mapped)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.e2e

MODEL_LIBRARIES = ("libtorch", "onnxruntime")


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _worker_pid(db_url: str, job_id: int) -> int:
    """The pid in ``jobs.worker`` (``host:pid``; the API does not show it)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            worker = conn.execute(text("SELECT worker FROM jobs WHERE id = :id"), {"id": job_id})
            return int(str(worker.scalar_one()).rsplit(":", 1)[1])
    finally:
        engine.dispose()


def test_training_runs_in_the_worker_process_not_the_web_server(
    live_server: Any, upload: Any, folder: Path
) -> None:
    api = live_server.client("alice")
    r = api.post(
        "/api/projects",
        json={
            "name": "Processes E2E",
            "task": "classify",
            "schema": {"classes": [{"name": "tumour"}, {"name": "stroma"}]},
        },
    )
    r.raise_for_status()
    pid = int(r.json()["id"])
    ids = upload(api, pid, sorted(folder.glob("*/*.png")))
    for i, item_id in enumerate(ids[:6]):
        label = "tumour" if i % 2 else "stroma"
        api.put(
            f"/api/projects/{pid}/items/{item_id}/label", json={"kind": "class", "label": label}
        ).raise_for_status()
    # mobilenet_v2 is a torch model: the worker must load torch (or ONNX Runtime).
    job = live_server.train(pid, members=("classic", "mobilenet_v2"))
    worker = _worker_pid(live_server.db_url, job["id"])

    assert worker != live_server.pid
    assert _parent(worker) == live_server.pid  # the server's own child
    assert any(lib in _maps(worker) for lib in MODEL_LIBRARIES)
    web = _maps(live_server.pid)
    assert not [lib for lib in MODEL_LIBRARIES if lib in web], "the web process loaded model code"
    nice = os.getpriority(os.PRIO_PROCESS, worker)
    assert nice >= min(os.getpriority(os.PRIO_PROCESS, live_server.pid) + 10, 19)
    # Drafts came back through the database: the web process serves them.
    items = api.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()["data"]
    assert any(it.get("draft") for it in items)
