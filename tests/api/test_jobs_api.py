"""Jobs over HTTP: read, list, access, retry, cancel, selftest and the SSE stream."""

from __future__ import annotations

import json
import threading
from typing import Any

from loupe.db.models import Membership
from loupe.db.session import session_scope
from loupe.jobs import core as jobs
from loupe.jobs import runner as job_runner


def _queued(settings: Any, project_id: int | None, user_id: int | None, **params: Any) -> int:
    """A committed job that no worker runs until the test says so."""
    with session_scope(settings.db_url) as db:
        job = jobs.create_job(
            db, kind="selftest", project_id=project_id, params=params, user_id=user_id
        )
        return job.id


def _add_member(settings: Any, project_id: int, user_id: int, role: str) -> None:
    with session_scope(settings.db_url) as db:
        db.add(Membership(project_id=project_id, user_id=user_id, role=role))


def _events(
    client: Any, job_id: int, first: threading.Event | None = None
) -> list[tuple[str, Any]]:
    """Read an SSE stream to its end: [(event, parsed data), ...] (pings skipped);
    ``first`` is set once the first event arrived."""
    out: list[tuple[str, Any]] = []
    event = None
    with client.stream("GET", f"/api/jobs/{job_id}/events") as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            line = line.rstrip("\r")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event is not None:
                out.append((event, json.loads(line.split(":", 1)[1])))
                event = None
                if first is not None:
                    first.set()
    return out


