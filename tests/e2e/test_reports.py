"""Case reports, exports and label import in the browser: finish a case and get
its PDF report, find it on the History page and download it; reopen and
regenerate; download the CSV export with filters and the dataset ZIP built by a
job; import labels from a CSV with a dry-run preview, then apply it."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.e2e.api_helpers import cases_by_name, create_project, put_label

pytestmark = pytest.mark.e2e


def _label(api: Any, project_id: int, item_id: int, label: str) -> None:
    put_label(api, project_id, item_id, {"kind": "class", "label": label})


def _labels(api: Any, project_id: int) -> dict[str, str | None]:
    """file name -> class label (None when unlabelled)."""
    r = api.get(f"/api/projects/{project_id}/items", params={"limit": 1000})
    r.raise_for_status()
    out: dict[str, str | None] = {}
    for it in r.json()["data"]:
        a = it["annotation"]
        out[it["filename"]] = a["label"] if a and a["kind"] == "class" else None
    return out


def test_finish_case_report_and_history(
    page: Any, live_server: Any, ui_login: Any, upload: Any, folder: Path, shot: Any
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Report E2E")
    ids = upload(api, pid, sorted((folder / "P-001").glob("*.png")), case="P-001")
    upload(api, pid, sorted((folder / "P-002").glob("*.png")), case="P-002")
    for i, item_id in enumerate(ids[:4]):
        _label(api, pid, item_id, "tumour" if i % 2 else "stroma")
    case_id = cases_by_name(api, pid)["P-001"]["id"]

    ui_login(page, "alice", path=f"/projects/{pid}?case={case_id}")
    actions = page.get_by_test_id("case-actions")
    expect(actions.get_by_test_id("case-status")).to_have_text("open")
    actions.get_by_role("button", name="Finish and save report").click()
    expect(actions.get_by_test_id("case-status")).to_have_text("finished")
    expect(actions.get_by_test_id("report-download")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Report of case P-001 saved")).to_be_visible()
    nav = page.get_by_role("navigation", name="Cases and filters")
    expect(nav.get_by_role("button", name=re.compile(r"^P-001"))).to_contain_text("finished")
    assert api.get(f"/api/projects/{pid}/cases/{case_id}").json()["status"] == "finished"

    # The download link serves the PDF.
    href = actions.get_by_test_id("report-download").get_attribute("href")
    r = page.request.get(href)
    assert r.ok and r.headers["content-type"] == "application/pdf"
    assert r.body().startswith(b"%PDF")

    # A finished case offers Regenerate and Reopen; regenerating adds a report.
    actions.get_by_role("button", name="Regenerate report").click()
    expect(page.get_by_text("Report of case P-001 saved")).to_have_count(2, timeout=60_000)
    actions.get_by_role("button", name="Reopen").click()
    expect(actions.get_by_test_id("case-status")).to_have_text("open")
    expect(actions.get_by_role("button", name="Finish and save report")).to_be_visible()
    assert api.get(f"/api/projects/{pid}/cases/{case_id}").json()["status"] == "open"

    # History (top bar): the user's reports, newest first, with PDF downloads.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="History").click()
    expect(page).to_have_url(re.compile(r"/history$"))
    table = page.get_by_role("table", name="Reports")
    # the server is shared by the browser tests: alice may have reports of other projects
    mine = [r for r in api.get("/api/reports/mine").json()["data"] if r["project_id"] == pid]
    assert len(mine) == 2  # finished once, regenerated once
    rows = table.locator("tbody tr", has_text="Report E2E")
    expect(rows).to_have_count(2)
    expect(table.locator("tbody tr").first).to_contain_text("Report E2E")  # newest first
    expect(rows.first).to_contain_text("Report E2E")
    expect(rows.first).to_contain_text("P-001")
    newest = api.get("/api/reports/mine").json()["data"][0]["id"]
    expect(rows.first).to_have_attribute("data-report-id", str(newest))
    shot(page, "13-history")
    with page.expect_download() as info:
        rows.first.get_by_role("link", name=re.compile("Download the report")).click()
    pdf = Path(info.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF")

    # The case link goes back to the case in the project.
    rows.first.get_by_role("link", name="P-001", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/projects/{pid}\?case={case_id}$"))
    expect(page.locator("[data-item-id]")).to_have_count(6)

    # Someone who generated nothing sees an empty history.
    page.get_by_role("button", name="Log out").click()
    ui_login(page, "bob", path="/history")
    expect(page.get_by_role("heading", name="No reports yet")).to_be_visible()
    api.close()


def test_export_and_label_import(
    page: Any, live_server: Any, ui_login: Any, upload: Any, folder: Path, shot: Any, tmp_path: Path
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Export E2E")
    files = sorted((folder / "P-001").glob("*.png"))
    ids = upload(api, pid, files, case="P-001")
    _label(api, pid, ids[0], "tumour")
    _label(api, pid, ids[1], "stroma")

    ui_login(page, "alice", path=f"/projects/{pid}")
    page.get_by_role("link", name="Export", exact=True).click()
    expect(page).to_have_url(re.compile(rf"/projects/{pid}/export$"))
    expect(page.get_by_role("heading", name="Export and import")).to_be_visible()

    # CSV: a plain download link with the filters in its query.
    link = page.get_by_test_id("csv-link")
    with page.expect_download() as info:
        link.click()
    text = Path(info.value.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:4] == ["item_id", "filename", "sha256", "case"]
    assert len(rows) == 1 + len(files)
    page.get_by_label("Labelled items only").check()
    page.get_by_label("Export case").select_option(label="P-001")
    expect(link).to_have_attribute("href", re.compile(r"labelled_only=true"))
    with page.expect_download() as info:
        link.click()
    rows = list(csv.reader(io.StringIO(Path(info.value.path()).read_text(encoding="utf-8-sig"))))
    assert len(rows) == 1 + 2 and {r[1] for r in rows[1:]} == {files[0].name, files[1].name}

    # Dataset ZIP: a background job, then a download link.
    page.get_by_label("Include images").check()
    page.get_by_label("Split seed").fill("7")
    page.get_by_role("button", name="Build dataset ZIP").click()
    done = page.get_by_test_id("zip-download")
    expect(done).to_be_visible(timeout=60_000)
    with page.expect_download() as info:
        done.click()
    with zipfile.ZipFile(info.value.path()) as zf:
        names = zf.namelist()
    assert "labels.csv" in names and any(n.startswith("images/") for n in names)

    # Label import: the dry run previews every row and changes nothing.
    source = tmp_path / "labels.csv"
    source.write_text(
        "filename,label\n"
        f"{files[2].name},tumour\n"
        f"{files[3].name},Stroma\n"
        f"{files[4].name},tumour\n"
        f"{files[0].name},stroma\n"  # has the human label tumour: a conflict, kept
        "nobody.png,tumour\n"
        f"{files[5].name},necrosis\n"
    )
    before = _labels(api, pid)
    page.get_by_label("CSV file to import").set_input_files(str(source))
    page.get_by_role("button", name="Preview (dry run)").click()
    preview = page.get_by_test_id("import-preview")
    expect(preview).to_contain_text("Preview: 3 labels would change")
    counts = preview.get_by_role("list", name="Rows per status")
    expect(counts.locator("[data-status=set]")).to_contain_text("3")
    expect(counts.locator("[data-status=conflict]")).to_contain_text("1")
    expect(counts.locator("[data-status=unknown_item]")).to_contain_text("1")
    expect(counts.locator("[data-status=invalid]")).to_contain_text("1")
    table = preview.get_by_role("table", name="Preview of the import")
    expect(table.locator("tbody tr")).to_have_count(6)
    expect(table.locator("tbody tr[data-status=invalid]")).to_contain_text("necrosis")
    assert _labels(api, pid) == before
    page.locator("main").evaluate("m => m.scrollTo(0, m.scrollHeight)")  # show the preview
    shot(page, "14-export")

    page.get_by_role("button", name="Apply (3 labels)").click()
    result = page.get_by_test_id("import-result")
    expect(result).to_contain_text("Imported: 3 labels changed")
    after = _labels(api, pid)
    assert after[files[2].name] == "tumour" and after[files[3].name] == "stroma"
    assert after[files[4].name] == "tumour"
    assert after[files[0].name] == "tumour" and after[files[5].name] is None

    # A file the server cannot read shows its message.
    bad = tmp_path / "bad.csv"
    bad.write_text("what,ever\nx,y\n")
    page.get_by_label("CSV file to import").set_input_files(str(bad))
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.get_by_role("alert")).to_contain_text("file-name column")
    api.close()


def test_viewer_exports_but_cannot_import(
    page: Any, live_server: Any, ui_login: Any, upload: Any, folder: Path
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "Viewer export E2E")
    upload(api, pid, sorted((folder / "P-002").glob("*.png"))[:2], case="P-002")
    member = {"email": live_server.users["bob"], "role": "viewer"}
    api.post(f"/api/projects/{pid}/members", json=member).raise_for_status()

    ui_login(page, "bob", path=f"/projects/{pid}/export")
    expect(page.get_by_test_id("csv-link")).to_be_visible()
    expect(page.get_by_role("link", name="Download dataset ZIP")).to_be_visible()
    expect(page.get_by_role("button", name="Build dataset ZIP")).to_have_count(0)
    expect(page.get_by_text("Importing labels needs the annotator role")).to_be_visible()
    r = page.request.get(page.get_by_test_id("csv-link").get_attribute("href"))
    assert r.ok and r.text().lstrip("\ufeff").startswith("item_id,")
    api.close()
