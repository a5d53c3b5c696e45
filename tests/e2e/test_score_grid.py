"""The grid with model drafts: score tiles and panel show the model's values and
uncertainty, typed scores stay in the panel, and the grid filters and sorts by draft."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.e2e.api_helpers import annotation_of, create_project, put_label

pytestmark = pytest.mark.e2e

METRICS = [
    {"name": "fibrosis", "min": 0, "max": 4, "step": 1},
    {"name": "inflammation", "min": 0, "max": 3, "step": 0.5},
]


def test_score_drafts_on_tiles_and_panel_and_keys_stay_in_the_panel(
    page: Any, live_server: Any, ui_login: Any, folder: Any, upload: Any
) -> None:
    api = live_server.client("alice")
    pid = create_project(
        api, f"Drafted scores {uuid.uuid4().hex[:6]}", task="score", schema={"metrics": METRICS}
    )
    files = sorted(folder.glob("*/*.png"))
    ids = upload(api, pid, files)
    # nine items scored elsewhere: enough out-of-fold residuals for a 90% interval
    for k, item_id in enumerate(ids[3:]):
        scores = {"fibrosis": k % 5, "inflammation": 0.5 * (k % 7)}
        put_label(api, pid, item_id, {"kind": "scores", "scores": scores, "version": 0})
    live_server.train(pid, members=("classic",))  # one member: its flags come from intervals
    draft = api.get(f"/api/projects/{pid}/items/{ids[0]}").json()["draft"]
    drafted = draft["output"]["scores"]
    assert set(draft["output"]["interval"]) == {"fibrosis", "inflammation"}

    ui_login(page, "alice", path=f"/projects/{pid}")
    tile = page.locator(f"[data-item-id='{ids[0]}']")
    expect(tile.get_by_test_id("tile-draft")).to_have_text(
        f"F {drafted['fibrosis']:g} · I {drafted['inflammation']:g}"
    )
    expect(tile.get_by_text(re.compile(r"^±[\d.]+$"))).to_be_visible()
    panel = page.get_by_role("region", name=files[0].name)
    expect(panel.get_by_test_id("model-fibrosis")).to_contain_text(
        re.compile(rf"model {drafted['fibrosis']:g} \(\d+–\d+\)")
    )
    expect(panel.get_by_test_id("model-confidence")).to_contain_text("Model uncertainty")

    # Digits, arrows and Delete typed in the panel are the panel's, not the grid's keys.
    box = panel.get_by_label("fibrosis", exact=True)
    box.click()
    for key in ("0", "ArrowRight", "ArrowLeft", "x", "a"):
        box.press(key)
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    expect(tile).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("region", name=files[0].name)).to_be_visible()
    ann = annotation_of(api, pid, ids[0])
    assert ann is not None and ann["kind"] == "scores" and ann["scores"] == {"fibrosis": 0}
    assert annotation_of(api, pid, ids[1]) is None  # the next tile: neither moved to nor labelled

    # Out of range: a human message, and nothing is sent.
    box.fill("7")
    expect(panel.get_by_role("alert")).to_have_text("fibrosis must be 0-4 in steps of 1")
    expect(page.get_by_test_id("save-state")).to_have_text("fibrosis must be 0-4 in steps of 1")
    time.sleep(1.0)  # past the autosave delay
    assert annotation_of(api, pid, ids[0])["scores"] == {"fibrosis": 0}  # type: ignore[index]
    box.fill("3")
    expect(panel.get_by_role("alert")).to_have_count(0)
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")


def test_grid_filters_by_predicted_class_and_sorts_by_confidence(
    page: Any, live_server: Any, ui_login: Any, folder: Any, upload: Any
) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from loupe.db.models import ModelVersion, Prediction

    api = live_server.client("alice")
    pid = create_project(api, f"Sorted drafts {uuid.uuid4().hex[:6]}")
    ids = upload(api, pid, sorted(folder.glob("P-001/*.png")))
    # Known drafts, written as a training would: the subject here is the grid.
    drafts = {  # item -> (class, confidence)
        ids[0]: ("tumour", 0.91),
        ids[1]: ("stroma", 0.62),
        ids[2]: ("tumour", 0.55),
        ids[3]: ("stroma", 0.97),
        ids[4]: ("tumour", 0.73),
        ids[5]: ("stroma", 0.48),
    }
    engine = create_engine(live_server.db_url)
    with Session(engine) as db:
        version = ModelVersion(project_id=pid, number=1, status="ready", active=True)
        db.add(version)
        db.flush()
        for item_id, (label, conf) in drafts.items():
            db.add(
                Prediction(
                    project_id=pid,
                    item_id=item_id,
                    model_version_id=version.id,
                    label=label,
                    confidence=conf,
                    uncertainty=1 - conf,
                    output={"probs": {label: conf}},
                )
            )
        db.commit()
    engine.dispose()

    ui_login(page, "alice", path=f"/projects/{pid}")
    tiles = page.locator("[data-item-id]")
    expect(tiles).to_have_count(6)
    nav = page.get_by_role("navigation", name="Cases and filters")
    nav.get_by_label("Predicted class filter").select_option("tumour")
    expect(tiles).to_have_count(3)
    nav.get_by_label("Sort").select_option("confidence")
    tumours = sorted((c, i) for i, (lab, c) in drafts.items() if lab == "tumour")
    want = [str(i) for _, i in tumours]
    expect(tiles.first).to_have_attribute("data-item-id", want[0])
    assert [t.get_attribute("data-item-id") for t in tiles.all()] == want
    assert "predicted=tumour" in page.url and "sort=confidence" in page.url
    nav.get_by_label("Sort").select_option("-confidence")
    expect(tiles.first).to_have_attribute("data-item-id", want[-1])
    assert [t.get_attribute("data-item-id") for t in tiles.all()] == want[::-1]
