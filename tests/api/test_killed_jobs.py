"""Killed work ends failed within a bounded time (issue 11, item 8).

A worker killed mid-training leaves its job 'running' with a stale heartbeat
and its model version 'training'. With no worker left, the web process's
reaper must still end both as 'failed'.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi.testclient import TestClient

from loupe.db.models import Job, ModelVersion


def test_web_process_reaps_a_killed_training(
    app: Any, settings: Any, login: Any, make_user: Any, make_project: Any, db: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    job = Job(
        project_id=project.id,
        kind="train",
        status="running",
        params={"project_id": project.id},
        attempts=1,
        worker="killed-host:4242",
        started_at=long_ago,
        heartbeat_at=long_ago,
    )
    db.add(job)
    db.flush()
    version = ModelVersion(project_id=project.id, number=1, status="training", job_id=job.id)
    db.add(version)
    db.commit()
    settings.job_stale_after_s = 1.0
    settings.job_reap_every_s = 0.2
    c = login(owner)
    with TestClient(app):  # the web process starts (its reaper with it); no worker runs
        deadline = time.monotonic() + 10
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            status = c.get(f"/api/jobs/{job.id}").json()["status"]
            if status != "running":
                break
            time.sleep(0.1)
        seconds = time.monotonic() - t0
    got = c.get(f"/api/jobs/{job.id}").json()
    assert got["status"] == "failed" and "worker lost" in (got["error"] or "")
    assert seconds < 5
    v = c.get(f"/api/projects/{project.id}/versions/{version.id}")
    assert v.status_code == 200 and v.json()["status"] == "failed"
    print(f"killed job marked failed after {seconds:.2f}s")
