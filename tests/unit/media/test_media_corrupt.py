"""Broken, hostile and non-image files raise MediaError with a clear reason."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from loupe.media import MediaError, make_thumbnail, probe, read_image, read_volume

CraftPng = Callable[..., bytes]


def _cut_in_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _reason(action: Callable[[], object]) -> str:
    with pytest.raises(MediaError) as caught:
        action()
    reason = caught.value.reason
    assert reason and reason in str(caught.value)
    return reason


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.touch()
    assert _reason(lambda: probe(empty)) == "empty file (0 bytes)"
    assert _reason(lambda: make_thumbnail(empty)) == "empty file (0 bytes)"


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert _reason(lambda: probe(tmp_path / "nope.png")) == "file not found"
    assert _reason(lambda: probe(tmp_path)) == "not a regular file"


def test_text_file_renamed_png(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("these are my notes, not an image\n" * 20)
    assert _reason(lambda: probe(fake)) == "not an image (unrecognised format)"
    assert _reason(lambda: read_image(fake)) == "not an image (unrecognised format)"


def test_truncated_jpeg(tmp_path: Path, skimage_data: Path) -> None:
    cut = _cut_in_half(skimage_data / "hubble_deep_field.jpg", tmp_path / "cut.jpg")
    assert _reason(lambda: probe(cut)).startswith("truncated JPEG")
    assert _reason(lambda: read_image(cut)).startswith("truncated JPEG")


def test_jpeg_with_trailing_data_is_fine(tmp_path: Path, skimage_data: Path) -> None:
    # e.g. motion photos append a video after the end-of-image marker
    padded = tmp_path / "padded.jpg"
    padded.write_bytes((skimage_data / "rocket.jpg").read_bytes() + b"\0" * 5000 + b"ftypmp42")
    assert probe(padded).shape == (427, 640, 3)


def test_truncated_png(tmp_path: Path, skimage_data: Path) -> None:
    cut = _cut_in_half(skimage_data / "camera.png", tmp_path / "cut.png")
    reason = _reason(lambda: probe(cut))
    assert reason.startswith("truncated PNG") or reason.startswith("corrupt PNG")
    assert "PNG" in _reason(lambda: read_image(cut))


def test_png_with_bad_crc(tmp_path: Path, skimage_data: Path) -> None:
    data = bytearray((skimage_data / "camera.png").read_bytes())
    data[len(data) // 2] ^= 0xFF  # flips bits inside an IDAT chunk
    broken = tmp_path / "crc.png"
    broken.write_bytes(bytes(data))
    assert "PNG" in _reason(lambda: probe(broken))


@pytest.mark.parametrize("tiled", [False, True])
def test_truncated_tiff(tmp_path: Path, tiled: bool) -> None:
    data = np.random.default_rng(3).integers(0, 65535, (256, 256), dtype=np.uint16)
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, data, tile=(64, 64) if tiled else None)
    assert probe(whole).shape == (256, 256)
    cut = _cut_in_half(whole, tmp_path / "cut.tif")
    assert _reason(lambda: probe(cut)).startswith("truncated TIFF")
    assert _reason(lambda: make_thumbnail(cut, size=32)).startswith("truncated TIFF")


def test_truncated_tiff_with_ifd_at_end(tmp_path: Path) -> None:
    # Pillow writes the IFD after the pixels: cutting the file loses the header itself
    whole = tmp_path / "pil.tif"
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(whole)
    cut = _cut_in_half(whole, tmp_path / "cut.tif")
    assert "TIFF" in _reason(lambda: probe(cut))


def test_truncated_bmp(tmp_path: Path) -> None:
    whole = tmp_path / "whole.bmp"
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(whole)
    cut = _cut_in_half(whole, tmp_path / "cut.bmp")
    assert _reason(lambda: probe(cut)).startswith("truncated BMP")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti(tmp_path: Path, write_nifti: Callable[..., Path], suffix: str) -> None:
    data = np.random.default_rng(4).normal(size=(40, 40, 30)).astype(np.float32)
    whole = write_nifti(tmp_path / f"whole{suffix}", data, (1.0, 1.0, 1.0))
    assert probe(whole).shape == (30, 40, 40)
    cut = _cut_in_half(whole, tmp_path / f"cut{suffix}")
    assert _reason(lambda: probe(cut)).startswith("truncated NIfTI")
    with pytest.raises(MediaError):
        read_volume(cut)


def test_truncated_fits(tmp_path: Path) -> None:
    whole = tmp_path / "whole.fits"
    fits.PrimaryHDU(np.ones((200, 200), dtype=np.float32)).writeto(whole)
    cut = _cut_in_half(whole, tmp_path / "cut.fits")
    assert "truncated FITS" in _reason(lambda: probe(cut))
    assert "truncated FITS" in _reason(lambda: read_image(cut))


def test_fits_table_only_is_not_an_image(tmp_path: Path) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.ones(5))])
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    assert "no 2-D or 3-D image" in _reason(lambda: probe(path))


def test_truncated_dicom(tmp_path: Path, ct_small: Path) -> None:
    data = ct_small.read_bytes()
    near_end = tmp_path / "near_end.dcm"
    near_end.write_bytes(data[: int(len(data) * 0.9)])  # cut inside the pixel data
    assert _reason(lambda: probe(near_end)).startswith("truncated DICOM")
    half = _cut_in_half(ct_small, tmp_path / "half.dcm")
    assert "DICOM" in _reason(lambda: probe(half))
    assert "DICOM" in _reason(lambda: read_image(half))


def test_png_header_claiming_50000_squared(tmp_path: Path, crafted_png: CraftPng) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(crafted_png(50_000, 50_000))
    assert bomb.stat().st_size < 100
    reason = _reason(lambda: probe(bomb))
    assert reason == "decompression bomb: 50000x50000 = 2500 Mpx exceeds the limit of 200 Mpx"
    assert _reason(lambda: read_image(bomb)).startswith("decompression bomb")
    assert _reason(lambda: make_thumbnail(bomb)).startswith("decompression bomb")


def test_real_one_bit_png_bomb(tmp_path: Path, crafted_png: CraftPng) -> None:
    width, height = 20_000, 15_000  # 300 Mpx of zeros in a ~40 kB file
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + width // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    bomb = tmp_path / "onebit.png"
    bomb.write_bytes(crafted_png(width, height, bit_depth=1, idat=idat))
    assert bomb.stat().st_size < 200_000
    assert _reason(lambda: probe(bomb)).startswith("decompression bomb: 20000x15000 = 300 Mpx")
    # a caller who accepts bigger images can raise the limit: the file itself is valid
    assert probe(bomb, max_pixels=400_000_000).shape == (15_000, 20_000)


def test_max_pixels_is_ours_not_pillows(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((100, 120), dtype=np.uint8)).save(path)
    assert _reason(lambda: probe(path, max_pixels=11_999)).startswith("decompression bomb: 120x100")
    assert probe(path, max_pixels=12_000).shape == (100, 120)
    with pytest.raises(MediaError, match="decompression bomb"):
        read_image(path, max_pixels=5000)
    with pytest.raises(ValueError, match="max_pixels"):
        probe(path, max_pixels=0)


def test_tiff_bomb_is_detected_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.zeros((10, 10), dtype=np.uint8))
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.shape == (10, 10)
    assert "decompression bomb" in _reason(lambda: probe(path, max_pixels=99))


def test_bad_arguments_raise_value_error(tmp_path: Path, skimage_data: Path) -> None:
    camera = skimage_data / "camera.png"
    with pytest.raises(ValueError, match="max_side"):
        read_image(camera, max_side=0)
    with pytest.raises(ValueError, match="size"):
        make_thumbnail(camera, size=0)
    with pytest.raises(ValueError, match="page"):
        read_image(camera, page=1)
