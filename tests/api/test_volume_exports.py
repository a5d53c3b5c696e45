"""3-D exports: the nnU-Net v2 raw dataset (checked by nnU-Net itself) and DICOM-SEG.

Data from wheels: nilearn's MNI152 template + tissue maps (reference masks) and
pydicom's CT series ``test_files/dicomdirtests/98892001/CT5N`` (five axial slices).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from loupe.errors import LoupeError
from loupe.media.dicom_series import read_series
from loupe.media.masks3d import VolumeGrid, grid_of, read_mask, write_mask
from loupe.services.volumes.dicom_seg import read_dicom_seg, write_dicom_seg
from loupe.services.volumes.nnunet import export_nnunet_dataset, plan_and_preprocess

LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}


def _mni_folder() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn (test data: MNI152 template) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _cases(tmp_path: Path, count: int, size: int) -> list[tuple[str, Path, Path]]:
    """Crops of the MNI T1 (images) with grey/white-matter masks from the tissue maps."""
    folder = _mni_folder()
    t1 = nib.load(folder / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = nib.load(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm = nib.load(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    cases = []
    for index in range(count):
        box = tuple(slice(70 + 12 * index, 70 + 12 * index + size) for _ in range(3))
        image = t1.slicer[box]
        labels = np.zeros(image.shape, np.uint8)  # (x, y, z)
        labels[np.asarray(gm.slicer[box].dataobj) > 127] = 1
        labels[np.asarray(wm.slicer[box].dataobj) > 127] = 2
        image_path = tmp_path / f"image{index}.nii.gz"
        nib.save(image, image_path)
        mask_path = write_mask(tmp_path / f"mask{index}.nii.gz", labels.T, grid_of(image))
        cases.append((f"mni{index}", image_path, mask_path))
    return cases


def test_nnunet_export_layout(tmp_path: Path) -> None:
    cases = _cases(tmp_path, 2, 24)
    # the second mask comes on a shifted grid: it is resampled onto its image
    labels, grid = read_mask(cases[1][2])
    moved = grid.affine.copy()
    moved[:3, 3] += 1.0
    shifted = write_mask(tmp_path / "shifted.nii.gz", labels, VolumeGrid(grid.shape, moved))
    cases[1] = (cases[1][0], cases[1][1], shifted)
    folder = export_nnunet_dataset(
        cases, tmp_path / "raw", dataset_id=7, name="MNI", labels=LABELS, channel_names={0: "T1"}
    )
    assert folder.name == "Dataset007_MNI"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.nii.gz"))
    assert files == [
        "imagesTr/mni0_0000.nii.gz",
        "imagesTr/mni1_0000.nii.gz",
        "labelsTr/mni0.nii.gz",
        "labelsTr/mni1.nii.gz",
    ]
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta == {
        "channel_names": {"0": "T1"},
        "labels": LABELS,
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    for case, image_path, _ in cases:
        image = nib.load(folder / "imagesTr" / f"{case}_0000.nii.gz")
        assert (folder / "imagesTr" / f"{case}_0000.nii.gz").read_bytes() == image_path.read_bytes()
        label = nib.load(folder / "labelsTr" / f"{case}.nii.gz")
        assert label.get_data_dtype() == np.uint8 and label.shape == image.shape
        np.testing.assert_array_equal(label.affine, image.affine)
    exported, _ = read_mask(folder / "labelsTr" / "mni1.nii.gz")
    assert (exported[1:, 1:, 1:] == labels[:-1, :-1, :-1]).all()


def test_nnunet_export_rejects_bad_input(tmp_path: Path) -> None:
    cases = _cases(tmp_path, 1, 16)
    with pytest.raises(LoupeError, match="consecutive"):
        export_nnunet_dataset(
            cases, tmp_path, dataset_id=7, name="X", labels={"background": 0, "a": 2}
        )
    with pytest.raises(LoupeError, match="not in the labels"):
        export_nnunet_dataset(
            cases, tmp_path, dataset_id=7, name="X", labels={"background": 0, "a": 1}
        )
    with pytest.raises(LoupeError, match="file-safe"):
        export_nnunet_dataset(
            [("../x", *cases[0][1:])], tmp_path, dataset_id=7, name="X", labels=LABELS
        )
    with pytest.raises(LoupeError, match="1..999"):
        export_nnunet_dataset(cases, tmp_path, dataset_id=0, name="X", labels=LABELS)


@pytest.mark.slow
def test_nnunet_accepts_the_export(tmp_path: Path) -> None:
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not installed")
    cases = _cases(tmp_path, 2, 32)
    export_nnunet_dataset(
        cases, tmp_path / "raw", dataset_id=42, name="MNI", labels=LABELS, channel_names={0: "T1"}
    )
    plan_and_preprocess(
        42,
        raw=tmp_path / "raw",
        preprocessed=tmp_path / "pre",
        results=tmp_path / "results",
        timeout=600,
    )
    pre = tmp_path / "pre" / "Dataset042_MNI"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in (pre / "gt_segmentations").iterdir()) == [
        "mni0.nii.gz",
        "mni1.nii.gz",
    ]


def _ct_series() -> list[Path]:
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/98892001/CT5N"
    return sorted(folder.iterdir())


def test_dicom_seg_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    paths = _ct_series()
    volume, _ = read_series(paths)
    mask = np.zeros(volume.shape, np.uint8)
    mask[volume > np.percentile(volume, 50)] = 1
    mask[volume > np.percentile(volume, 85)] = 5  # label values need not be consecutive
    mask[0] = 0  # a slice without any label has no frame in the file
    out = write_dicom_seg(
        paths, mask, tmp_path / "seg.dcm", segments={1: "soft", 5: "dense"}, algorithm="voxel-rf"
    )
    back, names = read_dicom_seg(out, paths)
    np.testing.assert_array_equal(back, mask)
    assert names == {1: "soft", 5: "dense"}

    import pydicom

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_dicom_seg_rejects_a_mask_of_another_shape(tmp_path: Path) -> None:
    pytest.importorskip("highdicom")
    with pytest.raises(LoupeError, match="shape"):
        write_dicom_seg(
            _ct_series(), np.zeros((4, 16, 16), np.uint8), tmp_path / "s.dcm", segments={1: "a"}
        )
    with pytest.raises(LoupeError, match="no segment"):
        write_dicom_seg(
            _ct_series(), np.full((5, 16, 16), 3, np.uint8), tmp_path / "s.dcm", segments={1: "a"}
        )
