"""Plain little-endian pixel data is read straight from the file (no decoder); the
values must be exactly what pydicom decodes, for every pydicom test file that takes
that path, and files that need decoding (big-endian, 12 of 16 bits, compressed,
palette, multi-frame) must not take it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pydicom.data

from loupe.media.dicom import _decode, read_header

FILES = Path(pydicom.data.__file__).parent / "test_files"


def _decoded_by_pydicom(path: Path) -> np.ndarray:
    return np.asarray(pydicom.dcmread(path).pixel_array)


def test_raw_pixels_equal_pydicom() -> None:
    taken = []
    for path in sorted(FILES.glob("*.dcm")):
        try:
            header = read_header(path)
        except Exception:  # noqa: BLE001 (files the reader refuses are other tests' business)
            continue
        if header.raw_pixels is None:
            continue
        ours = _decode(header, index=None)
        theirs = _decoded_by_pydicom(path)
        assert ours.dtype == theirs.dtype, path.name
        assert np.array_equal(ours, theirs), path.name
        taken.append(path.name)
    assert "CT_small.dcm" in taken and "MR_small.dcm" in taken, taken


def test_files_that_need_decoding_do_not_take_the_raw_path() -> None:
    # big-endian, RLE, JPEG 2000, and 12 bits stored in 16 (pydicom masks them)
    names = ("MR_small_bigendian.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "examples_overlay.dcm")
    for name in names:
        header = read_header(FILES / name)
        assert header.raw_pixels is None, name
        assert np.array_equal(_decode(header, index=None), _decoded_by_pydicom(FILES / name))
