"""2-D segmentation in the browser: a segment project made on the New project page,
a real image (scikit-image's ``coins``), foreground/background clicks and a stroke
placed with the mouse and saved (checked through the API), undo (of a stroke, and of a
brush stroke on a new mask), then training, the heatmap layers, point extraction,
accepting the prediction as the mask, and a brush correction of that mask, undone."""

from __future__ import annotations

import io
import re
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def coins_png(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """The coins image as a PNG, and where the coins are (a rough reference mask)."""
    from PIL import Image
    from scipy import ndimage
    from skimage import data, filters

    img = np.asarray(data.coins())
    fg = ndimage.binary_fill_holes(img > filters.threshold_otsu(img))
    path = tmp_path / "coins.png"
    Image.fromarray(img).save(path)
    return path, np.asarray(fg)


def deep_pixels(mask: np.ndarray, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (x, y) pixels at least 6 px inside ``mask``, spread out."""
    from scipy import ndimage

    inner = ndimage.distance_transform_edt(mask) > 6
    rows, cols = np.nonzero(inner)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=n, replace=False)
    return [(int(cols[k]), int(rows[k])) for k in picks]


def click_pixel(page: Any, x: int, y: int) -> None:
    """Click the centre of image pixel (x, y) in the editor's stage (its view transform)."""
    stage = page.get_by_test_id("seg-stage")
    box = stage.bounding_box()
    scale = float(stage.get_attribute("data-scale"))
    tx = float(stage.get_attribute("data-tx"))
    ty = float(stage.get_attribute("data-ty"))
    page.mouse.click(box["x"] + tx + (x + 0.5) * scale, box["y"] + ty + (y + 0.5) * scale)


def to_screen(page: Any, x: float, y: float) -> tuple[float, float]:
    stage = page.get_by_test_id("seg-stage")
    box = stage.bounding_box()
    scale = float(stage.get_attribute("data-scale"))
    return (
        box["x"] + float(stage.get_attribute("data-tx")) + x * scale,
        box["y"] + float(stage.get_attribute("data-ty")) + y * scale,
    )


def annotation(api: Any, pid: int, iid: int) -> dict[str, Any]:
    r = api.get(f"/api/projects/{pid}/segment/items/{iid}/annotation")
    r.raise_for_status()
    return dict(r.json())


def wait_for(api: Any, pid: int, iid: int, ok: Any, what: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        a = annotation(api, pid, iid)
        if ok(a):
            return a
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {a}")
        time.sleep(0.2)


def mask_png(api: Any, pid: int, iid: int) -> np.ndarray:
    """The item's saved mask, as label values."""
    from PIL import Image

    r = api.get(f"/api/projects/{pid}/segment/items/{iid}/mask.png")
    r.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(r.content)))


def wait_mask(api: Any, pid: int, iid: int, ok: Any, what: str, timeout: float = 15) -> np.ndarray:
    """Poll the saved mask (404 until the first one is saved) until ``ok(mask)``."""
    deadline = time.monotonic() + timeout
    while True:
        has_mask = annotation(api, pid, iid)["has_mask"]
        mask = mask_png(api, pid, iid) if has_mask else None
        if mask is not None and ok(mask):
            return mask
        if time.monotonic() > deadline:
            got = np.unique(mask, return_counts=True) if mask is not None else "no mask"
            raise AssertionError(f"{what}: {got}")
        time.sleep(0.2)


def human(a: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in a["points"] if p["source"] == "human"]


def make_project(page: Any, ui_login: Any) -> int:
    """A segment project through the New project page, with its binary default schema."""
    ui_login(page, "alice")
    page.get_by_role("link", name="New project", exact=True).click()
    page.get_by_label("Name", exact=True).fill(f"Coins seg {uuid.uuid4().hex[:6]}")
    page.locator("label.task", has_text="Segment").click()
    expect(page.get_by_label("Class 1 name")).to_have_value("foreground")
    page.get_by_role("button", name="Create project").click()
    expect(page).to_have_url(re.compile(r"/projects/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def open_editor(page: Any, pid: int, iid: int) -> None:
    page.goto(f"/projects/{pid}/items/{iid}/view")
    expect(page.get_by_test_id("seg-labels")).to_be_visible()


def test_segment_points_strokes_undo(
    page: Any, live_server: Any, ui_login: Any, upload: Any, tmp_path: Path, shot: Any
) -> None:
    pid = make_project(page, ui_login)
    api = live_server.client("alice")
    project = api.get(f"/api/projects/{pid}").json()
    assert project["task"] == "segment"
    assert [c["name"] for c in project["schema"]["classes"]] == ["foreground"]
    path, fg = coins_png(tmp_path)
    (iid,) = upload(api, pid, [path])
    open_editor(page, pid, iid)

    # Foreground (key 1) and background (key B) clicks, placed with the mouse.
    fg_px = deep_pixels(fg, 3, seed=1)
    bg_px = deep_pixels(~fg, 3, seed=2)
    page.keyboard.press("1")
    for x, y in fg_px:
        click_pixel(page, x, y)
    page.keyboard.press("b")
    for x, y in bg_px:
        click_pixel(page, x, y)
    expect(page.get_by_test_id("seg-labels")).to_have_attribute("data-points", "6")
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    a = wait_for(api, pid, iid, lambda a: len(human(a)) == 6, "six clicks saved")
    assert (a["width"], a["height"]) == (384, 303)
    got = {(p["x"], p["y"], p["value"]) for p in human(a)}
    assert got == {(x, y, 1) for x, y in fg_px} | {(x, y, 0) for x, y in bg_px}
    shot(page, "segment-points")

    # A background stroke with the scribble tool, then undo removes it on the server too.
    page.keyboard.press("s")
    (x0, y0), (x1, y1) = deep_pixels(~fg, 2, seed=3)
    page.mouse.move(*to_screen(page, x0, y0))
    page.mouse.down()
    for t in np.linspace(0, 1, 8)[1:]:
        page.mouse.move(*to_screen(page, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t))
    page.mouse.up()
    a = wait_for(api, pid, iid, lambda a: len(a["scribbles"]) == 1, "the stroke saved")
    stroke = a["scribbles"][0]
    assert stroke["value"] == 0 and stroke["width"] == 8 and len(stroke["path"]) >= 2
    assert abs(stroke["path"][0][0] - x0) <= 1 and abs(stroke["path"][-1][1] - y1) <= 1
    page.keyboard.press("z")
    a = wait_for(api, pid, iid, lambda a: not a["scribbles"], "the stroke undone")
    assert len(human(a)) == 6

    # The eraser removes the point under it.
    page.keyboard.press("e")
    click_pixel(page, *fg_px[0])
    a = wait_for(api, pid, iid, lambda a: len(human(a)) == 5, "a point erased")
    assert (fg_px[0][0], fg_px[0][1], 1) not in {(p["x"], p["y"], p["value"]) for p in human(a)}

    # A brush stroke makes the item's first mask; undo takes it back to background
    # (the server keeps an all-zero mask) and leaves the points alone.
    page.keyboard.press("m")
    page.keyboard.press("1")
    bx, by = deep_pixels(~fg, 1, seed=8)[0]
    page.mouse.move(*to_screen(page, bx, by))
    page.mouse.down()
    page.mouse.move(*to_screen(page, bx + 0.4, by + 0.4))
    page.mouse.up()
    brushed = wait_mask(api, pid, iid, lambda m: m[by, bx] == 1, "the brushed mask")
    assert 0 < (brushed > 0).sum() < 400
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    page.keyboard.press("z")
    wait_mask(api, pid, iid, lambda m: not m.any(), "the brush stroke undone")
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    a = annotation(api, pid, iid)
    assert a["has_mask"] and len(human(a)) == 5

    # After a reload the editor shows what the server has.
    open_editor(page, pid, iid)
    expect(page.get_by_test_id("seg-labels")).to_have_attribute("data-points", "5")
    expect(page.get_by_test_id("seg-heatmap")).to_have_attribute("data-state", "missing")
    expect(page.get_by_test_id("no-prediction")).to_be_visible()


def test_segment_train_heatmap_extract_accept_brush(
    page: Any, live_server: Any, ui_login: Any, upload: Any, tmp_path: Path, shot: Any
) -> None:
    from PIL import Image

    pid = make_project(page, ui_login)
    api = live_server.client("alice")
    # The filter bank alone: the quickest features on this machine's 2 cores.
    api.patch(
        f"/api/projects/{pid}",
        json={
            "settings": {
                "pixel_features": "filters",
                "heatmap_every": 1,
                "patience": 2,
                "max_epochs": 6,
            }
        },
    ).raise_for_status()
    path, fg = coins_png(tmp_path)
    (iid,) = upload(api, pid, [path])
    open_editor(page, pid, iid)
    page.keyboard.press("1")
    for x, y in deep_pixels(fg, 8, seed=4):
        click_pixel(page, x, y)
    page.keyboard.press("b")
    for x, y in deep_pixels(~fg, 8, seed=5):
        click_pixel(page, x, y)
    wait_for(api, pid, iid, lambda a: len(human(a)) == 16, "sixteen clicks saved")

    # Train: the status shows epochs and validation Dice live; a heatmap arrives.
    page.get_by_role("button", name="Train", exact=True).click()
    status = page.get_by_test_id("train-status")
    expect(status).to_be_visible()
    heat = page.get_by_test_id("seg-heatmap")
    expect(heat).to_have_attribute("data-state", "loaded", timeout=180_000)
    expect(page.get_by_test_id("train-epoch")).to_have_text(re.compile(r"^\d+$"))
    expect(status).to_have_attribute("data-status", "done", timeout=180_000)
    expect(page.get_by_test_id("train-dice")).to_have_text(re.compile(r"^[01]\.\d{3}$"))
    expect(heat).to_have_attribute("data-state", "loaded")
    shot(page, "segment-heatmap")

    # The uncertainty layer and the opacity slider.
    page.get_by_role("radio", name="Uncertainty").click()
    expect(heat).to_have_attribute("data-layer", "uncertainty")
    expect(heat).to_have_attribute("data-state", "loaded")
    page.get_by_label("Heatmap opacity").fill("0.8")
    expect(heat).to_have_css("opacity", "0.8")
    page.get_by_role("radio", name="Probability").click()

    # Extract points: extracted points appear beside the human ones.
    page.get_by_role("button", name="Extract points").click()
    a = wait_for(
        api, pid, iid, lambda a: any(p["source"] == "extracted" for p in a["points"]), "extracted"
    )
    assert len(human(a)) == 16
    n = len(a["points"])
    expect(page.get_by_test_id("seg-labels")).to_have_attribute("data-points", str(n))

    # Accept the prediction as the mask: it mostly covers the coins.
    page.get_by_role("button", name="Accept as mask").click()
    a = wait_for(api, pid, iid, lambda a: a["has_mask"], "the accepted mask")
    assert a["origin"] == "model_accepted"
    r = api.get(f"/api/projects/{pid}/segment/items/{iid}/mask.png")
    r.raise_for_status()
    mask = np.asarray(Image.open(io.BytesIO(r.content)))
    assert mask.shape == fg.shape
    pred = mask > 0
    dice = 2 * (pred & fg).sum() / (pred.sum() + fg.sum())
    assert dice > 0.6, dice

    # Brush: paint a background square to foreground; the whole mask is saved.
    page.keyboard.press("m")
    page.keyboard.press("1")
    (bx, by) = next(p for p in deep_pixels(~fg, 40, seed=6) if not pred[p[1], p[0]])
    page.mouse.move(*to_screen(page, bx, by))
    page.mouse.down()
    page.mouse.move(*to_screen(page, bx + 0.4, by + 0.4))
    page.mouse.up()
    wait_for(api, pid, iid, lambda a: a["origin"] == "human", "the brushed mask")
    mask2 = np.asarray(
        Image.open(io.BytesIO(api.get(f"/api/projects/{pid}/segment/items/{iid}/mask.png").content))
    )
    assert mask2[by, bx] == 1
    changed = mask2 != mask
    assert 0 < changed.sum() < 400  # a disk of width 8, nothing else
    shot(page, "segment-mask")
    # Undo puts the accepted mask back exactly.
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    page.keyboard.press("z")
    wait_mask(api, pid, iid, lambda m: np.array_equal(m, mask), "the brush stroke undone")

    # Stop: a second training is cancelled; the first model (and its heatmap) stays.
    # (No early stop this time, so the run cannot end before Stop is pressed.)
    long_run = {"patience": 100_000, "max_epochs": 100_000}
    api.patch(f"/api/projects/{pid}", json={"settings": long_run}).raise_for_status()
    first = api.get(f"/api/projects/{pid}/segment/status").json()["last_version"]
    assert first["active"]
    page.get_by_role("button", name="Train", exact=True).click()
    page.get_by_role("button", name="Stop").click()
    expect(status).to_have_attribute("data-status", "cancelled", timeout=60_000)
    api.patch(
        f"/api/projects/{pid}", json={"settings": {"patience": 2, "max_epochs": 6}}
    ).raise_for_status()
    kept = api.get(f"/api/projects/{pid}/segment/status").json()["last_version"]
    assert kept["id"] == first["id"] and kept["active"]
    page.get_by_role("button", name="Refresh heatmap").click()
    expect(heat).to_have_attribute("data-state", "loaded")

    # Live training: with "Live" on, a saved click starts the next training by itself.
    before = api.get(f"/api/projects/{pid}/segment/status").json()["job"]["id"]
    page.get_by_label("Live (train after saving clicks)").check()
    page.keyboard.press("p")
    # (away from the bottom of the screen, where notifications may cover the image)
    click_pixel(page, *next(p for p in deep_pixels(fg, 40, seed=7) if p[1] < 150))
    deadline = time.monotonic() + 30
    while (job := api.get(f"/api/projects/{pid}/segment/status").json()["job"])["id"] == before:
        assert time.monotonic() < deadline, "no training started after the click"
        time.sleep(0.3)
    assert job["params"]["item_id"] == iid  # the viewed item gets the live heatmap
    expect(status).to_have_attribute("data-status", "done", timeout=180_000)
    deadline = time.monotonic() + 180
    while api.get(f"/api/jobs/{job['id']}").json()["status"] != "done":
        assert time.monotonic() < deadline, "the live training did not finish"
        time.sleep(0.5)

    # The grid's tile shows the predicted foreground share and uncertainty.
    page.goto(f"/projects/{pid}")
    tile = page.locator(f"[data-item-id='{iid}']")
    expect(tile).to_contain_text(re.compile(r"fg \d+%"))
    expect(tile).to_contain_text(re.compile(r"unc \d+%"))
