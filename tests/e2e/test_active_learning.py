"""Active learning in the browser (issue 12, items 3-4): the queue selector and Pull
load the next items into the grid and the keys label straight through them;
'Similar' on a tile loads its neighbours; the map page computes and draws the map,
and a click on a point loads that item into the grid."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.e2e.api_helpers import create_project, put_label

pytestmark = pytest.mark.e2e

MAP_S = 180_000  # ms: the map job (t-SNE of a dozen items) plus a cold worker


def _grid_ids(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.locator(".tile[data-item-id]").evaluate_all(
            "els => els.map(e => e.dataset.itemId)"
        )
    ]


def test_queue_similar_and_map(
    page: Any, live_server: Any, ui_login: Any, folder: Any, upload: Any
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, f"Active learning {uuid.uuid4().hex[:6]}")
    ids = upload(api, pid, sorted(folder.glob("*/*.png")))
    assert len(ids) == 12
    # P-001 tiles alternate between the two source images: label two of each
    labelled = {ids[0]: "tumour", ids[2]: "tumour", ids[1]: "stroma", ids[3]: "stroma"}
    for item_id, cls in labelled.items():
        put_label(api, pid, item_id, {"kind": "class", "label": cls, "version": 0})
    live_server.train(pid, members=("classic",))

    # The queue: pick 'uncertain', Pull -> the 8 unlabelled items, leased to alice.
    ui_login(page, "alice", path=f"/projects/{pid}")
    expect(page.locator(".tile[data-item-id]")).to_have_count(12)
    page.get_by_label("Strategy").select_option("uncertain")
    page.get_by_role("button", name="Pull").click()
    expect(page.get_by_text("Queue: uncertain (8)")).to_be_visible()
    expect(page.locator(".tile[data-item-id]")).to_have_count(8)
    queued = _grid_ids(page)
    assert not set(queued) & set(labelled)
    expect(page.get_by_test_id("queue-progress")).to_contain_text("accuracy")
    expect(page.get_by_test_id("queue-progress")).to_contain_text("mean uncertainty")
    # the band strategy shows its class and range sliders
    page.get_by_label("Strategy").select_option("band")
    expect(page.get_by_label("Band class")).to_be_visible()
    expect(page.get_by_label("Band from")).to_be_visible()
    page.get_by_label("Strategy").select_option("uncertain")

    # Keyboard labelling straight through the queue: 1 labels the first and moves on.
    page.get_by_role("listbox", name="Items").focus()
    page.keyboard.press("1")
    page.keyboard.press("2")
    deadline = time.monotonic() + 10
    while True:
        got = {
            i["id"]: (i["annotation"] or {}).get("label")
            for i in api.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()["data"]
        }
        if got[queued[0]] == "tumour" and got[queued[1]] == "stroma":
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)

    # 'Similar' on a tile: the item itself first, then its 11 neighbours.
    first = page.locator(f".tile[data-item-id='{queued[2]}']")
    first.hover()
    first.get_by_role("button", name=re.compile("^Similar to")).click()
    expect(page.get_by_text(re.compile(r"^Similar to "))).to_be_visible()
    expect(page.locator(".tile[data-item-id]")).to_have_count(12)
    assert _grid_ids(page)[0] == queued[2]

    # The map: none yet -> compute it from the page (t-SNE: no numba compilation).
    page.get_by_role("link", name="Map", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/projects/{pid}/map$"))
    expect(page.get_by_role("heading", name="No map yet")).to_be_visible()
    page.get_by_label("Method").select_option("tsne")
    page.get_by_role("button", name="Compute map").first.click()
    canvas = page.get_by_test_id("map-canvas")
    expect(canvas).to_be_visible(timeout=MAP_S)
    expect(canvas).to_have_attribute("data-points", "12")
    expect(page.get_by_label("Legend")).to_contain_text("tumour")
    # the canvas has pixels of the class colours (it drew something)
    painted = canvas.evaluate(
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
    )
    assert painted > 50, painted

    # Click a point: the map's own fit (coordinates in [-1, 1], 92% of the short side).
    body = api.get(f"/api/projects/{pid}/map").json()
    box = canvas.bounding_box()
    scale = min(box["width"], box["height"]) / 2 * 0.92
    k = body["item_ids"].index(queued[3])
    x = box["width"] / 2 + body["x"][k] * scale
    y = box["height"] / 2 - body["y"][k] * scale
    canvas.hover(position={"x": x, "y": y})
    expect(page.get_by_text(f"#{queued[3]} ·")).to_be_visible()  # the tooltip
    canvas.click(position={"x": x, "y": y})
    expect(page).to_have_url(re.compile(rf"/projects/{pid}\?sel=ids$"))
    expect(page.get_by_text(re.compile(r"^Map: item #"))).to_be_visible()
    expect(page.locator(".tile[data-item-id]")).to_have_count(1)
    # two points can overlap at a dozen items: the one loaded is the one under the cursor
    picked = _grid_ids(page)[0]
    j = body["item_ids"].index(picked)
    assert (
        abs(body["x"][j] - body["x"][k]) * scale < 9
        and abs(body["y"][j] - body["y"][k]) * scale < 9
    )
    page.get_by_role("button", name="✕ back to list").click()
    expect(page.locator(".tile[data-item-id]")).to_have_count(12)

    # Shift+drag a lasso around the whole map: every item loads into the grid.
    page.get_by_role("link", name="Map", exact=True).click()
    canvas = page.get_by_test_id("map-canvas")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + 3, box["y"] + 3
    x1, y1 = box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
    page.keyboard.down("Shift")
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        page.mouse.move(x, y, steps=4)
    page.mouse.up()
    page.keyboard.up("Shift")
    expect(page.get_by_text("Map lasso (12)")).to_be_visible()
    expect(page.locator(".tile[data-item-id]")).to_have_count(12)
    api.close()
