"""Undo and redo in the browser work on the server: a batch label is undone by Z
even when the filter now hides its items, and Shift+Z re-applies it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def labels(client: Any, project_id: int) -> dict[int, str | None]:
    """item id -> 'class:<name>' | 'unsure' | 'skip' | None, read through the API."""
    r = client.get(f"/api/projects/{project_id}/items", params={"limit": 1000})
    r.raise_for_status()
    out: dict[int, str | None] = {}
    for it in r.json()["data"]:
        a = it["annotation"]
        out[it["id"]] = (
            None if a is None else (f"class:{a['label']}" if a["kind"] == "class" else a["kind"])
        )
    return out


def test_undo_a_batch_hidden_by_the_filter_and_redo_it(
    page: Any, live_server: Any, folder: Path, upload: Any, ui_login: Any
) -> None:
    api = live_server.client("alice")
    r = api.post(
        "/api/projects",
        json={
            "name": "Undo E2E",
            "task": "classify",
            "schema": {"classes": [{"name": "tumour"}, {"name": "stroma"}]},
        },
    )
    r.raise_for_status()
    pid = int(r.json()["id"])
    ids = sorted(upload(api, pid, sorted((folder / "P-001").glob("*.png"))))
    assert len(ids) == 6

    ui_login(page, "alice", path=f"/projects/{pid}")
    tiles = page.locator("[data-item-id]")
    expect(tiles).to_have_count(6)
    # Batch-label three tiles (one request, one undo step).
    tiles.nth(0).locator(".thumb").click()
    tiles.nth(2).locator(".thumb").click(modifiers=["Shift"])
    expect(page.get_by_text("3 selected")).to_be_visible()
    page.keyboard.press("1")
    wait_until(lambda: all(labels(api, pid)[i] == "class:tumour" for i in ids[:3]))

    # Show only unlabelled items: the three just labelled are hidden now.
    page.get_by_label("Status filter").select_option("unlabelled")
    expect(page).to_have_url(re.compile(r"status=unlabelled"))
    expect(tiles).to_have_count(3)
    tiles.nth(0).locator(".thumb").click()  # the grid has the keyboard again

    page.keyboard.press("z")
    wait_until(lambda: all(labels(api, pid)[i] is None for i in ids[:3]))
    expect(page.get_by_text("Undid: 3 labels (batch label)")).to_be_visible()
    expect(tiles).to_have_count(6)  # unlabelled again: the filter shows them
    history = api.get(f"/api/projects/{pid}/items/{ids[0]}/history").json()["data"]
    assert [e["source"] for e in history] == ["batch", "undo"]

    page.keyboard.press("Shift+Z")
    wait_until(lambda: all(labels(api, pid)[i] == "class:tumour" for i in ids[:3]))
    expect(page.get_by_text("Redid: 3 labels (batch label)")).to_be_visible()
    expect(tiles).to_have_count(3)
    assert all(labels(api, pid)[i] is None for i in ids[3:])
    api.close()