def test_get_job_and_list_project_jobs(
    settings: Any, login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    done = jobs.submit(
        settings,
        kind="selftest",
        project_id=project.id,
        params={"steps": 2, "seconds": 0},
        user_id=owner.id,
    )
    queued = _queued(settings, project.id, owner.id)

    r = c.get(f"/api/jobs/{done.id}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == done.id and body["project_id"] == project.id
    assert (body["kind"], body["status"], body["progress"]) == ("selftest", "done", 1.0)
    assert body["params"] == {"steps": 2, "seconds": 0}
    assert body["result"]["steps"] == 2 and body["error"] is None and body["attempts"] == 1
    assert body["started_at"] and body["finished_at"] and body["created_at"]
    assert set(body) == {
        "id",
        "project_id",
        "kind",
        "status",
        "progress",
        "message",
        "params",
        "result",
        "error",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    }

    listed = c.get(f"/api/projects/{project.id}/jobs").json()
    assert listed["count"] == 2
    assert [j["id"] for j in listed["data"]] == [queued, done.id]  # newest first
    only_done = c.get(f"/api/projects/{project.id}/jobs", params={"status": "done"}).json()
    assert [j["id"] for j in only_done["data"]] == [done.id]
    page = c.get(f"/api/projects/{project.id}/jobs", params={"limit": 1, "offset": 1}).json()
    assert page["count"] == 2 and [j["id"] for j in page["data"]] == [done.id]
    assert c.get(f"/api/projects/{project.id}/jobs", params={"kind": "train"}).json() == {
        "data": [],
        "count": 0,
    }
    r = c.get(f"/api/projects/{project.id}/jobs", params={"status": "sleeping"})
    assert r.status_code == 422
    assert c.get("/api/jobs/999999").status_code == 404


def test_non_members_get_404_and_viewers_cannot_cancel(
    settings: Any, login: Any, make_user: Any, make_project: Any
) -> None:
    owner, stranger, viewer = make_user(), make_user(), make_user()
    project = make_project(owner)
    _add_member(settings, project.id, viewer.id, "viewer")
    job_id = _queued(settings, project.id, owner.id)

    s = login(stranger)
    for method, url in [
        ("GET", f"/api/jobs/{job_id}"),
        ("GET", f"/api/jobs/{job_id}/events"),
        ("GET", f"/api/projects/{project.id}/jobs"),
        ("POST", f"/api/jobs/{job_id}/cancel"),
        ("POST", f"/api/jobs/{job_id}/retry"),
    ]:
        r = s.request(method, url)
        assert r.status_code == 404, (method, url, r.text)
        assert r.json()["detail"]["code"] == "not_found"

    v = login(viewer)
    assert v.get(f"/api/jobs/{job_id}").json()["status"] == "queued"
    assert v.get(f"/api/projects/{project.id}/jobs").json()["count"] == 1
    r = v.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 403 and "annotator" in r.json()["detail"]["message"]
    assert v.post(f"/api/jobs/{job_id}/retry").status_code == 403


def test_job_without_project_is_its_creators_and_admins(
    settings: Any, login: Any, make_user: Any
) -> None:
    creator, other, admin = make_user(), make_user(), make_user(admin=True)
    job_id = _queued(settings, None, creator.id)
    assert login(creator).get(f"/api/jobs/{job_id}").status_code == 200
    assert login(other).get(f"/api/jobs/{job_id}").status_code == 404
    assert login(admin).get(f"/api/jobs/{job_id}").status_code == 200


def test_cancel_then_retry(settings: Any, login: Any, make_user: Any, make_project: Any) -> None:
    owner, annotator = make_user(), make_user()
    project = make_project(owner)
    _add_member(settings, project.id, annotator.id, "annotator")
    job_id = _queued(settings, project.id, owner.id, steps=2, seconds=0)
    c = login(annotator)

    r = c.post(f"/api/jobs/{job_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    r = c.post(f"/api/jobs/{job_id}/retry")  # runs inline: LOUPE_JOBS_IMMEDIATE=1
    assert r.status_code == 200, r.text
    assert (r.json()["id"], r.json()["status"], r.json()["attempts"]) == (job_id, "done", 1)
    r = c.post(f"/api/jobs/{job_id}/retry")
    assert r.status_code == 409 and r.json()["detail"]["code"] == "conflict"
    assert c.post(f"/api/jobs/{job_id}/cancel").status_code == 409


def test_selftest_is_for_site_admins(settings: Any, login: Any, make_user: Any) -> None:
    member = login(make_user())
    r = member.post("/api/jobs/selftest", json={})
    assert r.status_code == 403

    admin = login(make_user(admin=True))
    r = admin.post("/api/jobs/selftest", json={"steps": 3, "seconds": 0})
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["progress"]) == ("done", 1.0)
    assert r.json()["project_id"] is None

    r = admin.post("/api/jobs/selftest", json={"steps": 3, "seconds": 0, "fail_at": 2})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "failed"
    assert "selftest failed at step 2" in r.json()["error"]
    r = admin.get(f"/api/jobs/{r.json()['id']}")
    assert r.json()["status"] == "failed"

    r = admin.post("/api/jobs/selftest", json={"steps": 0})
    assert r.status_code == 422
    r = admin.post("/api/jobs/selftest", json={"project_id": 999999})
    assert r.status_code == 404


def test_event_stream_follows_a_running_job(
    settings: Any, login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    job_id = _queued(settings, project.id, owner.id, steps=5, seconds=0.3)
    streaming = threading.Event()

    def worker() -> None:
        # the job starts once the stream has shown it queued (however busy the machine)
        assert streaming.wait(30), "the stream sent nothing"
        job_runner.run_job(settings, job_id, heartbeat_s=0.1)

    t = threading.Thread(target=worker)
    t.start()
    try:
        events = _events(c, job_id, streaming)
    finally:
        t.join(20)

    names = [e for e, _ in events]
    assert names[-1] == "end" and names.count("end") == 1
    progress = [d for e, d in events if e == "progress"]
    assert progress[0]["status"] == "queued"
    assert any(d["status"] == "running" and 0 < d["progress"] < 1 for d in progress)
    values = [d["progress"] for d in progress if d["status"] == "running"]
    assert values == sorted(values)
    assert progress[-1]["status"] == "done" and progress[-1]["progress"] == 1.0
    assert events[-1][1]["status"] == "done" and events[-1][1]["id"] == job_id


def test_event_stream_of_a_finished_job_ends_at_once(
    settings: Any, login: Any, make_user: Any
) -> None:
    admin = make_user(admin=True)
    c = login(admin)
    job_id = c.post("/api/jobs/selftest", json={"steps": 1, "seconds": 0}).json()["id"]
    events = _events(c, job_id)
    assert [e for e, _ in events] == ["progress", "end"]
    assert events[0][1]["status"] == "done"
