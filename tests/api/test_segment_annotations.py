"""2-D segmentation annotations: points, scribbles, masks, versions, audit, import/export."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tests.api.segment_helpers import SCHEMA, add_image_item, coins_crop, coins_truth, png


def _setup(make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path) -> Any:
    owner = make_user()
    project = make_project(owner, task="segment", schema=SCHEMA)
    item = add_image_item(settings, project, coins_crop(), tmp_path / "img", "coins_a.png")
    return login(owner), project, item


def test_points_and_scribbles_roundtrip_with_versions_and_audit(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item = _setup(make_user, make_project, login, settings, tmp_path)
    base = f"/api/projects/{project.id}/segment/items/{item.id}"
    r = client.get(f"{base}/annotation")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "item_id": item.id,
        "version": 0,
        "width": 128,
        "height": 96,
        "points": [],
        "scribbles": [],
        "has_mask": False,
        "origin": None,
    }
    body = {
        "version": 0,
        "points": [{"x": 10, "y": 20, "value": 1}, {"x": 100.5, "y": 5, "value": 0}],
        "scribbles": [{"value": 0, "width": 4, "path": [[1, 1], [40, 2], [60, 3]]}],
    }
    r = client.put(f"{base}/annotation", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == 1 and out["origin"] == "human"
    assert out["points"][1] == {"x": 100.5, "y": 5.0, "value": 0, "source": "human"}
    assert out["scribbles"][0]["path"] == [[1.0, 1.0], [40.0, 2.0], [60.0, 3.0]]
    # a stale version is a 409 and changes nothing
    r = client.put(f"{base}/annotation", json={**body, "points": []})
    assert r.status_code == 409, r.text
    assert client.get(f"{base}/annotation").json()["points"] == out["points"]
    # a click outside the image, a vertex outside, an unknown class: 422
    for bad in (
        {"points": [{"x": 128, "y": 5, "value": 1}]},
        {"points": [{"x": -1, "y": 5, "value": 1}]},
        {"scribbles": [{"value": 1, "path": [[5, 5], [5, 96]]}]},
        {"points": [{"x": 3, "y": 5, "value": 7}]},
    ):
        r = client.put(f"{base}/annotation", json={"version": 1, **bad})
        assert r.status_code == 422, (bad, r.text)
    r = client.put(f"{base}/annotation", json={**body, "version": 1, "points": body["points"][:1]})
    assert r.status_code == 200 and r.json()["version"] == 2
    history = client.get(f"/api/projects/{project.id}/items/{item.id}/history").json()["data"]
    assert [e["version"] for e in history] == [1, 2]
    assert history[1]["before"]["data"]["points"][1]["x"] == 100.5
    assert len(history[1]["after"]["data"]["points"]) == 1
    assert {e["source"] for e in history} == {"segment"}


def test_mask_put_get_and_errors(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item = _setup(make_user, make_project, login, settings, tmp_path)
    base = f"/api/projects/{project.id}/segment/items/{item.id}"
    assert client.get(f"{base}/mask.png").status_code == 404
    truth = coins_truth(coins_crop())
    headers = {"Content-Type": "image/png"}
    r = client.put(f"{base}/mask?version=0", content=png(truth), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["has_mask"] is True and r.json()["version"] == 1
    got = np.asarray(Image.open(io.BytesIO(client.get(f"{base}/mask.png").content)))
    assert np.array_equal(got, truth)
    # wrong size, unknown label value, stale version
    small = png(truth[:50])
    assert client.put(f"{base}/mask?version=1", content=small, headers=headers).status_code == 422
    bad = png(truth * 9)
    assert client.put(f"{base}/mask?version=1", content=bad, headers=headers).status_code == 422
    r = client.put(f"{base}/mask?version=0", content=png(truth), headers=headers)
    assert r.status_code == 409
    # an edit keeps the points and writes a new file; the old version's file stays
    client.put(f"{base}/annotation", json={"version": 1, "points": [{"x": 1, "y": 1, "value": 0}]})
    edited = (1 - truth).astype(np.uint8)
    r = client.put(f"{base}/mask?version=2", content=png(edited), headers=headers)
    assert r.status_code == 200 and len(r.json()["points"]) == 1
    history = client.get(f"/api/projects/{project.id}/items/{item.id}/history").json()["data"]
    files = {e["after"]["data"]["mask"] for e in history}
    assert len(files) == 2
    for rel in files:
        assert (settings.home / "segments" / str(project.id) / rel).is_file()


def test_export_and_import_masks(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    from loupe.services.segments.exports import rle_decode

    client, project, item = _setup(make_user, make_project, login, settings, tmp_path)
    other = add_image_item(
        settings, project, np.ascontiguousarray(coins_crop()[:, ::-1]), tmp_path / "img", "b.png"
    )
    truth = coins_truth(coins_crop())
    base = f"/api/projects/{project.id}/segment"
    headers = {"Content-Type": "image/png"}
    assert (
        client.put(
            f"{base}/items/{item.id}/mask?version=0", content=png(truth), headers=headers
        ).status_code
        == 200
    )
    client.put(
        f"{base}/items/{item.id}/annotation",
        json={"version": 1, "points": [{"x": 4, "y": 6, "value": 1}]},
    )
    r = client.get(f"{base}/export.zip")
    assert r.status_code == 200, r.text
    # the same archive through the project export job (format segment_masks)
    job = client.post(f"/api/projects/{project.id}/exports", json={"format": "segment_masks"})
    assert job.status_code == 202, job.text
    done = client.get(f"/api/jobs/{job.json()['id']}").json()
    assert done["status"] == "done" and done["result"]["masks"] == 1, done
    dl = client.get(f"/api/exports/{done['id']}/download")
    assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip"
    assert sorted(zipfile.ZipFile(io.BytesIO(dl.content)).namelist()) == sorted(
        zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    )
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    assert np.array_equal(np.asarray(Image.open(zf.open("masks/coins_a.png"))), truth)
    coco = __import__("json").loads(zf.read("coco.json"))
    (ann,) = coco["annotations"]
    assert ann["category_id"] == 1 and ann["area"] == int(truth.sum())
    assert np.array_equal(rle_decode(ann["segmentation"]["counts"], (96, 128)), truth == 1)
    rows = list(csv.DictReader(io.StringIO(zf.read("points.csv").decode())))
    assert rows == [
        {
            "item_id": str(item.id),
            "filename": "coins_a.png",
            "x": "4.0",
            "y": "6.0",
            "value": "1",
            "class": "coin",
            "source": "human",
        }
    ]
    # import: a ZIP with a mask for b.png (by stem, "_mask" tail) and one that matches nothing
    flipped = np.ascontiguousarray(truth[:, ::-1])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        out.writestr("b_mask.png", png(flipped))
        out.writestr("nobody.png", png(flipped))
    r = client.post(
        f"{base}/masks/import", content=buf.getvalue(), headers={"Content-Type": "application/zip"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["imported"] == 1 and len(r.json()["skipped"]) == 1
    got = np.asarray(
        Image.open(io.BytesIO(client.get(f"{base}/items/{other.id}/mask.png").content))
    )
    assert np.array_equal(got, flipped)


def test_roles_and_non_segment_projects(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path, db: Any
) -> None:
    from loupe.services.projects import core as projects

    client, project, item = _setup(make_user, make_project, login, settings, tmp_path)
    viewer = make_user()
    from loupe.db.models import Project

    projects.add_member(db, db.get(Project, project.id), email=viewer.email, role="viewer")
    db.commit()
    v = login(viewer)
    base = f"/api/projects/{project.id}/segment"
    assert v.get(f"{base}/items/{item.id}/annotation").status_code == 200
    assert v.get(f"{base}/status").status_code == 200
    body = {"version": 0, "points": [{"x": 1, "y": 1, "value": 1}]}
    assert v.put(f"{base}/items/{item.id}/annotation", json=body).status_code == 403
    assert v.post(f"{base}/train", json={}).status_code == 403
    stranger = login(make_user())
    assert stranger.get(f"{base}/items/{item.id}/annotation").status_code in (403, 404)
    # a classify project has no segmentation: 409, not a crash
    owner_project = make_project(make_user(), task="classify")
    other = login(make_user())
    assert other.get(f"/api/projects/{owner_project.id}/segment/status").status_code in (403, 404)
    classify = make_project(viewer, task="classify")
    assert v.get(f"/api/projects/{classify.id}/segment/status").status_code == 409
