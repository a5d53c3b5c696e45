"""Cases in the browser: a label change in a finished case asks to reopen it (its
report goes stale until regenerated); items move between cases; the case pattern
is edited in the project settings, and a bad one is refused with the server's
message."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.e2e.api_helpers import annotation_of, cases_by_name, create_project

pytestmark = pytest.mark.e2e


def wait_until(page: Any, check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``check`` while the page runs (a dialog handler only runs inside a page call)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        page.wait_for_timeout(100)


def _label_of(api: Any, project_id: int, item_id: int) -> str | None:
    a = annotation_of(api, project_id, item_id)
    return a["label"] if a else None


def test_label_change_in_a_finished_case_reopens_it_and_stales_its_report(
    page: Any, live_server: Any, ui_login: Any, upload: Any, folder: Path, shot: Any
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Finished case E2E")
    ids = upload(api, pid, sorted((folder / "P-001").glob("*.png")), case="P-001")
    case_id = cases_by_name(api, pid)["P-001"]["id"]
    api.patch(f"/api/projects/{pid}/cases/{case_id}", json={"status": "finished"})
    api.post(f"/api/projects/{pid}/cases/{case_id}/report").raise_for_status()

    ui_login(page, "alice", path=f"/projects/{pid}?case={case_id}")
    actions = page.get_by_test_id("case-actions")
    expect(actions.get_by_test_id("case-status")).to_have_text("finished")
    expect(actions.get_by_test_id("report-download")).to_be_visible()
    expect(actions.get_by_test_id("report-stale")).to_have_count(0)

    # Cancelling the question leaves the case finished and the item unlabelled.
    questions: list[str] = []

    def dismiss(d: Any) -> None:
        questions.append(d.message)
        d.dismiss()

    page.once("dialog", dismiss)
    tiles = page.locator("[data-item-id]")
    first = int(tiles.nth(0).get_attribute("data-item-id"))
    assert first in ids
    tiles.nth(0).locator(".thumb").click()
    page.keyboard.press("1")
    wait_until(page, lambda: bool(questions))
    assert questions == ["This case is finished. Reopen it to change labels?"]
    expect(page.get_by_text(re.compile("is finished; reopen it"))).to_be_visible()
    assert _label_of(api, pid, first) is None
    assert cases_by_name(api, pid)["P-001"]["status"] == "finished"

    # Accepting reopens the case and saves the label; the stored report is stale.
    def accept(d: Any) -> None:
        questions.append(d.message)
        d.accept()

    page.once("dialog", accept)
    tiles.nth(0).locator(".thumb").click()
    page.keyboard.press("1")
    wait_until(page, lambda: _label_of(api, pid, first) == "tumour")
    assert len(questions) == 2
    assert cases_by_name(api, pid)["P-001"]["status"] == "open"
    expect(actions.get_by_test_id("case-status")).to_have_text("open")
    expect(actions.get_by_test_id("report-stale")).to_have_text("stale — regenerate")
    reports = api.get(f"/api/projects/{pid}/reports", params={"case_id": case_id}).json()
    assert [r["stale"] for r in reports["data"]] == [True]
    shot(page, "20-report-stale")

    # Finishing again regenerates the report: the fresh one is not stale.
    actions.get_by_role("button", name="Finish and save report").click()
    expect(actions.get_by_test_id("case-status")).to_have_text("finished")
    expect(actions.get_by_test_id("report-stale")).to_have_count(0, timeout=60_000)
    latest = api.get(f"/api/projects/{pid}/reports", params={"case_id": case_id, "limit": 1})
    assert latest.json()["data"][0]["stale"] is False
    api.close()


def test_move_items_between_cases(
    page: Any, live_server: Any, ui_login: Any, upload: Any, folder: Path
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Move items E2E")
    upload(api, pid, sorted((folder / "P-001").glob("*.png")), case="P-001")
    upload(api, pid, sorted((folder / "P-002").glob("*.png")), case="P-002")
    cases = cases_by_name(api, pid)

    ui_login(page, "alice", path=f"/projects/{pid}?case={cases['P-001']['id']}")
    tiles = page.locator("[data-item-id]")
    expect(tiles).to_have_count(6)
    moved = {int(tiles.nth(i).get_attribute("data-item-id")) for i in (0, 1)}
    tiles.nth(0).locator(".thumb").click()
    tiles.nth(1).locator(".thumb").click(modifiers=["Shift"])
    expect(page.get_by_text("2 selected")).to_be_visible()

    page.once("dialog", lambda d: d.accept("P-002"))
    page.get_by_role("button", name="Move to case…").click()
    expect(page.get_by_text("Moved 2 items to case P-002")).to_be_visible()
    expect(tiles).to_have_count(4)
    nav = page.get_by_role("navigation", name="Cases and filters")
    expect(nav.get_by_role("button", name=re.compile(r"^P-002"))).to_contain_text("/8")
    after = cases_by_name(api, pid)
    assert (after["P-001"]["items"], after["P-002"]["items"]) == (4, 8)
    items = api.get(f"/api/projects/{pid}/items", params={"limit": 100}).json()["data"]
    assert {i["id"] for i in items if i["case_id"] == cases["P-002"]["id"]} >= moved

    # A new name creates the case.
    tiles.nth(0).locator(".thumb").click()
    tiles.nth(0).locator(".thumb").click(modifiers=["Control"])
    expect(page.get_by_text("1 selected")).to_be_visible()
    page.once("dialog", lambda d: d.accept("P-003"))
    page.get_by_role("button", name="Move to case…").click()
    expect(nav.get_by_role("button", name=re.compile(r"^P-003"))).to_be_visible()
    assert cases_by_name(api, pid)["P-003"]["items"] == 1
    api.close()


def test_case_pattern_in_project_settings(page: Any, live_server: Any, ui_login: Any) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Case pattern E2E")
    ui_login(page, "alice", path=f"/projects/{pid}")
    page.get_by_role("button", name="Settings").click()
    settings = page.get_by_role("dialog", name="Model settings")
    field = settings.get_by_label("Case pattern")
    expect(field).to_have_value("")

    field.fill(r"^(?P<case>\w+)_(\1)")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings.get_by_role("alert")).to_contain_text("backreferences")
    field.fill(r"^(?P<slide>S-\d+)")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings.get_by_role("alert")).to_contain_text("(?P<case>...)")
    assert api.get(f"/api/projects/{pid}").json()["settings"]["case_pattern"] is None

    field.fill(r"^(?P<case>S-\d+)_")
    settings.get_by_role("button", name="Save settings").click()
    expect(settings).to_be_hidden()
    stored = api.get(f"/api/projects/{pid}").json()["settings"]
    assert stored["case_pattern"] == r"^(?P<case>S-\d+)_"
    page.get_by_role("button", name="Settings").click()
    expect(
        page.get_by_role("dialog", name="Model settings").get_by_label("Case pattern")
    ).to_have_value(r"^(?P<case>S-\d+)_")
    api.close()


def test_upload_into_all_items_asks_for_the_case(
    page: Any, live_server: Any, ui_login: Any, folder: Path, tmp_path: Path
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Upload case E2E")
    flat = tmp_path / "S-77"
    flat.mkdir()
    for p in sorted((folder / "P-001").glob("*.png"))[:2]:
        (flat / p.name).write_bytes(p.read_bytes())
    ui_login(page, "alice", path=f"/projects/{pid}")
    expect(page.get_by_role("heading", name="No images yet")).to_be_visible()

    # Cancelling the question uploads nothing.
    questions: list[tuple[str, str]] = []

    def dismiss(d: Any) -> None:
        questions.append((d.message, d.default_value))
        d.dismiss()

    page.once("dialog", dismiss)
    page.get_by_test_id("file-input").set_input_files(str(flat / sorted(os.listdir(flat))[0]))
    wait_until(page, lambda: bool(questions))
    assert questions[0][0].startswith("Upload 1 file into which case?")
    assert questions[0][1] == ""
    page.wait_for_timeout(300)
    assert api.get(f"/api/projects/{pid}/items").json()["data"] == []

    # A folder of images suggests its own name as the case.
    def accept(d: Any) -> None:
        questions.append((d.message, d.default_value))
        d.accept(d.default_value)  # OK on the suggested name

    page.once("dialog", accept)
    page.get_by_test_id("folder-input").set_input_files(str(flat))
    expect(page.get_by_text("2 of 2 finished")).to_be_visible(timeout=60_000)
    assert questions[1][1] == "S-77"
    assert cases_by_name(api, pid)["S-77"]["items"] == 2
    nav = page.get_by_role("navigation", name="Cases and filters")
    expect(nav.get_by_role("button", name=re.compile(r"^S-77"))).to_be_visible()
    api.close()
