"""read_image(max_side=...) across formats and TIFF layouts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from loupe.media import make_thumbnail, probe, read_image, read_volume

RGB = np.random.default_rng(7).integers(0, 256, (1000, 800, 3), dtype=np.uint8)
PLANAR = np.ascontiguousarray(np.moveaxis(RGB, -1, 0))


@pytest.mark.parametrize(
    ("name", "data", "options"),
    [
        ("planar_strips_lzw", PLANAR, {"planarconfig": "separate", "compression": "lzw"}),
        ("planar_tiles", PLANAR, {"planarconfig": "separate", "tile": (128, 128)}),
        ("planar_raw", PLANAR, {"planarconfig": "separate"}),
        ("contig_tiles_zstd", RGB, {"tile": (256, 256), "compression": "zstd"}),
        ("contig_raw", RGB, {}),
    ],
)
def test_tiff_layouts_read_full_and_strided(
    tmp_path: Path, name: str, data: np.ndarray, options: dict[str, Any]
) -> None:
    path = tmp_path / f"{name}.tif"
    tifffile.imwrite(path, data, photometric="rgb", rowsperstrip=64, **options)
    info = probe(path)
    assert (info.shape, info.dtype, info.axes) == ((1000, 800, 3), "uint8", "YXC")
    assert np.array_equal(read_image(path), RGB)
    # 1000 // 100 = 10: a strided read of exactly the requested size, no resampling
    assert np.array_equal(read_image(path, max_side=100), RGB[::10, ::10])


def test_jpeg_compressed_tiles(tmp_path: Path) -> None:
    smooth = np.zeros((600, 700, 3), dtype=np.uint8)
    smooth[..., 0] = np.linspace(0, 255, 700, dtype=np.uint8)[None, :]
    smooth[..., 1] = 128
    path = tmp_path / "jpeg_tiles.tif"
    tifffile.imwrite(path, smooth, photometric="rgb", tile=(256, 256), compression="jpeg")
    assert probe(path).extra["compression"] == "jpeg"
    full = read_image(path)
    assert np.abs(full.astype(int) - smooth.astype(int)).mean() < 3
    assert read_image(path, max_side=70).shape == (60, 70, 3)


def test_palette_tiff_is_expanded_to_rgb(tmp_path: Path) -> None:
    indices = (np.arange(100 * 120) % 4).astype(np.uint8).reshape(100, 120)
    colormap = np.zeros((3, 256), dtype=np.uint16)
    colormap[0, 1] = colormap[1, 2] = colormap[2, 3] = 65535
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, indices, photometric="palette", colormap=colormap)
    info = probe(path)
    assert (info.shape, info.dtype) == ((100, 120, 3), "uint8")
    assert read_image(path)[0, :4].tolist() == [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def test_reduced_pages_pyramid_serves_the_small_level(tmp_path: Path) -> None:
    path = tmp_path / "svs_like.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(RGB, photometric="rgb", tile=(256, 256))
        writer.write(np.full((500, 400, 3), 33, np.uint8), photometric="rgb", subfiletype=1)
        writer.write(np.full((250, 200, 3), 77, np.uint8), photometric="rgb", subfiletype=1)
    info = probe(path)
    assert info.extra["pyramid_levels"] == 3
    small = read_image(path, max_side=200)
    assert small.shape == (200, 160, 3)
    assert np.all(small == 77)  # taken from the 250 x 200 level, not the full image
    assert np.all(read_image(path, max_side=400) == 33)


def test_imagej_stack_spacing(tmp_path: Path) -> None:
    stack = np.random.default_rng(2).integers(0, 4000, (7, 50, 60), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    metadata = {"spacing": 2.0, "unit": "um", "axes": "ZYX"}
    tifffile.imwrite(path, stack, imagej=True, resolution=(2.0, 2.0), metadata=metadata)
    info = probe(path)
    assert info.pages == 7
    assert info.spacing == pytest.approx((0.0005, 0.0005))  # 2 px per um
    volume, spacing = read_volume(path)
    assert np.array_equal(volume, stack)
    assert spacing == pytest.approx((0.002, 0.0005, 0.0005))


def test_fits_compressed_and_strided(tmp_path: Path) -> None:
    data = np.random.default_rng(3).integers(0, 1000, (300, 400)).astype(np.int32)
    path = tmp_path / "compressed.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data)]).writeto(path)
    info = probe(path)
    assert (info.shape, info.dtype, info.extra["compressed"]) == ((300, 400), "int32", True)
    assert np.array_equal(read_image(path), data)
    assert read_image(path, max_side=100).shape == (75, 100)

    big = np.random.default_rng(4).random((3000, 2000)).astype(np.float32)
    fits.PrimaryHDU(big).writeto(tmp_path / "big.fits")
    small = read_image(tmp_path / "big.fits", max_side=256)
    assert (small.shape, small.dtype) == ((256, 171), np.float32)


def test_jpeg_draft_and_volume_slices(
    tmp_path: Path,
    skimage_data: Path,
    ct_small: Path,
    write_nifti: Callable[..., Path],
) -> None:
    jpeg = read_image(skimage_data / "hubble_deep_field.jpg", max_side=100)
    assert (jpeg.shape, jpeg.dtype) == ((87, 100, 3), np.uint8)
    full = read_image(skimage_data / "hubble_deep_field.jpg")
    assert abs(float(jpeg.mean()) - float(full.mean())) < 3  # same picture, smaller

    ct = read_image(ct_small, max_side=32)
    assert (ct.shape, ct.dtype) == ((32, 32), np.int16)

    volume = np.zeros((300, 200, 9), dtype=np.uint8)  # (x, y, z)
    volume[..., 4] = 200
    path = write_nifti(tmp_path / "v.nii.gz", volume, (1.0, 1.0, 1.0))
    middle = read_image(path, max_side=100)
    assert middle.shape == (67, 100)
    assert np.all(middle == 200)  # z = 9 // 2 = 4
    with Image.open(io.BytesIO(make_thumbnail(path, size=50))) as image:
        assert image.size == (50, 33)
