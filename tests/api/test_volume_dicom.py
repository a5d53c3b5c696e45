"""DICOM series as volume items: a folder and a ZIP of one series ingest and are served
as NIfTI on the series' grid; non-uniform spacing, missing slices and mixed series are
rejected with a clear message.

Real data: pydicom's ``CT_small.dcm`` (in the pydicom wheel), copied into slices with
new positions, instance numbers and series UIDs.
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from loupe.media import MediaError
from loupe.media.dicom_series import check_uniform_spacing, sort_series
from loupe.media.masks3d import grid_from_dicom

SERIES = "1.2.826.0.1.3680043.8.498.77"
SCHEMA = {"classes": [{"name": "lesion", "value": 1}]}


def write_series(
    folder: Path, zs: list[float], *, series_uid: str = SERIES, start: int = 1
) -> list[Path]:
    """CT_small copies at the given z positions; each slice's pixels encode its z."""
    source = get_testdata_file("CT_small.dcm", download=False)
    assert source is not None
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, z in enumerate(zs):
        ds = pydicom.dcmread(str(source))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{start + index}"
        ds.InstanceNumber = start + index
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z]
        ds.SliceLocation = z
        ds.PixelData = np.full((ds.Rows, ds.Columns), int(z * 10), dtype=np.int16).tobytes()
        path = folder / f"slice{start + index:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def test_uniform_spacing_rules() -> None:
    assert check_uniform_spacing([0.0, 2.5, 5.0, 7.5]) == pytest.approx(2.5)
    assert check_uniform_spacing([0.0, 2.5, 5.001, 7.5]) == pytest.approx(2.5)
    with pytest.raises(MediaError, match="missing slices.*1 slice"):
        check_uniform_spacing([0.0, 2.5, 7.5, 10.0, 12.5])
    with pytest.raises(MediaError, match="non-uniform slice spacing: 4 mm"):
        check_uniform_spacing([0.0, 2.5, 5.0, 9.0, 11.5, 14.0])
    with pytest.raises(MediaError, match="share a position"):
        check_uniform_spacing([0.0, 2.5, 2.5, 5.0])


def test_series_rejections(tmp_path: Path) -> None:
    gap = write_series(tmp_path / "gap", [0.0, 2.0, 4.0, 8.0, 10.0])
    with pytest.raises(MediaError, match="missing slices"):
        sort_series(gap)
    uneven = write_series(tmp_path / "uneven", [0.0, 2.0, 4.0, 7.0, 9.0, 11.0])
    with pytest.raises(MediaError, match="non-uniform"):
        sort_series(uneven)
    mixed = write_series(tmp_path / "mixed", [0.0, 2.0]) + write_series(
        tmp_path / "mixed", [0.0, 2.0], series_uid=SERIES + ".2", start=10
    )
    with pytest.raises(MediaError, match="2 different DICOM series"):
        sort_series(mixed)
    echoes = write_series(tmp_path / "echo", [0.0, 2.0, 4.0]) + write_series(
        tmp_path / "echo", [0.0, 2.0, 4.0], start=10
    )
    with pytest.raises(MediaError, match="share a position"):
        sort_series(echoes)


@pytest.fixture
def owner_project(make_user: Any, make_project: Any) -> tuple[Any, Any]:
    owner = make_user()
    return owner, make_project(owner, task="volume", schema=SCHEMA)


def test_dicom_folder_and_zip_ingest_and_serve(
    settings: Any, owner_project: Any, login: Any, tmp_path: Path
) -> None:
    from loupe.services.items.ingest import ingest_paths

    owner, project = owner_project
    zs = [-10.0, -7.5, -5.0, -2.5, 0.0, 2.5]
    paths = write_series(tmp_path / "series", zs[::-1])  # files named against z order
    report = ingest_paths(settings, project.id, [tmp_path / "series"])
    assert report.failed == [] and len(report.items) == 1
    c = login(owner)
    r = c.get(f"/api/projects/{project.id}/volume/items/{report.items[0]}/image.nii.gz")
    assert r.status_code == 200, r.text
    image: Any = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    grid = grid_from_dicom(paths)
    assert image.shape == (grid.shape[2], grid.shape[1], grid.shape[0]) == (128, 128, 6)
    assert np.allclose(image.affine, grid.affine, atol=1e-4)
    assert image.affine[2, 2] == pytest.approx(2.5)  # z step, sorted by position
    assert image.get_data_dtype() in (np.int16, np.uint8)
    data = np.asanyarray(image.dataobj)
    # slice k (third NIfTI axis) is the k-th in space: its pixels encode its z
    first = pydicom.dcmread(paths[0])
    slope, intercept = float(first.RescaleSlope), float(first.RescaleIntercept)
    assert [float(data[0, 0, k]) for k in range(6)] == [z * 10 * slope + intercept for z in zs]

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in write_series(tmp_path / "other", zs, series_uid=SERIES + ".9"):
            zf.write(path, f"study/{path.name}")
    zipped = ingest_paths(settings, project.id, [archive])
    assert zipped.failed == [] and zipped.imported == 1
    r = c.get(f"/api/projects/{project.id}/volume/items/{zipped.items[0]}/image.nii.gz")
    assert r.status_code == 200
    assert nib.Nifti1Image.from_bytes(gzip.decompress(r.content)).shape == (128, 128, 6)


def test_bad_series_are_reported_by_ingest(
    settings: Any, owner_project: Any, tmp_path: Path
) -> None:
    from loupe.services.items.ingest import ingest_paths

    _, project = owner_project
    write_series(tmp_path / "in" / "gap", [0.0, 2.0, 4.0, 8.0], series_uid=SERIES + ".1")
    write_series(tmp_path / "in" / "uneven", [0.0, 1.0, 2.6, 3.6, 4.6], series_uid=SERIES + ".3")
    report = ingest_paths(settings, project.id, [tmp_path / "in"])
    assert report.items == []
    reasons = {f["reason"] for f in report.failed}
    assert len(report.failed) == 9 and len(reasons) == 2, report.failed  # every file, why
    assert any("missing slices" in r for r in reasons)
    assert any("non-uniform slice spacing" in r for r in reasons)
