"""A ZIP of DICOM series uploaded into a volume project becomes one volume item per series.

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


def test_a_study_zip_is_split_into_its_series(
    settings: Any, owner_project: Any, login: Any
) -> None:
    owner, project = owner_project
    c = login(owner)
    other = "1.2.826.0.1.3680043.8.498.5"
    members = series_members("a/") | series_members("b/", series_uid=other)
    files = [
        ("files", ("study.zip", zip_bytes(members), "application/zip")),
        ("files", ("empty.zip", zip_bytes({".hidden": b"x"}), "application/zip")),
    ]
    r = c.post(f"/api/projects/{project.id}/uploads", files=files)
    assert r.status_code == 200, r.text
    report = r.json()
    # one volume per series, each named by the ZIP, its folder, number and description
    assert report["imported"] == 2 and len(report["item_ids"]) == 2, report
    names = sorted(
        c.get(f"/api/projects/{project.id}/items/{i}").json()["filename"]
        for i in report["item_ids"]
    )
    assert names == [
        "study.zip: a/ series 5 SmartScore - Gated 0.5 sec",
        "study.zip: b/ series 5 SmartScore - Gated 0.5 sec",
    ]
    for item_id in report["item_ids"]:
        image = c.get(f"/api/projects/{project.id}/volume/items/{item_id}/image.nii.gz")
        assert image.status_code == 200, image.text
        volume: Any = nib.Nifti1Image.from_bytes(gzip.decompress(image.content))
        assert volume.shape[2] == 5
    reasons = {f["path"]: f["reason"] for f in report["failed"]}
    assert reasons == {"empty.zip": "empty.zip holds no files"}
    assert len(zips_dir(settings)) == 1  # the study's folder; the empty ZIP left nothing


def test_series_labels_tie_break_and_fall_back(tmp_path: Path) -> None:
    from loupe.services.volumes.zip_series import _series_labels

    for folder in ("x", "y"):
        (tmp_path / folder).mkdir()
    plain = sorted(CT5N.iterdir())
    a = [tmp_path / "x" / p.name for p in plain[:2]]
    b = [tmp_path / "x" / f"b{p.name}" for p in plain[2:4]]
    for src, dst in zip(plain[:4], a + b, strict=True):
        dst.write_bytes(src.read_bytes())
    labels = _series_labels(tmp_path, {"1.2.3": a, "1.2.4": b})
    assert labels == {
        "1.2.3": "x/ series 5 SmartScore - Gated 0.5 sec #1",
        "1.2.4": "x/ series 5 SmartScore - Gated 0.5 sec #2",
    }
    broken = tmp_path / "y" / "junk"
    broken.write_bytes(b"not dicom")
    assert _series_labels(tmp_path / "y", {"9.8.7.6.5.4.3.2.1": [broken]}) == {
        "9.8.7.6.5.4.3.2.1": "series ....4.3.2.1"
    }


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
