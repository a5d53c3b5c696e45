"""The classification flow in the browser: create a project, upload a folder of
cases, see the model's drafts and flags, label with the keyboard, batch-label,
correct with the dropdown, share the project, log out."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

CLASSES = ["neutrophil", "lymphocyte", "monocyte"]


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def labels(client: Any, project_id: int) -> dict[int, str | None]:
    """item id -> 'class:<name>' | 'unsure' | 'skip' | None."""
    r = client.get(f"/api/projects/{project_id}/items", params={"limit": 1000})
    r.raise_for_status()
    out: dict[int, str | None] = {}
    for it in r.json()["data"]:
        a = it["annotation"]
        out[it["id"]] = (
            None if a is None else (f"class:{a['label']}" if a["kind"] == "class" else a["kind"])
        )
    return out


def test_curation_flow(page: Any, live_server: Any, folder: Any, shot: Any) -> None:
    # Log in (a protected URL sends you to the login page first).
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    shot(page, "01-login")
    page.get_by_label("Email").fill(live_server.users["alice"])
    page.get_by_label("Password").fill("e2e correct horse battery")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Projects", exact=True)).to_be_visible()

    # Create a classification project with three classes and hotkeys 1..3.
    page.get_by_role("link", name="New project", exact=True).click()
    page.get_by_label("Name", exact=True).fill("Blood cells E2E")
    page.get_by_label("Class 1 name").fill(CLASSES[0])
    page.get_by_label("Class 2 name").fill(CLASSES[1])
    page.get_by_role("button", name="Add class").click()
    page.get_by_label("Class 3 name").fill(CLASSES[2])
    expect(page.get_by_label("Class 3 hotkey")).to_have_value("3")
    shot(page, "02-new-project")
    page.get_by_role("button", name="Create project").click()
    expect(page).to_have_url(re.compile(r"/projects/\d+$"))
    project_id = int(page.url.rsplit("/", 1)[1])
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()

    # Upload a folder with one sub-folder per case; the queue reports each file.
    page.get_by_test_id("folder-input").set_input_files(str(folder))
    queue = page.get_by_role("list", name="Upload queue")
    expect(queue).to_be_visible()
    expect(page.get_by_text("12 of 12 finished")).to_be_visible(timeout=60_000)
    expect(queue.locator("[data-status=failed]")).to_have_count(0)
    tiles = page.locator("[data-item-id]")
    expect(tiles).to_have_count(12)
    nav = page.get_by_role("navigation", name="Cases and filters")
    expect(nav.get_by_role("button", name=re.compile(r"^P-001"))).to_be_visible()
    expect(nav.get_by_role("button", name=re.compile(r"^P-002"))).to_be_visible()
    page.get_by_role("button", name="Uploads 12/12").click()  # hide the queue again
    expect(queue).to_be_hidden()

    # The model's drafts (an active version) appear on the tiles, flags with reasons.
    api = live_server.client("alice")
    ids = sorted(labels(api, project_id))
    assert len(ids) == 12
    flagged = [ids[i] for i in (2, 5, 8, 11)]
    live_server.add_drafts(
        project_id,
        {
            item_id: {
                "label": CLASSES[i % 3],
                "confidence": 0.52 + 0.04 * i,
                "flagged": item_id in flagged,
                "flag_reason": ("disagreement" if i % 2 else "low_confidence")
                if item_id in flagged
                else None,
            }
            for i, item_id in enumerate(ids)
        },
    )
    page.reload()
    expect(tiles).to_have_count(12)
    expect(page.locator(".badge.flag")).to_have_count(4)
    expect(page.locator(".badge.flag").first).to_contain_text(
        re.compile("low confidence|models disagree")
    )
    expect(tiles.nth(1)).to_contain_text("lymphocyte")
    expect(tiles.nth(1)).to_contain_text("56%")
    shot(page, "03-grid-drafts")

    # Keyboard: 1, 2, 0, X label and move on; Z undoes the last one.
    tiles.nth(0).locator(".thumb").click()
    for key in ["1", "2", "0", "x"]:
        page.keyboard.press(key)
    wait_until(
        lambda: (
            [labels(api, project_id)[i] for i in ids[:4]]
            == ["class:neutrophil", "class:lymphocyte", "unsure", "skip"]
        )
    )
    expect(tiles.nth(0).locator(".chip")).to_have_text("neutrophil")
    page.keyboard.press("z")
    wait_until(lambda: labels(api, project_id)[ids[3]] is None)
    expect(page.locator(".tile.focused")).to_have_attribute("data-index", "4")
    page.keyboard.press("ArrowLeft")
    expect(page.locator(".tile.focused")).to_have_attribute("data-index", "3")

    # Enter opens the detail view; keys work there too; Esc closes it.
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name=re.compile("monocyte"))).to_be_visible()
    shot(page, "04-detail")
    page.keyboard.press("3")
    wait_until(lambda: labels(api, project_id)[ids[3]] == "class:monocyte")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Batch curation: show the flagged items, select all, one key labels them all.
    page.get_by_label("Status filter").select_option("flagged")
    expect(tiles).to_have_count(4)
    tiles.nth(0).locator(".thumb").click()
    page.keyboard.press("Control+a")
    expect(page.get_by_text("4 selected")).to_be_visible()
    shot(page, "05-batch-flagged")
    page.keyboard.press("2")
    wait_until(lambda: all(labels(api, project_id)[i] == "class:lymphocyte" for i in flagged))
    expect(page.locator(".tile .chip", has_text="lymphocyte")).to_have_count(4)

    # Shift-click a range and apply a class with the toolbar button.
    page.get_by_label("Status filter").select_option("")
    expect(tiles).to_have_count(12)
    tiles.nth(6).locator(".thumb").click()
    tiles.nth(8).locator(".thumb").click(modifiers=["Shift"])
    expect(page.get_by_text("3 selected")).to_be_visible()
    page.get_by_role("button", name="neutrophil", exact=True).click()
    wait_until(lambda: all(labels(api, project_id)[i] == "class:neutrophil" for i in ids[6:9]))

    # Drag a rubber band over two tiles, then label both with a key.
    a = tiles.nth(9).locator(".thumb").bounding_box()
    b = tiles.nth(10).locator(".thumb").bounding_box()
    assert a and b
    page.mouse.move(a["x"] + 20, a["y"] + 20)
    page.mouse.down()
    page.mouse.move(b["x"] + 40, b["y"] + 40, steps=8)
    page.mouse.up()
    expect(page.get_by_text("2 selected")).to_be_visible()
    page.keyboard.press("3")
    wait_until(lambda: all(labels(api, project_id)[i] == "class:monocyte" for i in ids[9:11]))

    # The dropdown on a tile corrects one label.
    page.keyboard.press("Escape")
    tiles.nth(11).get_by_role("combobox").select_option("class:neutrophil")
    wait_until(lambda: labels(api, project_id)[ids[11]] == "class:neutrophil")

    # A case filter shows only that case's items.
    nav.get_by_role("button", name=re.compile(r"^P-002")).click()
    expect(tiles).to_have_count(6)
    expect(page).to_have_url(re.compile(r"case=\d+"))

    # Members and roles (owners only).
    page.get_by_role("link", name="Members").click()
    page.get_by_label("Add a user by email").fill(live_server.users["dave"])
    page.get_by_label("Role of the new member").select_option("annotator")
    page.get_by_role("button", name="Add member").click()
    members = page.get_by_role("table", name="Members")
    expect(members).to_contain_text("dave@example.org")
    expect(page.get_by_label("Role of dave@example.org")).to_have_value("annotator")
    shot(page, "06-members")

    # An API error shows the server's message.
    page.get_by_label("Add a user by email").fill("nobody@example.org")
    page.get_by_role("button", name="Add member").click()
    expect(page.get_by_role("alert")).to_contain_text("nobody@example.org")

    # A big image opens in the zoomable viewer (OpenSeadragon).
    page.goto(f"/projects/{project_id}/items/{ids[0]}/view")
    expect(page.get_by_role("img", name=re.compile("Zoomable image"))).to_be_visible()
    expect(page.locator(".openseadragon-canvas canvas").first).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    api.close()
