"""A ZIP of a DICOM series uploaded into a volume project becomes one volume item.

Real data: pydicom's CT series ``test_files/dicomdirtests/98892001/CT5N`` (five axial
slices, files without a suffix) shipped in the pydicom wheel; the mixed-series ZIP
adds a copy of its slices under another SeriesInstanceUID.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import pydicom
import pydicom.data
import pytest

SCHEMA = {"classes": [{"name": "lesion", "value": 1}]}
CT5N = Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/98892001/CT5N"


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def series_members(prefix: str, *, series_uid: str | None = None) -> dict[str, bytes]:
    """CT5N's slices under ``prefix``; with ``series_uid``, re-identified as that series."""
    members = {}
    for path in sorted(CT5N.iterdir()):
        if series_uid is None:
            members[f"{prefix}{path.name}"] = path.read_bytes()
            continue
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{path.name}"
        buffer = io.BytesIO()
        ds.save_as(buffer)
        members[f"{prefix}{path.name}"] = buffer.getvalue()
    return members


def zips_dir(settings: Any) -> list[Path]:
    folder = settings.home / "volumes" / "zips"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def owner_project(make_user: Any, make_project: Any) -> tuple[Any, Any]:
    owner = make_user()
    return owner, make_project(owner, task="volume", schema=SCHEMA)


def test_zip_of_a_series_uploads_as_one_volume(
    settings: Any, owner_project: Any, login: Any
) -> None:
    owner, project = owner_project
    c = login(owner)
    body = zip_bytes(series_members("CT5N/"))
    url = f"/api/projects/{project.id}/uploads"
    r = c.post(url, files=[("files", ("ct5n.zip", body, "application/zip"))])
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == 1 and report["failed"] == [], report
    (item_id,) = report["item_ids"]
    item = c.get(f"/api/projects/{project.id}/items/{item_id}").json()
    assert item["filename"] == "ct5n.zip"
    image = c.get(f"/api/projects/{project.id}/volume/items/{item_id}/image.nii.gz")
    assert image.status_code == 200, image.text
    volume: Any = nib.Nifti1Image.from_bytes(gzip.decompress(image.content))
    first = pydicom.dcmread(sorted(CT5N.iterdir())[0])
    assert volume.shape == (first.Columns, first.Rows, 5)
    # the ZIP itself is not kept: the item references the extracted slices
    assert not list(settings.media_dir.rglob("*.zip"))
    again = c.post(url, files=[("files", ("copy.zip", body, "application/zip"))]).json()
    assert again["imported"] == 0 and again["existing"] == 1
    assert again["item_ids"] == [item_id]


def test_zip_with_two_series_is_refused_by_name(
    settings: Any, owner_project: Any, login: Any
) -> None:
    owner, project = owner_project
    c = login(owner)
    members = series_members("a/") | series_members("b/", series_uid="1.2.826.0.1.3680043.8.498.5")
    files = [
        ("files", ("study.zip", zip_bytes(members), "application/zip")),
        ("files", ("empty.zip", zip_bytes({".hidden": b"x"}), "application/zip")),
    ]
    r = c.post(f"/api/projects/{project.id}/uploads", files=files)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["imported"] == 0 and report["item_ids"] == []
    reasons = {f["path"]: f["reason"] for f in report["failed"]}
    assert set(reasons) == {"study.zip", "empty.zip"}
    assert reasons["study.zip"].startswith("study.zip holds 2 DICOM series, not one")
    assert "5 files in a/" in reasons["study.zip"] and "5 files in b/" in reasons["study.zip"]
    assert reasons["study.zip"].endswith("put each series in a ZIP of its own")
    assert reasons["empty.zip"] == "empty.zip holds no files"
    assert zips_dir(settings) == []  # nothing extracted is left behind
    assert not [p for p in settings.media_dir.rglob("*") if p.is_file()]


def test_zip_leaving_its_folder_is_refused(settings: Any, owner_project: Any, login: Any) -> None:
    owner, project = owner_project
    c = login(owner)
    evil = zip_bytes({"../outside.dcm": (CT5N / "2062").read_bytes()})
    r = c.post(
        f"/api/projects/{project.id}/uploads",
        files=[("files", ("evil.zip", evil, "application/zip"))],
    )
    assert r.status_code == 200, r.text
    (failure,) = r.json()["failed"]
    assert failure["path"] == "evil.zip" and "leaves its folder" in failure["reason"]
    assert not (settings.home / "volumes" / "outside.dcm").exists()
