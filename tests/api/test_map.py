"""The 2-D map as a job (issue 12, item 3): real features of real images, a cache on
disk, coordinates for every item, reuse while the features are unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.api.test_queues import SOURCES
from tests.api.texture_helpers import trained_texture_project


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
