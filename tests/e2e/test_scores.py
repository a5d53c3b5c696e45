"""Score projects: the side panel auto-saves, and a conflicting save by someone
else is merged (different metrics) or resolved by the user (same metric)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

METRICS = [
    {"name": "fibrosis", "min": 0, "max": 4, "step": 1},
    {"name": "inflammation", "min": 0, "max": 3, "step": 0.5},
]


def scores(client: Any, project_id: int, item_id: int) -> tuple[dict[str, float] | None, int]:
    it = client.get(f"/api/projects/{project_id}/items/{item_id}").json()
    return (it["annotation"] or {}).get("scores"), it["version"]


def wait_scores(client: Any, project_id: int, item_id: int, want: dict[str, float]) -> int:
    deadline = time.monotonic() + 10
    while True:
        got, version = scores(client, project_id, item_id)
        if got == want:
            return version
        if time.monotonic() > deadline:
            raise AssertionError(f"scores {got} != {want}")
        time.sleep(0.1)


def test_score_panel_autosave_and_conflicts(
    page: Any, live_server: Any, ui_login: Any, folder: Any, upload: Any, shot: Any
) -> None:
    api = live_server.client("alice")
    r = api.post(
        "/api/projects",
        json={
            "name": f"IHC scores {uuid.uuid4().hex[:6]}",
            "task": "score",
            "schema": {"metrics": METRICS},
        },
    )
    r.raise_for_status()
    pid = r.json()["id"]
    files = sorted((folder / "P-001").glob("*.png"))
    ids = upload(api, pid, files, case="S-17")
    # Three items scored elsewhere train a real model; the first three stay unscored.
    for k, item_id in enumerate(ids[3:]):
        api.put(
            f"/api/projects/{pid}/items/{item_id}/label",
            json={
                "kind": "scores",
                "scores": {"fibrosis": k, "inflammation": 0.5 * k},
                "version": 0,
            },
        ).raise_for_status()
    live_server.train(pid)
    draft = api.get(f"/api/projects/{pid}/items/{ids[1]}").json()["draft"]["output"]["scores"]

    ui_login(page, "alice", path=f"/projects/{pid}")
    panel = page.get_by_role("region", name=files[0].name)
    expect(panel).to_be_visible()
    expect(panel.get_by_text(re.compile(r"model \d"))).to_have_count(2)
    state = page.get_by_test_id("save-state")

    # Typing a score saves it: 'Saving…' then 'Saved'.
    panel.get_by_label("fibrosis", exact=True).fill("2")
    expect(state).to_have_text("Saved")
    version = wait_scores(api, pid, ids[0], {"fibrosis": 2})

    # Someone else saves another metric meanwhile: both edits are kept.
    api.put(
        f"/api/projects/{pid}/items/{ids[0]}/label",
        json={"kind": "scores", "scores": {"fibrosis": 2, "inflammation": 1.5}, "version": version},
    ).raise_for_status()
    panel.get_by_label("fibrosis", exact=True).fill("3")
    version = wait_scores(api, pid, ids[0], {"fibrosis": 3, "inflammation": 1.5})
    expect(state).to_have_text("Saved")
    expect(panel.get_by_label("inflammation", exact=True)).to_have_value("1.5")

    # Someone else changes the same metric: the panel asks which value to keep.
    api.put(
        f"/api/projects/{pid}/items/{ids[0]}/label",
        json={"kind": "scores", "scores": {"fibrosis": 1, "inflammation": 1.5}, "version": version},
    ).raise_for_status()
    panel.get_by_label("fibrosis", exact=True).fill("4")
    choice = panel.get_by_role("group", name="Resolve fibrosis")
    expect(choice).to_be_visible()
    expect(choice.get_by_role("button", name="Keep theirs (1)")).to_be_visible()
    shot(page, "11-score-conflict")
    choice.get_by_role("button", name="Keep mine (4)").click()
    wait_scores(api, pid, ids[0], {"fibrosis": 4, "inflammation": 1.5})
    expect(state).to_have_text("Saved")

    # Arrow keys move to the next item; the model's draft can be taken with one click.
    page.get_by_role("listbox", name="Items").focus()
    page.keyboard.press("ArrowRight")
    panel = page.get_by_role("region", name=files[1].name)
    panel.get_by_role("button", name="Use the model's fibrosis").click()
    wait_scores(api, pid, ids[1], {"fibrosis": draft["fibrosis"]})
    expect(page.get_by_test_id("save-state")).to_have_text("Saved")
    shot(page, "10-score-panel")
    api.close()
