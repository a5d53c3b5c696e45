"""DICOM series built from CT_small copies: grouping, ordering, spacing, thumbnails."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loupe.media import (
    MediaError,
    group_dicom_series,
    probe_dicom_series,
    read_volume,
    thumbnail_dicom_series,
)

SliceWriter = Callable[..., Path]
SERIES_A = "1.2.826.0.1.3680043.8.498.100"
SERIES_B = "1.2.826.0.1.3680043.8.498.200"


@pytest.fixture
def series_a(tmp_path: Path, write_ct_slice: SliceWriter) -> list[Path]:
    """Five slices 2.5 mm apart, written (and named) out of spatial order; the pixel
    value of each slice encodes its z so that the order can be checked."""
    folder = tmp_path / "a"
    folder.mkdir()
    zs = [-70.0, -65.0, -75.0, -67.5, -72.5]
    return [
        write_ct_slice(
            folder / f"img{index}.dcm",
            z=z,
            instance=index + 1,
            series_uid=SERIES_A,
            fill=int(1100 + z * 10),
        )
        for index, z in enumerate(zs)
    ]


def test_group_series_separates_uids_and_ignores_non_dicom(
    tmp_path: Path, series_a: list[Path], write_ct_slice: SliceWriter
) -> None:
    other = [
        write_ct_slice(tmp_path / f"b{i}.dcm", z=float(i), instance=i, series_uid=SERIES_B)
        for i in range(2)
    ]
    (tmp_path / "readme.txt").write_text("not dicom")
    (tmp_path / "fake.dcm").write_text("not dicom either")
    groups = group_dicom_series([*series_a, *other, tmp_path / "readme.txt", tmp_path / "fake.dcm"])
    assert set(groups) == {SERIES_A, SERIES_B}
    assert groups[SERIES_A] == sorted(series_a)
    assert groups[SERIES_B] == sorted(other)


def test_probe_series_counts_slices_and_spacing(series_a: list[Path]) -> None:
    info = probe_dicom_series(series_a)
    assert (info.format, info.kind, info.axes) == ("dicom", "volume", "ZYX")
    assert info.shape == (5, 128, 128)
    assert info.dtype == "int16"
    assert info.pages == 5
    assert info.spacing == pytest.approx((2.5, 0.661468, 0.661468))
    assert info.extra["series_uid"] == SERIES_A
    assert info.extra["ordered_by"] == "position"
    assert "spacing_assumed" not in info.extra


def test_read_volume_orders_slices_along_the_normal(series_a: list[Path]) -> None:
    volume, spacing = read_volume(series_a)
    assert volume.shape == (5, 128, 128)
    assert spacing == pytest.approx((2.5, 0.661468, 0.661468))
    # slices come back sorted by z, rescaled to HU (intercept -1024) as float32
    assert volume.dtype == np.float32
    expected_z = [-75.0, -72.5, -70.0, -67.5, -65.0]
    assert volume[:, 0, 0].tolist() == pytest.approx([1100 + z * 10 - 1024 for z in expected_z])
    # a directory holding one series works the same way
    from_folder, _ = read_volume(series_a[0].parent)
    assert np.array_equal(from_folder, volume)


def test_thumbnail_is_the_middle_slice(series_a: list[Path]) -> None:
    jpeg = thumbnail_dicom_series(series_a, size=64)
    with Image.open(io.BytesIO(jpeg)) as image:
        assert image.format == "JPEG"
        assert image.size == (64, 64)
    # constant slices display as a constant image; the middle slice must be readable
    assert len(jpeg) > 100


def test_series_of_real_ct_pixels_thumbnail(tmp_path: Path, write_ct_slice: SliceWriter) -> None:
    paths = [write_ct_slice(tmp_path / f"s{i}.dcm", z=i * 3.0, instance=i) for i in range(3)]
    jpeg = thumbnail_dicom_series(paths, size=256)
    with Image.open(io.BytesIO(jpeg)) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (128, 128)  # never upscaled
    assert pixels.std() > 20  # real anatomy, windowed to the full range
    info = probe_dicom_series(paths)
    assert info.spacing == pytest.approx((3.0, 0.661468, 0.661468))


def test_mixed_series_are_rejected(
    tmp_path: Path, series_a: list[Path], write_ct_slice: SliceWriter
) -> None:
    stray = write_ct_slice(tmp_path / "stray.dcm", z=0.0, instance=9, series_uid=SERIES_B)
    with pytest.raises(MediaError, match="2 different DICOM series"):
        probe_dicom_series([*series_a, stray])


def test_instance_number_order_without_positions(
    tmp_path: Path, write_ct_slice: SliceWriter
) -> None:
    import pydicom

    paths = []
    for instance, fill in [(3, 300), (1, 100), (2, 200)]:
        path = write_ct_slice(tmp_path / f"n{instance}.dcm", z=0.0, instance=instance, fill=fill)
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.RescaleIntercept = 0
        ds.save_as(path)
        paths.append(path)
    info = probe_dicom_series(paths)
    assert info.extra["ordered_by"] == "instance_number"
    assert info.spacing == pytest.approx((5.0, 0.661468, 0.661468))  # SliceThickness
    volume, _ = read_volume(paths)
    assert volume.dtype == np.int16  # no rescale declared: stored values
    assert volume[:, 0, 0].tolist() == [100, 200, 300]
