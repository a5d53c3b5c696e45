"""A DICOM series uploaded through the browser's file picker becomes one volume,
which opens in the 3-D editor: as a ZIP, as loose slices (sent together in one
request: one line of the upload panel), and a study ZIP of two series becomes two.

Real data: pydicom's CT series ``test_files/dicomdirtests/98892001/CT5N`` (five
axial slices, files without a suffix) from the pydicom wheel.
"""

from __future__ import annotations

import gzip
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from tests.e2e.api_helpers import create_project

pytestmark = pytest.mark.e2e

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

CLASSES = [{"name": "tissue", "color": "#e69f00", "value": 1}]


def _ct5n() -> list[Path]:
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/98892001/CT5N"
    return sorted(folder.iterdir())


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _as_series(path: Path, uid: str) -> bytes:
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = uid
    ds.SOPInstanceUID = f"{uid}.{path.name}"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _pick(page: Any, *paths: Path) -> None:
    """Choose ``paths`` with the project bar's 'Add volumes' button (case: none)."""
    page.once("dialog", lambda d: d.accept(""))
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Add volumes").click()
    chooser.value.set_files([str(p) for p in paths])


def test_zip_of_a_dicom_series_uploads_and_opens_in_the_editor(
    page: Any, live_server: Any, ui_login: Any, tmp_path: Path
) -> None:
    api = live_server.client("alice")
    pid = create_project(api, "DICOM ZIP E2E", task="volume", schema={"classes": CLASSES})
    slices = _ct5n()
    series = _zip(tmp_path / "ct5n.zip", {f"CT5N/{p.name}": p.read_bytes() for p in slices})
    mixed = _zip(
        tmp_path / "study.zip",
        {f"a/{p.name}": p.read_bytes() for p in slices}
        | {f"b/{p.name}": _as_series(p, "1.2.826.0.1.3680043.8.498.5") for p in slices},
    )
    ui_login(page, "alice", path=f"/projects/{pid}")

    # The picker offers volumes and ZIPs.
    accept = page.get_by_test_id("file-input").get_attribute("accept") or ""
    assert {".zip", ".nii", ".dcm"} <= set(accept.split(","))

    _pick(page, series)
    panel = page.locator("section.panel", has=page.get_by_role("heading", name="Uploads"))
    expect(panel.get_by_role("status")).to_have_text("1 of 1 finished", timeout=30_000)
    panel.get_by_label("show finished").check()  # finished files are hidden by default
    queue = panel.get_by_role("list", name="Upload queue")
    expect(queue.locator("li[data-status=done]").filter(has_text="ct5n.zip")).to_have_count(1)
    tiles = page.locator("[data-item-id]")
    expect(tiles).to_have_count(1)
    items = api.get(f"/api/projects/{pid}/items", params={"limit": 10}).json()["data"]
    assert [i["filename"] for i in items] == ["ct5n.zip"]
    item_id = int(items[0]["id"])
    assert int(tiles.first.get_attribute("data-item-id")) == item_id

    # Loose slices of another series (no suffix, as scanners write them): one line,
    # one request, one volume.
    loose = tmp_path / "loose"
    loose.mkdir()
    for p in slices:
        (loose / p.name).write_bytes(_as_series(p, "1.2.826.0.1.3680043.8.498.7"))
    _pick(page, *sorted(loose.iterdir()))
    expect(panel.get_by_role("status")).to_have_text("2 of 2 finished", timeout=30_000)
    line = queue.locator("li[data-status=done]").filter(has_text="(5 DICOM files)")
    expect(line).to_have_count(1)
    expect(tiles).to_have_count(2)

    # A study ZIP of two series: split; its first series is the volume already in.
    _pick(page, mixed)
    expect(panel.get_by_role("status")).to_have_text("3 of 3 finished", timeout=30_000)
    expect(queue.locator("li[data-status=done]").filter(has_text="study.zip")).to_have_count(1)
    expect(tiles).to_have_count(3)
    names = sorted(
        i["filename"]
        for i in api.get(f"/api/projects/{pid}/items", params={"limit": 10}).json()["data"]
    )
    assert names[0] == sorted(slices)[0].name and names[1] == "ct5n.zip"
    assert names[2].startswith("study.zip: b/ series")

    # Open the volume from the grid's side panel: the editor loads the five slices.
    tiles.first.locator(".thumb").click()
    with page.expect_response(
        lambda r: re.search(rf"/volume/items/{item_id}/image\.nii\.gz", r.url) is not None
    ) as image:
        page.get_by_role("link", name="Open in the 3-D editor").click()
        page.locator(".volume-editor[data-ready=yes]").wait_for(timeout=60_000)
    assert image.value.status == 200
    raw = image.value.body()
    volume: Any = nib.Nifti1Image.from_bytes(
        gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    )
    first = pydicom.dcmread(slices[0])
    assert volume.shape == (first.Columns, first.Rows, len(slices))
    expect(page.locator(".volume-editor canvas")).to_be_visible()
    api.close()
