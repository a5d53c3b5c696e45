"""3-D exports through the project export job: NIfTI masks, the nnU-Net raw dataset and
DICOM-SEG (read back with highdicom), for corrected volumes of a project.

Real data: a crop of nilearn's MNI152 T1 and a series built from pydicom's CT_small.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from tests.api.test_volume_dicom import write_series
from tests.api.test_volume_masks import mask_body, mni_crop

SCHEMA = {"classes": [{"name": "grey", "value": 1}, {"name": "white", "value": 2}]}


@pytest.fixture
def exported(settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path) -> Any:
    """A project with a corrected NIfTI crop and a corrected DICOM series."""
    from loupe.services.items.ingest import ingest_paths

    owner = make_user()
    project = make_project(owner, task="volume", schema=SCHEMA)
    nifti, labels = mni_crop(tmp_path / "n", "brain", offset=80, size=16)
    write_series(tmp_path / "ct", [0.0, 2.5, 5.0, 7.5])
    report = ingest_paths(settings, project.id, [nifti, tmp_path / "ct"])
    assert report.failed == [] and len(report.items) == 2
    nifti_id, dicom_id = report.items
    c = login(owner)
    masks = {}
    for item, make in ((nifti_id, lambda shape: labels), (dicom_id, None)):
        base = f"/api/projects/{project.id}/volume/items/{item}"
        served: Any = nib.Nifti1Image.from_bytes(
            gzip.decompress(c.get(f"{base}/image.nii.gz").content)
        )
        if make is None:
            mask = np.zeros(served.shape, np.uint8)
            mask[30:60, 40:80, 1:3] = 1
            mask[70:90, 70:90, 2] = 2
        else:
            mask = make(served.shape)
        assert c.put(f"{base}/mask", content=mask_body(mask, served)).status_code == 200
        masks[item] = mask
    return c, project, nifti_id, dicom_id, masks


def _export(c: Any, project: Any, fmt: str) -> zipfile.ZipFile:
    r = c.post(f"/api/projects/{project.id}/exports", json={"format": fmt})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    r = c.get(f"/api/exports/{job['id']}/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(r.content))


def test_nifti_masks_export(exported: Any) -> None:
    c, project, nifti_id, dicom_id, masks = exported
    zf = _export(c, project, "nifti_masks")
    assert sorted(zf.namelist()) == sorted(
        f"{kind}/item{i}.nii.gz" for kind in ("images", "masks") for i in (nifti_id, dicom_id)
    )
    for item, mask in masks.items():
        back: Any = nib.Nifti1Image.from_bytes(gzip.decompress(zf.read(f"masks/item{item}.nii.gz")))
        assert np.array_equal(np.asanyarray(back.dataobj), mask)


def test_nnunet_export(exported: Any) -> None:
    c, project, nifti_id, dicom_id, _ = exported
    zf = _export(c, project, "nnunet")
    names = zf.namelist()
    (meta_name,) = [n for n in names if n.endswith("dataset.json")]
    folder = meta_name.split("/")[0]
    assert folder.startswith("Dataset")
    meta = json.loads(zf.read(meta_name))
    assert meta["labels"] == {"background": 0, "grey": 1, "white": 2}
    assert meta["numTraining"] == 2 and meta["file_ending"] == ".nii.gz"
    for item in (nifti_id, dicom_id):
        assert f"{folder}/imagesTr/item{item}_0000.nii.gz" in names
        assert f"{folder}/labelsTr/item{item}.nii.gz" in names


def test_dicom_seg_export_reads_back(exported: Any, tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    from loupe.services.volumes.dicom_seg import read_dicom_seg

    c, project, nifti_id, dicom_id, masks = exported
    r = c.post(f"/api/projects/{project.id}/exports", json={"format": "dicom_seg"})
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done" and job["result"]["skipped"] == [nifti_id], job
    zf = _export(c, project, "dicom_seg")
    assert zf.namelist() == [f"seg/item{dicom_id}.dcm"]
    seg = tmp_path / "seg.dcm"
    seg.write_bytes(zf.read(f"seg/item{dicom_id}.dcm"))
    labels, names = read_dicom_seg(seg, sorted((tmp_path / "ct").iterdir()))
    assert names == {1: "grey", 2: "white"}
    # (z, y, x) from the series vs the mask's NIfTI (x, y, z)
    assert np.array_equal(labels, masks[dicom_id].transpose(2, 1, 0))
