"""3-D DICOM and exports: a series read, DICOM-SEG write + read, nnU-Net planning of an export.

0. A 189-slice CT series of 512 x 512 slices (pydicom's ``CT_small.dcm``, its 128 x 128
   pixels enlarged 4x, positions 1.25 mm apart, files in shuffled order) read into a
   (z, y, x) volume with its grid (``read_series`` + ``grid_from_dicom``, as the volume
   routes do), checked: slices in spatial order, the affine's z step 1.25 mm, RAS+.
   Target: < 1 s.
1. DICOM-SEG (highdicom, BINARY, explicit VR LE) of a two-label mask on a 64-slice,
   128 x 128 CT series built from pydicom's ``CT_small.dcm`` (real pixels, positions
   1.25 mm apart), then read back onto the series. Target: write + read < 2 s.
2. nnU-Net: export five MNI152 T1 volumes (nilearn wheel) with grey/white-matter masks as
   the raw dataset, then ``nnUNetv2_plan_and_preprocess -d ID --verify_dataset_integrity
   -c 3d_fullres -np 1``. Target: < 5 min. The five cases are the template shifted by a
   few voxels (same anatomy, distinct files).

Run: ``.venv/bin/python benchmarks/volume_exports.py [--skip-nnunet]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from volume_interactive import mni  # noqa: E402


def ct_series(folder: Path, slices: int, *, scale: int = 1) -> list[Path]:
    import pydicom
    import pydicom.data
    from pydicom.uid import generate_uid

    source = Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm"
    series_uid = generate_uid()
    paths = []
    for index in range(slices):
        ds = pydicom.dcmread(source)
        if scale > 1:
            pixels = np.kron(ds.pixel_array, np.ones((scale, scale), ds.pixel_array.dtype))
            ds.Rows, ds.Columns = pixels.shape
            ds.PixelSpacing = [float(v) / scale for v in ds.PixelSpacing]
            ds.PixelData = pixels.tobytes()
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.InstanceNumber = index + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 1.25 * index]
        ds.SliceLocation = z + 1.25 * index
        path = folder / f"ct{index:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def series_read(tmp: Path, slices: int = 189) -> None:
    import random

    from loupe.media import dicom_series
    from loupe.media.dicom_series import read_series
    from loupe.media.masks3d import grid_from_dicom

    folder = tmp / "series"
    folder.mkdir()
    paths = ct_series(folder, slices, scale=4)
    random.Random(0).shuffle(paths)  # the order files come in says nothing
    read_series(sorted(paths)[:3])  # imports
    times = []
    for _ in range(3):
        dicom_series._SORTED.clear()  # every header parsed again, as for a new series
        started = time.perf_counter()
        volume, _ = read_series(paths)
        grid = grid_from_dicom(paths)
        times.append(time.perf_counter() - started)
    assert volume.shape == (slices, 512, 512), volume.shape
    assert tuple(grid.shape) == volume.shape, (grid.shape, volume.shape)
    steps = np.linalg.norm(grid.affine[:3, :3], axis=0)
    assert np.isclose(max(steps), 1.25), steps  # the slice step, whatever axis holds it
    first = min(times)
    print(
        f"DICOM series {volume.shape} ({volume.nbytes / 2**20:.0f} MiB): read + grid "
        f"{np.median(times):.2f} s median of 3 (best {first:.2f} s; target < 1 s: "
        f"{np.median(times):.2f}x of it)"
    )


def dicom_seg(tmp: Path) -> None:
    from loupe.media.dicom_series import read_series
    from loupe.services.volumes.dicom_seg import read_dicom_seg, write_dicom_seg

    paths = ct_series(tmp, 64)
    volume, _ = read_series(paths)
    mask = (volume > np.percentile(volume, 60)).astype(np.uint8)
    mask[volume > np.percentile(volume, 90)] = 2
    write_dicom_seg(paths[:2], mask[:2], tmp / "warm.dcm", segments={1: "a", 2: "b"})  # imports
    started = time.perf_counter()
    out = write_dicom_seg(paths, mask, tmp / "seg.dcm", segments={1: "soft", 2: "dense"})
    wrote = time.perf_counter() - started
    back, _ = read_dicom_seg(out, paths)
    total = time.perf_counter() - started
    assert np.array_equal(back, mask)
    print(
        f"DICOM-SEG {mask.shape} write {wrote:.2f} s + read {total - wrote:.2f} s = "
        f"{total:.2f} s (target < 2 s), {out.stat().st_size / 1e6:.1f} MB, exact round trip"
    )


def nnunet(tmp: Path, cases: int) -> None:
    import nibabel as nib

    from loupe.media.masks3d import VolumeGrid, write_mask
    from loupe.services.volumes.nnunet import export_nnunet_dataset, plan_and_preprocess

    t1, labels = mni()
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-98.0, -134.0, -72.0]
    items = []
    for index in range(cases):
        shift = 3 * index
        image, mask = np.roll(t1, shift, axis=2), np.roll(labels, shift, axis=2)
        image_path = tmp / f"t1_{index}.nii.gz"
        nib.save(
            nib.Nifti1Image(np.ascontiguousarray(image.transpose(2, 1, 0)), affine), image_path
        )
        mask_path = write_mask(tmp / f"mask_{index}.nii.gz", mask, VolumeGrid(mask.shape, affine))
        items.append((f"mni{index}", image_path, mask_path))
    started = time.perf_counter()
    export_nnunet_dataset(
        items,
        tmp / "raw",
        dataset_id=901,
        name="MNI",
        labels={"background": 0, "grey_matter": 1, "white_matter": 2},
        channel_names={0: "T1"},
    )
    exported = time.perf_counter() - started
    plan_and_preprocess(901, raw=tmp / "raw", preprocessed=tmp / "pre", results=tmp / "res")
    total = time.perf_counter() - started
    print(
        f"nnU-Net: export of {cases} x {t1.shape} {exported:.1f} s; plan + preprocess "
        f"(--verify_dataset_integrity, 3d_fullres) {total - exported:.1f} s (target < 300 s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-nnunet", action="store_true")
    parser.add_argument("--cases", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as folder:
        series_read(Path(folder))
        dicom_seg(Path(folder))
        if not args.skip_nnunet:
            nnunet(Path(folder), args.cases)
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
