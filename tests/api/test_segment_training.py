"""2-D segmentation training: the segment_train job, heatmaps, extract points, accept mask."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tests.api.segment_helpers import (
    FAST,
    SCHEMA,
    add_image_item,
    clicks_from,
    coins_crop,
    coins_truth,
)


def _project(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path, **extra: Any
) -> tuple[Any, Any, list[Any]]:
    owner = make_user()
    project = make_project(owner, task="segment", schema=SCHEMA, settings_={**FAST, **extra})
    image = coins_crop()
    items = [
        add_image_item(settings, project, image, tmp_path / "img", "a.png"),
        add_image_item(
            settings, project, np.ascontiguousarray(image[::-1]), tmp_path / "img", "b.png"
        ),
    ]
    return login(owner), project, items


def _label(client: Any, project: Any, item: Any, n: int = 12) -> None:
    truth = coins_truth(coins_crop())
    r = client.put(
        f"/api/projects/{project.id}/segment/items/{item.id}/annotation",
        json={"version": 0, "points": clicks_from(truth, n)},
    )
    assert r.status_code == 200, r.text


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


def test_train_heatmap_extract_accept_and_grid(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, (item, other) = _project(make_user, make_project, login, settings, tmp_path)
    base = f"/api/projects/{project.id}/segment"
    r = client.get(f"{base}/items/{item.id}/heatmap.png")
    assert r.status_code == 404 and "no_prediction" in r.text
    # one class only: not trainable yet
    r = client.put(
        f"{base}/items/{item.id}/annotation",
        json={"version": 0, "points": [{"x": 5, "y": 5, "value": 0}]},
    )
    assert client.post(f"{base}/train", json={}).status_code == 422
    truth = coins_truth(coins_crop())
    client.put(
        f"{base}/items/{item.id}/annotation",
        json={"version": 1, "points": clicks_from(truth, 12)},
    )
    r = client.post(f"{base}/train", json={"item_id": item.id})
    assert r.status_code == 202, r.text
    job = client.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    assert job["kind"] == "segment_train"
    result = job["result"]
    assert result["heatmap_rev"] >= 1 and result["epoch"] >= 1
    assert set(result) >= {"epoch", "loss", "val_dice", "heatmap_rev"}
    status = client.get(f"{base}/status").json()
    assert status["job"]["id"] == job["id"]
    metrics = status["last_version"]["metrics"]
    assert status["last_version"]["active"] is True
    assert set(metrics["val_dice"]) == {"background", "coin"}
    assert metrics["mean_dice"] > 0.8
    assert status["settings"]["patience"] == 5 and status["settings"]["pixel_features"] == "filters"
    # heatmaps
    r = client.get(f"{base}/items/{other.id}/heatmap.png?max_size=64")
    assert r.status_code == 200 and r.headers["X-Model-Version"] == str(result["model_version_id"])
    heat = np.asarray(Image.open(io.BytesIO(r.content)))
    assert heat.shape == (48, 64, 4)
    r = client.get(f"{base}/items/{item.id}/heatmap.png")
    heat = np.asarray(Image.open(io.BytesIO(r.content)))
    assert heat.shape == (96, 128, 4)
    fg = heat[..., 1] > heat[..., 0]
    assert _dice(fg, truth == 1) > 0.85
    r = client.get(f"{base}/items/{item.id}/heatmap.png?layer=uncertainty")
    assert r.status_code == 200
    assert client.get(f"{base}/items/{item.id}/heatmap.png?layer=x").status_code == 422
    # extract points: replaces extracted ones, keeps human ones
    r = client.post(
        f"{base}/items/{item.id}/extract-points", json={"max_points": 40, "min_distance": 4}
    )
    assert r.status_code == 200, r.text
    points = r.json()["points"]
    extracted = [p for p in points if p["source"] == "extracted"]
    assert len([p for p in points if p["source"] == "human"]) == 24
    assert 20 <= len(extracted) <= 80
    assert {p["value"] for p in extracted} == {0, 1}
    # extracted points lie where the model is confident of their class
    agree = sum(fg[int(p["y"]), int(p["x"])] == bool(p["value"]) for p in extracted)
    assert agree / len(extracted) > 0.95
    right = sum(truth[int(p["y"]), int(p["x"])] == p["value"] for p in extracted)
    assert right / len(extracted) > 0.75
    r = client.post(f"{base}/items/{item.id}/extract-points", json={"max_points": 5})
    assert len([p for p in r.json()["points"] if p["source"] == "extracted"]) <= 10
    assert len(r.json()["points"]) <= 34
    # accept the prediction as the mask of the other item
    r = client.post(f"{base}/items/{other.id}/accept-mask", json={"threshold": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["has_mask"] is True and r.json()["origin"] == "model_accepted"
    mask = np.asarray(
        Image.open(io.BytesIO(client.get(f"{base}/items/{other.id}/mask.png").content))
    )
    assert _dice(mask == 1, truth[::-1] == 1) > 0.85
    history = client.get(f"/api/projects/{project.id}/items/{other.id}/history").json()["data"]
    assert history[-1]["after"]["origin"] == "model_accepted"
    assert history[-1]["after"]["model_version_id"] == result["model_version_id"]
    # the grid: drafts with foreground fraction and uncertainty, sortable by uncertainty
    r = client.get(f"/api/projects/{project.id}/items?sort=-uncertainty")
    assert r.status_code == 200, r.text
    drafts = [row["draft"] for row in r.json()["data"]]
    assert all(d is not None for d in drafts)
    fractions = [d["confidence"] for d in drafts]
    assert all(0.2 < f < 0.8 for f in fractions), fractions
    uncertainties = [d["uncertainty"] for d in drafts]
    assert uncertainties == sorted(uncertainties, reverse=True)


def test_second_training_is_409_conflict(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    from loupe.db.session import session_scope
    from loupe.jobs.core import create_job

    client, project, (item, _other) = _project(make_user, make_project, login, settings, tmp_path)
    _label(client, project, item)
    with session_scope(settings.db_url) as db:
        create_job(db, kind="segment_train", project_id=project.id, params={}, user_id=None)
    r = client.post(f"/api/projects/{project.id}/segment/train", json={})
    assert r.status_code == 409, r.text
    assert r.json()["detail"]["code"] == "conflict"


def test_early_stopping_stops_before_max_epochs(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, (item, _other) = _project(
        make_user, make_project, login, settings, tmp_path, patience=2, min_delta=5.0
    )
    _label(client, project, item)
    r = client.post(f"/api/projects/{project.id}/segment/train", json={"item_id": item.id})
    job = client.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    # epoch 1 improves on nothing-yet; epochs 2 and 3 cannot gain 5.0 in loss: stop at 3
    assert job["result"]["epoch"] == 3 and job["result"]["stopped_early"] is True
    message = json.loads(job["message"]) if job["message"].startswith("{") else None
    assert message is None or message.get("epoch", 3) <= 3
    metrics = client.get(f"/api/projects/{project.id}/segment/status").json()["last_version"]
    assert metrics["metrics"]["epochs"] == 3


def test_failed_run_leaves_previous_model_active(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, (item, other) = _project(make_user, make_project, login, settings, tmp_path)
    _label(client, project, item)
    first = client.post(f"/api/projects/{project.id}/segment/train", json={}).json()
    first = client.get(f"/api/jobs/{first['id']}").json()
    assert first["status"] == "done"
    v1 = first["result"]["model_version_id"]
    # an unlabelled image gone from disk only loses its draft
    Path(other.uri).rename(tmp_path / "moved.png")
    shutil.rmtree(settings.home / "segments" / str(project.id) / "pixels")
    again = client.post(f"/api/projects/{project.id}/segment/train", json={}).json()
    again = client.get(f"/api/jobs/{again['id']}").json()
    assert again["status"] == "done" and list(again["result"]["unreadable"]) == [str(other.id)]
    v1 = again["result"]["model_version_id"]
    # the next run cannot read its labelled image (moved, features not cached): it fails
    Path(item.uri).rename(tmp_path / "moved-a.png")
    shutil.rmtree(settings.home / "segments" / str(project.id) / "pixels")
    second = client.post(f"/api/projects/{project.id}/segment/train", json={}).json()
    second = client.get(f"/api/jobs/{second['id']}").json()
    assert second["status"] == "failed", second
    status = client.get(f"/api/projects/{project.id}/segment/status").json()
    assert status["last_version"]["id"] == v1 and status["last_version"]["active"] is True
    rows = client.get(f"/api/projects/{project.id}/versions").json()["data"]
    by_id = {v["id"]: v for v in rows}
    assert by_id[v1]["active"] is True
    assert sorted(v["status"] for v in by_id.values()) == ["failed", "ready", "ready"]
    r = client.get(f"/api/projects/{project.id}/segment/items/{item.id}/heatmap.png")
    assert r.status_code == 200 and r.headers["X-Model-Version"] == str(v1)


def test_stop_mid_run_keeps_the_previous_version_and_drops_the_live_heatmap(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    import pytest

    from loupe.jobs.context import JobCancelled
    from loupe.services.segments.train import train_segment

    client, project, (item, _other) = _project(make_user, make_project, login, settings, tmp_path)
    _label(client, project, item)
    v1 = train_segment(settings, project.id)["model_version_id"]
    seen: list[dict[str, Any]] = []

    def report(_fraction: float, message: dict[str, Any]) -> None:
        seen.append(message)
        if message.get("epoch") == 3:  # the Stop button: the job's next cancel check
            raise JobCancelled("cancelled on request")

    with pytest.raises(JobCancelled):
        train_segment(settings, project.id, view_item_id=item.id, report=report)
    revs = [m["heatmap_rev"] for m in seen if "epoch" in m]
    assert revs == [1, 2, 3]  # heatmap_every=1: a new heatmap every epoch
    status = client.get(f"/api/projects/{project.id}/segment/status").json()
    assert status["last_version"]["id"] == v1 and status["last_version"]["active"] is True
    r = client.get(f"/api/projects/{project.id}/segment/items/{item.id}/heatmap.png")
    assert r.headers["X-Model-Version"] == str(v1)  # the stopped run's live heatmap is gone
