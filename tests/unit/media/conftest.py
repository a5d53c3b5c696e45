"""Real files for the media tests: shipped in wheels (skimage, pydicom) or written here."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import skimage
from pydicom.data import get_testdata_file

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


@pytest.fixture
def skimage_data() -> Path:
    return SKIMAGE_DATA


def dicom_test_file(name: str) -> Path:
    # only files that ship inside the pydicom wheel (others would be downloaded)
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


@pytest.fixture
def dicom_file() -> Callable[[str], Path]:
    return dicom_test_file


@pytest.fixture
def ct_small() -> Path:
    return dicom_test_file("CT_small.dcm")


@pytest.fixture
def mr_small() -> Path:
    return dicom_test_file("MR_small.dcm")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _crafted_png(width: int, height: int, *, bit_depth: int = 8, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height gray pixels, with the given IDAT payload."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat or zlib.compress(b"\0"))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def _write_nifti(
    path: Path, data: np.ndarray, zooms: Sequence[float], *, units: str = "mm"
) -> Path:
    """``data`` in nibabel order (x, y, z[, t])."""
    affine = np.diag([*zooms[:3], 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_zooms(tuple(zooms))
    image.header.set_xyzt_units(units)
    nib.save(image, path)
    return path


@pytest.fixture
def crafted_png() -> Callable[..., bytes]:
    return _crafted_png


@pytest.fixture
def write_nifti() -> Callable[..., Path]:
    return _write_nifti


SliceWriter = Callable[..., Path]


@pytest.fixture
def write_ct_slice(ct_small: Path) -> SliceWriter:
    """Copy CT_small with a new position, instance number and series; pixels shifted by z."""

    def write(
        path: Path,
        *,
        z: float,
        instance: int,
        series_uid: str = "1.2.826.0.1.3680043.8.498.1",
        fill: int | None = None,
    ) -> Path:
        ds = pydicom.dcmread(ct_small)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = f"{series_uid}.{instance}"
        ds.InstanceNumber = instance
        x, y, _ = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z]
        ds.SliceLocation = z
        if fill is not None:
            pixels = np.full((ds.Rows, ds.Columns), fill, dtype=np.int16)
            ds.PixelData = pixels.tobytes()
        ds.save_as(path)
        return path

    return write
