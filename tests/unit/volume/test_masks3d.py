"""Masks on the image grid: exact round trips (RAS and LAS), mismatch errors, resampling."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from loupe.media.masks3d import (
    VolumeGrid,
    check_mask_matches,
    grid_from_dicom,
    mask_on_image_grid,
    read_grid,
    read_mask,
    resample_to_grid,
    write_mask,
)

from .conftest import Mni

BOX = (slice(60, 100), slice(80, 130), slice(70, 115))  # (z, y, x) crop of the template


def _save_image(path: Path, volume: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine), path)
    return path


def _las(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with x running right-to-left (a LAS file)."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, volume.shape[2] - 1
    return np.ascontiguousarray(volume[:, :, ::-1]), affine @ flip


def _crop_affine(affine: np.ndarray, box: tuple[slice, slice, slice]) -> np.ndarray:
    shift = np.eye(4)
    shift[:3, 3] = [box[2].start, box[1].start, box[0].start]  # (x, y, z)
    return affine @ shift


@pytest.mark.parametrize("orientation", ["RAS", "LAS"])
def test_mask_round_trip_is_voxel_exact(tmp_path: Path, mni: Mni, orientation: str) -> None:
    image, mask = mni.t1[BOX], mni.labels[BOX]
    affine = _crop_affine(mni.affine, BOX)
    if orientation == "LAS":
        (image, affine), (mask, _) = _las(image, affine), _las(mask, affine)
    grid = read_grid(_save_image(tmp_path / "image.nii.gz", image, affine))
    assert grid.orientation == orientation
    assert grid.shape == image.shape and grid.spacing == (1.0, 1.0, 1.0)

    path = write_mask(tmp_path / "mask.nii.gz", mask, grid)
    back, back_grid = read_mask(path)
    assert back.dtype == np.uint8 and nib.load(path).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(back, mask)
    np.testing.assert_array_equal(back_grid.affine, grid.affine)
    check_mask_matches(grid, back_grid)
    # the same world point is white matter in the mask and in the reference
    z, y, x = (int(v) for v in np.argwhere(back == 2)[0])
    world = back_grid.affine @ [x, y, z, 1]
    ref_index = np.rint(np.linalg.inv(mni.affine) @ world).astype(int)
    assert mni.labels[ref_index[2], ref_index[1], ref_index[0]] == 2


def test_labels_beyond_255_are_int16_and_floats_are_refused(tmp_path: Path) -> None:
    grid = VolumeGrid((4, 5, 6), np.eye(4))
    mask = np.zeros(grid.shape, dtype=np.int64)
    mask[1, 2, 3] = 300
    back, _ = read_mask(write_mask(tmp_path / "big.nii.gz", mask, grid))
    assert back.dtype == np.int16 and back[1, 2, 3] == 300
    with pytest.raises(ValueError, match="integer label"):
        write_mask(tmp_path / "f.nii.gz", np.full(grid.shape, 0.5), grid)
    # a viewer's float32 file of whole labels is read as uint8
    nib.save(nib.Nifti1Image(np.ones((6, 5, 4), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    labels, _ = read_mask(tmp_path / "v.nii.gz")
    assert labels.dtype == np.uint8 and labels.shape == (4, 5, 6)


def test_mismatched_masks_raise_value_errors(tmp_path: Path) -> None:
    image = VolumeGrid((10, 12, 14), np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        check_mask_matches(image, VolumeGrid((10, 12, 15), image.affine))
    moved = image.affine.copy()
    moved[0, 3] = 0.5
    with pytest.raises(ValueError, match="affine"):
        check_mask_matches(image, VolumeGrid(image.shape, moved))
    path = write_mask(
        tmp_path / "m.nii.gz", np.zeros(image.shape, np.uint8), VolumeGrid(image.shape, moved)
    )
    with pytest.raises(ValueError, match="resample"):
        mask_on_image_grid(path, image, resample=False)
    with pytest.raises(ValueError, match="shape"):
        write_mask(tmp_path / "x.nii.gz", np.zeros((2, 2, 2), np.uint8), image)


def test_a_las_mask_resamples_exactly_onto_a_ras_image(tmp_path: Path, mni: Mni) -> None:
    mask, affine = mni.labels[BOX], _crop_affine(mni.affine, BOX)
    ras = VolumeGrid(mask.shape, affine)
    las_mask, las_affine = _las(mask, affine)
    path = write_mask(tmp_path / "las.nii.gz", las_mask, VolumeGrid(mask.shape, las_affine))
    np.testing.assert_array_equal(mask_on_image_grid(path, ras), mask)


def test_a_coarser_mask_resamples_onto_the_image_grid(mni: Mni) -> None:
    mask, affine = mni.labels[BOX], _crop_affine(mni.affine, BOX)
    image = VolumeGrid(mask.shape, affine)
    coarse = VolumeGrid(mask[::2, ::2, ::2].shape, affine @ np.diag([2.0, 2.0, 2.0, 1.0]))
    fine = resample_to_grid(mask[::2, ::2, ::2], coarse, image)
    assert fine.shape == mask.shape and fine.dtype == mask.dtype
    # voxels at the coarse voxel centres are exact; the rest mostly agree
    np.testing.assert_array_equal(fine[::2, ::2, ::2], mask[::2, ::2, ::2])
    assert (fine == mask).mean() > 0.85
    # a grid shifted beyond the mask gets background
    far = affine.copy()
    far[:3, 3] += 1000.0
    assert not resample_to_grid(mask, image, VolumeGrid(mask.shape, far)).any()


def test_dicom_series_grid_matches_its_slice_positions() -> None:
    import pydicom
    import pydicom.data

    folder = Path(pydicom.data.__file__).parent / "test_files/dicomdirtests/98892001/CT5N"
    paths = sorted(folder.iterdir())
    grid = grid_from_dicom(paths)
    assert grid.shape == (5, 16, 16)
    assert grid.spacing == pytest.approx((2.5, 0.488281, 0.488281), abs=1e-4)
    for k, path in enumerate(
        sorted(paths, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    ):
        lps = np.array([float(v) for v in pydicom.dcmread(path).ImagePositionPatient])
        ras = grid.affine @ [0, 0, k, 1]
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-4)
