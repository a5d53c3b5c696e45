"""PUT .../mask/region: a brush edit pastes only its bounding box into the stored mask,
with the same checks, versions and audit events as a whole-mask save."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tests.api.segment_helpers import SCHEMA, add_image_item, coins_crop, coins_truth, png

HEADERS = {"Content-Type": "image/png"}


def _setup(make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path) -> Any:
    owner = make_user()
    project = make_project(owner, task="segment", schema=SCHEMA)
    item = add_image_item(settings, project, coins_crop(), tmp_path / "img", "coins_a.png")
    client = login(owner)
    return client, project, item, f"/api/projects/{project.id}/segment/items/{item.id}"


def _mask(client: Any, base: str) -> np.ndarray:
    r = client.get(f"{base}/mask.png")
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _history(client: Any, project: Any, item: Any) -> list[dict[str, Any]]:
    r = client.get(f"/api/projects/{project.id}/items/{item.id}/history")
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def test_region_is_pasted_and_the_rest_is_kept(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item, base = _setup(make_user, make_project, login, settings, tmp_path)
    truth = coins_truth(coins_crop())
    r = client.put(f"{base}/mask?version=0", content=png(truth), headers=HEADERS)
    assert r.status_code == 200, r.text
    client.put(f"{base}/annotation", json={"version": 1, "points": [{"x": 3, "y": 4, "value": 1}]})

    region = np.zeros((7, 11), np.uint8)
    region[2:5, 3:9] = 1
    r = client.put(f"{base}/mask/region?x=100&y=80&version=2", content=png(region), headers=HEADERS)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["version"] == 3 and out["has_mask"] and out["origin"] == "human"
    assert out["points"] == [{"x": 3.0, "y": 4.0, "value": 1, "source": "human"}]

    expected = truth.copy()
    expected[80:87, 100:111] = region
    got = _mask(client, base)
    assert got.shape == truth.shape
    assert np.array_equal(got, expected)
    assert not np.array_equal(got, truth)  # the region did change something

    # The audit history records it like a whole-mask save, plus the pasted box.
    history = _history(client, project, item)
    assert [e["version"] for e in history] == [1, 2, 3]
    whole, last = history[0], history[2]
    assert last["source"] == whole["source"] == "segment"
    assert last["action"] == whole["action"] == "set"
    assert last["after"]["kind"] == whole["after"]["kind"] == "mask"
    assert last["after"]["data"]["mask_region"] == {"x": 100, "y": 80, "width": 11, "height": 7}
    assert "mask_region" not in whole["after"]["data"]
    assert last["before"]["data"]["mask"] == history[1]["after"]["data"]["mask"]
    assert last["after"]["data"]["mask"] != last["before"]["data"]["mask"]
    rel = last["after"]["data"]["mask"]
    assert (settings.home / "segments" / str(project.id) / rel).is_file()

    # Pasting what is already there changes nothing: no version, no event.
    r = client.put(f"{base}/mask/region?x=100&y=80&version=3", content=png(region), headers=HEADERS)
    assert r.status_code == 200 and r.json()["version"] == 3
    assert len(_history(client, project, item)) == 3


def test_region_errors_leave_the_mask_alone(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item, base = _setup(make_user, make_project, login, settings, tmp_path)
    truth = coins_truth(coins_crop())  # 96 rows x 128 columns
    assert (
        client.put(f"{base}/mask?version=0", content=png(truth), headers=HEADERS).status_code == 200
    )
    ones = np.ones((10, 10), np.uint8)

    # Outside the image (right edge, bottom edge, far away) and negative offsets: 422.
    for x, y in ((119, 0), (0, 87), (500, 500)):
        r = client.put(
            f"{base}/mask/region?x={x}&y={y}&version=1", content=png(ones), headers=HEADERS
        )
        assert r.status_code == 422, (x, y, r.text)
        assert "outside" in r.text
    r = client.put(f"{base}/mask/region?x=-1&y=0&version=1", content=png(ones), headers=HEADERS)
    assert r.status_code == 422, r.text
    # The last column and row still fit.
    r = client.put(f"{base}/mask/region?x=118&y=86&version=1", content=png(ones), headers=HEADERS)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text

    # An unknown label value (the schema has 0 and 1): 422 naming it.
    r = client.put(f"{base}/mask/region?x=0&y=0&version=2", content=png(ones * 7), headers=HEADERS)
    assert r.status_code == 422 and "[7]" in r.text, r.text
    # Not a PNG, or an RGB one: 422.
    r = client.put(f"{base}/mask/region?x=0&y=0&version=2", content=b"nope", headers=HEADERS)
    assert r.status_code == 422, r.text
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(buf, "PNG")
    r = client.put(f"{base}/mask/region?x=0&y=0&version=2", content=buf.getvalue(), headers=HEADERS)
    assert r.status_code == 422, r.text

    # A stale version: 409.
    r = client.put(f"{base}/mask/region?x=0&y=0&version=1", content=png(ones), headers=HEADERS)
    assert r.status_code == 409, r.text

    expected = truth.copy()
    expected[86:96, 118:128] = 1
    assert np.array_equal(_mask(client, base), expected)
    assert [e["version"] for e in _history(client, project, item)] == [1, 2]


def test_region_on_an_item_without_mask_creates_one(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item, base = _setup(make_user, make_project, login, settings, tmp_path)
    assert client.get(f"{base}/mask.png").status_code == 404
    region = np.ones((5, 6), np.uint8)
    region[0, 0] = 0
    r = client.put(f"{base}/mask/region?x=20&y=30&version=0", content=png(region), headers=HEADERS)
    assert r.status_code == 200, r.text
    assert r.json()["has_mask"] is True and r.json()["version"] == 1
    got = _mask(client, base)
    assert got.shape == (96, 128)
    assert np.array_equal(got[30:35, 20:26], region)
    assert int(got.sum()) == int(region.sum())  # zeros everywhere else
    (event,) = _history(client, project, item)
    assert event["before"] is None
    assert event["after"]["data"]["mask_region"] == {"x": 20, "y": 30, "width": 6, "height": 5}


def test_region_needs_an_annotator(
    make_user: Any, make_project: Any, login: Any, settings: Any, tmp_path: Path
) -> None:
    client, project, item, base = _setup(make_user, make_project, login, settings, tmp_path)
    ones = png(np.ones((2, 2), np.uint8))
    stranger = login(make_user())
    r = stranger.put(f"{base}/mask/region?x=0&y=0&version=0", content=ones, headers=HEADERS)
    assert r.status_code in (403, 404), r.text
    assert client.get(f"{base}/mask.png").status_code == 404
