"""The 2-D map as a job (issue 12, item 3): real features of real images, a cache on
disk, coordinates for every item, reuse while the features are unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from tests.api.test_queues import SOURCES
from tests.api.texture_helpers import trained_texture_project

from loupe.db.models import Job, Project
from loupe.db.session import session_scope
from loupe.jobs import chunks
from loupe.jobs import core as jobs
from loupe.jobs import runner as job_runner
from loupe.select.map2d import embed_2d
from loupe.services.queues import map as map_service


@pytest.fixture
def mapped_project(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> dict[str, Any]:
    """26 skimage tiles of three textures, 'classic' features, a model trained inline."""
    return trained_texture_project(settings, make_user, make_project, login, tmp_path)


def test_map_job_writes_the_cache_and_get_returns_every_item(
    mapped_project: dict[str, Any], settings: Any
) -> None:
    c, pid, by_name = mapped_project["c"], mapped_project["pid"], mapped_project["by_name"]
    r = c.get(f"/api/projects/{pid}/map")
    assert r.status_code == 200 and not r.json()["computed"] and r.json()["item_ids"] == []
    assert "POST" in r.json()["message"], r.text

    r = c.post(f"/api/projects/{pid}/map")
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["kind"] == "map" and job["status"] == "done", job
    assert job["result"]["cached"] is False and job["result"]["items"] == 26
    folder = settings.home / "maps" / str(pid)
    cached = sorted(p.name for p in folder.glob("coords-*.npy"))
    assert len(cached) == 1

    body = c.get(f"/api/projects/{pid}/map").json()
    assert sorted(body["item_ids"]) == sorted(by_name.values())
    n = len(body["item_ids"])
    for key in ("x", "y", "human", "draft", "uncertainty", "flagged"):
        assert len(body[key]) == n, key
    assert body["method"] == "umap" and body["backbone"] == "classic" and not body["stale"]
    assert body["model_version_id"] is not None and body["job"]["id"] == job["id"]
    assert set(body["classes"]) == set(SOURCES)
    xy = np.column_stack([body["x"], body["y"]])
    assert np.isfinite(xy).all() and len(np.unique(xy.round(3), axis=0)) > 20
    # colours: 9 human labels, a draft for every item
    labelled = [h for h in body["human"] if h >= 0]
    assert len(labelled) == 9 and all(d >= 0 for d in body["draft"])
    pos = {i: k for k, i in enumerate(body["item_ids"])}
    # tiles of one texture sit closer to each other than to the other textures
    centre = {
        cls: xy[[pos[by_name[f"{cls}_{k:02d}.png"]] for k in range(8)]].mean(axis=0)
        for cls in SOURCES
    }
    for cls in SOURCES:
        own = xy[[pos[by_name[f"{cls}_{k:02d}.png"]] for k in range(8)]]
        near = np.linalg.norm(own - centre[cls], axis=1).mean()
        far = min(np.linalg.norm(centre[cls] - centre[o]) for o in SOURCES if o != cls)
        assert near < far, (cls, near, far)

    # a second POST finds the cache: no new file, the same coordinates
    r = c.post(f"/api/projects/{pid}/map")
    second = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert second["status"] == "done" and second["result"]["cached"] is True, second
    assert sorted(p.name for p in folder.glob("coords-*.npy")) == cached
    again = c.get(f"/api/projects/{pid}/map").json()
    assert again["x"] == body["x"] and again["job"]["id"] == second["id"]

    # a label given now colours the map at once (no recomputation)
    unlabelled = next(i for i, h in zip(body["item_ids"], body["human"], strict=True) if h < 0)
    r = c.put(
        f"/api/projects/{pid}/items/{unlabelled}/label",
        json={"kind": "class", "label": "neutrophil"},
    )
    assert r.status_code == 200, r.text
    now = c.get(f"/api/projects/{pid}/map").json()
    k = now["item_ids"].index(unlabelled)
    assert now["classes"][now["human"][k]] == "neutrophil"


def test_map_bad_input_and_items_by_ids(mapped_project: dict[str, Any]) -> None:
    c, pid, by_name = mapped_project["c"], mapped_project["pid"], mapped_project["by_name"]
    assert c.post(f"/api/projects/{pid}/map?method=pca").status_code == 422
    r = c.post(f"/api/projects/{pid}/map?method=tsne")
    assert r.status_code == 202, r.text
    assert c.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"
    body = c.get(f"/api/projects/{pid}/map?method=tsne").json()
    assert body["method"] == "tsne" and len(body["item_ids"]) == 26

    wanted = [by_name["monocyte_03.png"], by_name["neutrophil_01.png"], 10**6]
    r = c.post(f"/api/projects/{pid}/items/by-ids", json={"item_ids": wanted})
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["data"]] == wanted[:2]  # order kept, unknown left out
    assert r.json()["data"][1]["annotation"]["label"] == "neutrophil"


def test_map_without_features_is_a_conflict(
    settings: Any, make_user: Any, make_project: Any, login: Any
) -> None:
    owner = make_user()
    project = make_project(owner, settings_={"ensemble": ["classic"]})
    c = login(owner)
    r = c.post(f"/api/projects/{project.id}/map")
    assert r.status_code == 409 and "features" in r.json()["detail"]["message"], r.text


def _map_children(settings: Any, parent_id: int) -> list[Job]:
    with session_scope(settings.db_url, write=False) as db:
        ids = chunks.children_of(db, jobs.get_job(db, parent_id))
        rows = list(db.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))
        db.expunge_all()
    return rows


def _same_features(settings: Any, pid: int) -> np.ndarray:
    """The rows the map job embeds, read as the unchunked job always read them."""
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, pid)
        _, matrix, _, rows = map_service._features(db, settings, project)
    return np.asarray(matrix[rows], dtype=np.float32)


def test_chunked_map_equals_the_unchunked_map(
    mapped_project: dict[str, Any], settings: Any
) -> None:
    """Issue 15: 26 items in chunks of 8 rows (4 chunk jobs, run inline here), a
    sample of 10 so that most rows are placed by the chunks: the map of one run."""
    pid = mapped_project["pid"]
    params = {"project_id": pid, "method": "umap", "chunk_rows": 8, "fit_sample": 10}
    job = jobs.submit(settings, kind="map", project_id=pid, params=params, user_id=None)
    assert job.status == "done", job.error
    assert job.progress == 1.0 and job.result["chunks"] == 4 and not job.result["cached"]
    children = _map_children(settings, job.id)
    assert [c.kind for c in children] == ["map.chunk"] * 4
    assert [c.status for c in children] == ["done"] * 4
    assert [c.result["rows"] for c in children] == [8, 8, 8, 2]

    folder = settings.home / "maps" / str(pid)
    key = job.result["key"]
    got = np.load(folder / f"coords-{key}.npy")
    want = embed_2d(_same_features(settings, pid), method="umap", seed=0, fit_sample=10)
    assert got.shape == (26, 2) and len(np.unique(got.round(3), axis=0)) > 20
    np.testing.assert_allclose(got, want, atol=1e-5)  # chunking changes nothing
    assert json.loads((folder / "latest-umap.json").read_text())["chunks"] == 4
    assert not (folder / "_chunks" / str(job.id)).exists()  # the parts are cleaned up

    # the same again finds the cache at once: no chunk jobs
    again = jobs.submit(settings, kind="map", project_id=pid, params=params, user_id=None)
    assert again.result["cached"] is True and again.result["chunks"] == 0
    assert "_chunks" not in again.params


def test_cancelled_chunked_map_keeps_the_old_map(
    mapped_project: dict[str, Any], settings: Any
) -> None:
    c, pid = mapped_project["c"], mapped_project["pid"]
    r = c.post(f"/api/projects/{pid}/map")  # the default map, computed inline
    assert c.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"
    folder = settings.home / "maps" / str(pid)
    before = json.loads((folder / "latest-umap.json").read_text())
    old = c.get(f"/api/projects/{pid}/map").json()

    queued = settings.model_copy(update={"jobs_immediate": False})  # nothing consumes it
    params = {"project_id": pid, "method": "umap", "chunk_rows": 8, "fit_sample": 10}
    job = jobs.submit(queued, kind="map", project_id=pid, params=params, user_id=None)
    assert job_runner.run_job(queued, job.id) == "running"  # fitted, split, waiting
    first, *rest = _map_children(queued, job.id)
    assert len(rest) == 3 and job_runner.run_job(queued, first.id) == "done"
    with session_scope(queued.db_url) as db:
        jobs.cancel_job(db, job.id, user_id=None)
    assert jobs.fetch_job(queued, job.id).status == "cancelled"
    assert [k.status for k in _map_children(queued, job.id)] == ["done"] + ["cancelled"] * 3
    assert job_runner.run_job(queued, rest[0].id) is None
    assert json.loads((folder / "latest-umap.json").read_text()) == before
    assert sorted(p.name for p in folder.glob("coords-*.npy")) == [f"coords-{before['key']}.npy"]
    now = c.get(f"/api/projects/{pid}/map").json()
    assert now["x"] == old["x"] and now["item_ids"] == old["item_ids"]

    # a retry runs only the cancelled chunks (the plan's model was kept), then finalize
    jobs.retry_job(queued, job.id, user_id=None)
    for child in rest:
        assert job_runner.run_job(queued, child.id) == "done"
    assert job_runner.run_job(queued, job.id) == "done"
    done = jobs.fetch_job(queued, job.id)
    assert done.result["chunks"] == 4 and done.result["key"] != before["key"]
    latest = json.loads((folder / "latest-umap.json").read_text())
    assert latest["key"] == done.result["key"] and latest["job_id"] == job.id
