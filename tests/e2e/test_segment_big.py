"""A big tiled TIFF in the 2-D segmentation editor: it opens on a downscaled preview,
zooming in loads only the visible DeepZoom tiles, the tiles show the right pixels
where the image coordinates say, and a click lands on the full-resolution pixel."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

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


def test_big_tiff_opens_on_a_preview_and_tiles_when_zoomed(
    page: Any, live_server: Any, ui_login: Any, tmp_path: Path
) -> None:
    pid = make_project(page, ui_login)
    api = live_server.client("alice")
    path = tmp_path / "slide.tif"
    path.write_bytes(_slide_bytes())
    r = api.post(
        f"/api/projects/{pid}/uploads",
        files=[("files", (path.name, path.read_bytes(), "image/tiff"))],
    )
    r.raise_for_status()
    (iid,) = r.json()["item_ids"]
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
    for _ in range(3):
        sx, sy = to_screen(page, cx, cy)
        page.mouse.move(sx, sy)
        page.mouse.wheel(0, -500)
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
