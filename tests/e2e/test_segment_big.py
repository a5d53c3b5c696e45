"""A big tiled TIFF in the 2-D segmentation editor: it opens on a downscaled preview,
zooming in loads only the visible DeepZoom tiles, the tiles show the right pixels
where the image coordinates say, and a click lands on the full-resolution pixel.
The mask is drawn as a downsampled overview plus a full-resolution canvas of the
zoomed-in part, and a brush stroke is saved as its region, not as the whole mask; so
is its undo, which puts back only the tiles the stroke wrote into."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect
from tests.api.test_segment_big import COLS, PITCH, ROWS, _slide_bytes
from tests.e2e.test_segment import annotation, human, make_project, open_editor, to_screen

pytestmark = pytest.mark.e2e


def _screen_rgb(page: Any, x: float, y: float) -> np.ndarray:
    """The colour the page shows at image pixel (x, y) (a 3 x 3 mean)."""
    sx, sy = to_screen(page, x, y)
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"), np.float64)
    r, c = round(sy), round(sx)
    return shot[r - 1 : r + 2, c - 1 : c + 2].reshape(-1, 3).mean(axis=0)


def _upload_slide(api: Any, pid: int, tmp_path: Path) -> int:
    path = tmp_path / "slide.tif"
    path.write_bytes(_slide_bytes())
    r = api.post(
        f"/api/projects/{pid}/uploads",
        files=[("files", (path.name, path.read_bytes(), "image/tiff"))],
    )
    r.raise_for_status()
    (iid,) = r.json()["item_ids"]
    return int(iid)


def _zoom_at(page: Any, x: float, y: float, times: int = 3) -> None:
    for _ in range(times):
        sx, sy = to_screen(page, x, y)
        page.mouse.move(sx, sy)
        page.mouse.wheel(0, -500)


def test_big_tiff_opens_on_a_preview_and_tiles_when_zoomed(
    page: Any, live_server: Any, ui_login: Any, tmp_path: Path
) -> None:
    pid = make_project(page, ui_login)
    api = live_server.client("alice")
    iid = _upload_slide(api, pid, tmp_path)
    open_editor(page, pid, iid)

    base = page.locator("img.base")
    expect(base).to_have_attribute(
        "src", f"/api/projects/{pid}/segment/items/{iid}/preview.jpg?max_size=2048"
    )
    page.wait_for_function("() => document.querySelector('img.base')?.naturalWidth > 0")
    assert base.evaluate("el => [el.naturalWidth, el.naturalHeight]") == [1707, 2048]
    tiles = page.get_by_test_id("seg-tiles")
    expect(tiles).to_have_attribute("data-count", "0")  # the whole slide: the preview is enough

    # Zoom in at a disc centre until the preview is too coarse: tiles of that part load.
    cx, cy = 2 * PITCH + PITCH // 2, 2 * PITCH + PITCH // 2
    _zoom_at(page, cx, cy)
    stage = page.get_by_test_id("seg-stage")
    scale = float(stage.get_attribute("data-scale") or 0)
    assert scale * max(ROWS, COLS) > 2048, scale
    count = int(tiles.get_attribute("data-count") or 0)
    assert 0 < count <= 60, count
    loaded = "i => i.complete && i.naturalWidth > 0"
    page.wait_for_function(f"() => [...document.querySelectorAll('img.tile')].every({loaded})")
    urls = tiles.locator("img.tile").evaluate_all("els => els.map(e => e.getAttribute('src'))")
    assert all(f"/api/projects/{pid}/items/{iid}/tiles/" in u for u in urls), urls[:3]

    # The tiles sit where the image coordinates say: a disc is bright red, its
    # surroundings dark.
    inside = _screen_rgb(page, cx, cy)
    outside = _screen_rgb(page, cx + 300, cy)
    assert inside[0] > 180 and outside[0] < 110, (inside, outside)

    # A click on the disc centre is saved at that full-resolution pixel.
    page.keyboard.press("1")
    sx, sy = to_screen(page, cx + 0.5, cy + 0.5)
    page.mouse.click(sx, sy)
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    points = human(annotation(api, pid, iid))
    assert [(p["x"], p["y"], p["value"]) for p in points] == [(cx, cy, 1)]


def _pixel(canvas: Any, x: int, y: int) -> list[int]:
    """The RGBA of canvas pixel (x, y) (canvas pixels, not image pixels)."""
    js = f"c => Array.from(c.getContext('2d').getImageData({x}, {y}, 1, 1).data)"
    return list(canvas.evaluate(js))


def _wait_painted(page: Any, testid: str, x: int, y: int) -> None:
    """Wait until canvas pixel (x, y) of the canvas ``testid`` is painted (the mask
    loads and the canvases repaint asynchronously)."""
    page.wait_for_function(
        "([id, x, y]) => { const c = document.querySelector(`[data-testid=${id}]`);"
        " return !!c && c.width > x && c.height > y"
        " && c.getContext('2d').getImageData(x, y, 1, 1).data[3] > 0; }",
        arg=[testid, x, y],
    )


def _mask(api: Any, pid: int, iid: int) -> np.ndarray:
    r = api.get(f"/api/projects/{pid}/segment/items/{iid}/mask.png")
    r.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _wait_cleared(page: Any, testid: str, x: int, y: int) -> None:
    """Wait until canvas pixel (x, y) of the canvas ``testid`` is transparent again."""
    page.wait_for_function(
        "([id, x, y]) => { const c = document.querySelector(`[data-testid=${id}]`);"
        " return !!c && c.getContext('2d').getImageData(x, y, 1, 1).data[3] === 0; }",
        arg=[testid, x, y],
    )


def test_big_mask_overview_detail_and_region_save(
    page: Any, live_server: Any, ui_login: Any, tmp_path: Path
) -> None:
    pid = make_project(page, ui_login)
    api = live_server.client("alice")
    iid = _upload_slide(api, pid, tmp_path)
    open_editor(page, pid, iid)
    page.wait_for_function("() => document.querySelector('img.base')?.naturalWidth > 0")

    # The whole slide in view: one overview canvas of 2 x 2 blocks, no detail canvas.
    overview = page.get_by_test_id("seg-mask")
    expect(overview).to_have_attribute("data-factor", "2")
    assert overview.evaluate("c => [c.width, c.height]") == [COLS // 2, ROWS // 2]
    detail = page.get_by_test_id("seg-mask-detail")
    expect(detail).to_have_count(0)

    # Zoomed in, a full-resolution canvas covers the view (and a margin) in image pixels.
    cx, cy = 2 * PITCH + PITCH // 2, 2 * PITCH + PITCH // 2
    _zoom_at(page, cx, cy)
    expect(detail).to_have_count(1)
    x0, y0, w, h = (int(v) for v in (detail.get_attribute("data-rect") or "").split(","))
    assert x0 <= cx < x0 + w and y0 <= cy < y0 + h and 0 < w <= 4096 and 0 < h <= 4096
    assert detail.evaluate("c => [c.width, c.height]") == [w, h]
    # (its box on screen starts where image pixel (x0, y0) is, unless off screen)
    box = detail.bounding_box()
    ex, ey = to_screen(page, x0, y0)
    assert abs(box["x"] - ex) < 2 and abs(box["y"] - ey) < 2, (box, ex, ey)

    # A brush stroke: the PUT goes to the region route with a small PNG, never the
    # whole-mask route (a 5000 x 6000 PNG).
    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    page.keyboard.press("m")
    page.keyboard.press("1")
    with page.expect_request(lambda r: r.method == "PUT" and "/mask/region" in r.url) as info:
        page.mouse.move(*to_screen(page, cx + 0.5, cy + 0.5))
        page.mouse.down()
        page.mouse.move(*to_screen(page, cx + 20.5, cy + 0.5), steps=4)
        page.mouse.up()
    request = info.value
    assert request.response().ok
    query = parse_qs(urlparse(request.url).query)
    rx, ry = int(query["x"][0]), int(query["y"][0])
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    assert not [u for u in puts if urlparse(u).path.endswith("/mask")], puts

    # The saved mask has the stroke, inside the sent region, and nothing else.
    a = annotation(api, pid, iid)
    assert a["has_mask"] and a["origin"] == "human"
    r = api.get(f"/api/projects/{pid}/segment/items/{iid}/mask.png")
    r.raise_for_status()
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    assert mask.shape == (ROWS, COLS)
    assert mask[cy, cx] == 1 and mask[cy, cx + 20] == 1
    rows, cols = np.nonzero(mask)
    assert set(mask[rows, cols].tolist()) == {1}
    assert 100 < len(rows) < 600, len(rows)  # a 21 px stroke 8 px wide
    assert rows.min() >= ry and cols.min() >= rx
    # The audit history names the pasted box: the stroke's, not the 5000 x 6000 mask.
    history = api.get(f"/api/projects/{pid}/items/{iid}/history").json()["data"]
    sent = history[-1]["after"]["data"]["mask_region"]
    assert (sent["x"], sent["y"]) == (rx, ry) and sent["width"] * sent["height"] < 1_000, sent
    assert rows.max() < ry + sent["height"] and cols.max() < rx + sent["width"]
    assert rows.max() - cy <= 5 and cy - rows.min() <= 5 and cols.max() - cx <= 25

    # Both canvases show it: the detail canvas at full resolution, the overview in blocks.
    _wait_painted(page, "seg-mask-detail", cx - x0, cy - y0)
    assert _pixel(detail, cx - x0, cy - y0 + 30)[3] == 0
    _wait_painted(page, "seg-mask", cx // 2, cy // 2)
    assert _pixel(overview, cx // 2, cy // 2 + 30)[3] == 0

    # Reopened, the saved mask is read back (decoded without a full-size canvas) and
    # drawn where it was painted.
    open_editor(page, pid, iid)
    page.wait_for_function("() => document.querySelector('img.base')?.naturalWidth > 0")
    expect(overview).to_have_attribute("data-factor", "2")
    _wait_painted(page, "seg-mask", cx // 2 + 5, cy // 2)
    assert _pixel(overview, cx // 2, cy // 2 + 30)[3] == 0
    _zoom_at(page, cx, cy)
    expect(detail).to_have_count(1)
    x0, y0, _w, _h = (int(v) for v in (detail.get_attribute("data-rect") or "").split(","))
    _wait_painted(page, "seg-mask-detail", cx + 10 - x0, cy - y0)
    assert _pixel(detail, cx + 10 - x0, cy + 6 - y0)[3] == 0

    # On screen the full-resolution stroke is not haloed by the overview's coarse
    # blocks (clipped out under the detail canvas): image row cy + 5 shares a 2 x 2
    # block with the stroke's last row cy + 4, yet shows the bare image like row cy + 7.
    _zoom_at(page, cx + 10, cy, times=2)
    expect(detail).to_have_count(1)
    x0, y0, _w, _h = (int(v) for v in (detail.get_attribute("data-rect") or "").split(","))
    _wait_painted(page, "seg-mask-detail", cx + 10 - x0, cy - y0)
    loaded = "i => i.complete && i.naturalWidth > 0"
    page.wait_for_function(f"() => [...document.querySelectorAll('img.tile')].every({loaded})")
    assert float(page.get_by_test_id("seg-stage").get_attribute("data-scale") or 0) > 4
    painted = _screen_rgb(page, cx + 10.5, cy + 0.5)
    next_to = _screen_rgb(page, cx + 10.5, cy + 5.5)
    bare = _screen_rgb(page, cx + 10.5, cy + 7.5)
    assert np.abs(painted - bare).sum() > 60, (painted, bare)
    assert np.abs(next_to - bare).sum() < 40, (next_to, bare)

    # A second stroke, across the first one, is saved; then undo (key Z) sends the
    # restored box by the region route again (never the whole mask), the server's mask
    # is the first stroke's alone once more (where they cross too), and the canvas no
    # longer shows the second stroke.
    page.keyboard.press("m")
    page.keyboard.press("1")
    with page.expect_request(
        lambda r: r.method == "PUT" and "/mask/region" in r.url, timeout=30_000
    ) as info:
        page.mouse.move(*to_screen(page, cx + 10.5, cy - 15.5))
        page.mouse.down()
        page.mouse.move(*to_screen(page, cx + 10.5, cy + 15.5), steps=6)
        page.mouse.up()
    assert info.value.response().ok
    expect(page.get_by_test_id("save-state")).to_have_text("Saved", timeout=30_000)
    crossed = _mask(api, pid, iid)
    assert crossed[cy - 12, cx + 10] == 1 and crossed[cy + 12, cx + 10] == 1
    assert (crossed != mask).sum() > 100
    _wait_painted(page, "seg-mask-detail", cx + 10 - x0, cy - 12 - y0)

    puts.clear()
    with page.expect_request(
        lambda r: r.method == "PUT" and "/mask/region" in r.url, timeout=30_000
    ) as info:
        page.keyboard.press("z")
    request = info.value
    assert request.response().ok
    expect(page.get_by_test_id("save-state")).to_have_text("Saved", timeout=30_000)
    assert not [u for u in puts if urlparse(u).path.endswith("/mask")], puts
    query = parse_qs(urlparse(request.url).query)
    ux, uy = int(query["x"][0]), int(query["y"][0])
    assert ux <= cx + 10 and uy <= cy - 12, (ux, uy)
    undone = _mask(api, pid, iid)
    assert undone[cy - 12, cx + 10] == 0 and undone[cy + 12, cx + 10] == 0
    assert undone[cy, cx + 10] == 1  # the first stroke, under the second one
    assert np.array_equal(undone, mask)
    # (the box sent back is the second stroke's, not the 5000 x 6000 mask)
    history = api.get(f"/api/projects/{pid}/items/{iid}/history").json()["data"]
    sent = history[-1]["after"]["data"]["mask_region"]
    assert (sent["x"], sent["y"]) == (ux, uy) and sent["width"] * sent["height"] < 2_000, sent
    _wait_cleared(page, "seg-mask-detail", cx + 10 - x0, cy - 12 - y0)
    _wait_painted(page, "seg-mask-detail", cx + 2 - x0, cy - y0)
