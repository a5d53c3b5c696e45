"""Each supported format probes and decodes with the right shape, dtype and metadata."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from astropy.io import fits
from PIL import Image

from loupe.media import (
    MEDIA_EXTENSIONS,
    MediaError,
    MediaInfo,
    detect_format,
    make_thumbnail,
    probe,
    read_image,
    read_volume,
)

WriteNifti = Callable[..., Path]
DicomFile = Callable[[str], Path]


def _thumbnail_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        return image.size


def _assert_read_matches(path: Path, info: MediaInfo) -> np.ndarray:
    array = read_image(path)
    assert array.shape == info.shape
    assert array.dtype == np.dtype(info.dtype)
    return array


@pytest.mark.parametrize(
    ("name", "shape", "axes"),
    [
        ("camera.png", (512, 512), "YX"),
        ("astronaut.png", (512, 512, 3), "YXC"),
        ("logo.png", (500, 500, 4), "YXC"),
        ("hubble_deep_field.jpg", (872, 1000, 3), "YXC"),
    ],
)
def test_skimage_images_probe_and_read(
    skimage_data: Path, name: str, shape: tuple[int, ...], axes: str
) -> None:
    path = skimage_data / name
    info = probe(path)
    assert info.format == ("jpeg" if name.endswith(".jpg") else "png")
    assert (info.kind, info.shape, info.dtype, info.axes, info.pages) == (
        "image",
        shape,
        "uint8",
        axes,
        1,
    )
    array = _assert_read_matches(path, info)
    if name == "camera.png":
        # the same pixels skimage itself reads
        assert np.array_equal(array, np.asarray(Image.open(path)))


def test_bmp_and_16bit_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 41, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    info = probe(tmp_path / "a.bmp")
    assert (info.format, info.shape, info.dtype) == ("bmp", (30, 41, 3), "uint8")
    assert np.array_equal(read_image(tmp_path / "a.bmp"), rgb)

    gray16 = rng.integers(0, 65536, (20, 25), dtype=np.uint16)
    Image.fromarray(gray16).save(tmp_path / "b.png")
    info = probe(tmp_path / "b.png")
    assert (info.shape, info.dtype) == ((20, 25), "uint16")
    assert np.array_equal(read_image(tmp_path / "b.png"), gray16)


def test_palette_png_becomes_rgb(tmp_path: Path) -> None:
    image = Image.new("P", (8, 6))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((2, 3), 1)
    image.save(tmp_path / "p.png")
    info = probe(tmp_path / "p.png")
    assert (info.shape, info.dtype) == ((6, 8, 3), "uint8")
    array = read_image(tmp_path / "p.png")
    assert array[3, 2].tolist() == [0, 0, 255]
    assert array[0, 0].tolist() == [255, 0, 0]


def test_16bit_tiff(tmp_path: Path) -> None:
    data = (np.arange(300 * 200, dtype=np.uint32) * 7 % 65536).astype(np.uint16).reshape(300, 200)
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, data, compression="zlib", resolution=(100.0, 100.0), resolutionunit=3)
    info = probe(path)
    assert (info.format, info.shape, info.dtype, info.pages) == ("tiff", (300, 200), "uint16", 1)
    assert info.extra["compression"] == "adobe_deflate"
    assert info.spacing == pytest.approx((0.1, 0.1))  # 100 px/cm
    assert np.array_equal(_assert_read_matches(path, info), data)
    assert max(_thumbnail_size(make_thumbnail(path, size=64))) == 64


def test_multipage_tiff_pages_are_counted_and_addressable(tmp_path: Path) -> None:
    pages = [np.full((16, 24), value, dtype=np.uint8) for value in (10, 20, 30)]
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as writer:
        for page in pages:
            writer.write(page, photometric="minisblack")
    info = probe(path)
    assert (info.pages, info.shape, info.dtype) == (3, (16, 24), "uint8")
    assert int(read_image(path, page=2).max()) == 30
    with pytest.raises(ValueError, match="page"):
        read_image(path, page=3)
    volume, spacing = read_volume(path)
    assert volume.shape == (3, 16, 24)
    assert spacing == (1.0, 1.0, 1.0)


def test_skimage_multipage_tiff(skimage_data: Path) -> None:
    info = probe(skimage_data / "multipage.tif")
    assert (info.pages, info.shape, info.spacing) == (2, (15, 10), None)  # 72 dpi is no size
    assert not np.array_equal(
        read_image(skimage_data / "multipage.tif", page=0),
        read_image(skimage_data / "multipage.tif", page=1),
    )


def test_fits_image_cube_and_scaling(tmp_path: Path) -> None:
    image = (np.arange(60 * 80) % 50000).astype(np.uint16).reshape(60, 80)
    fits.PrimaryHDU(image).writeto(tmp_path / "u16.fits")
    info = probe(tmp_path / "u16.fits")
    assert (info.format, info.kind, info.shape, info.dtype) == ("fits", "image", (60, 80), "uint16")
    assert np.array_equal(_assert_read_matches(tmp_path / "u16.fits", info), image)

    cube = np.random.default_rng(1).random((5, 40, 30)).astype(np.float32)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(cube), fits.ImageHDU(image.astype(np.int16))]
    fits.HDUList(hdus).writeto(tmp_path / "cube.fit")
    info = probe(tmp_path / "cube.fit")
    assert (info.kind, info.shape, info.dtype, info.axes) == (
        "volume",
        (5, 40, 30),
        "float32",
        "ZYX",
    )
    assert info.pages == 2  # the empty primary HDU does not count
    assert np.array_equal(read_image(tmp_path / "cube.fit"), cube[2])
    assert read_image(tmp_path / "cube.fit", page=1).dtype == np.int16
    volume, _ = read_volume(tmp_path / "cube.fit")
    assert np.array_equal(volume, cube)

    scaled = fits.PrimaryHDU((np.arange(12 * 10) % 100).astype(np.int16).reshape(12, 10))
    scaled.scale("int16", bscale=0.5, bzero=10)
    scaled.writeto(tmp_path / "scaled.fts")
    with fits.open(tmp_path / "scaled.fts") as hdul:
        expected = np.asarray(hdul[0].data)
    info = probe(tmp_path / "scaled.fts")
    assert info.dtype == expected.dtype.name
    assert np.allclose(read_image(tmp_path / "scaled.fts"), expected)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_probe_spacing_and_slices(
    tmp_path: Path, write_nifti: WriteNifti, suffix: str
) -> None:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (x, y, z)
    path = write_nifti(tmp_path / f"vol{suffix}", data, (0.8, 0.9, 2.5))
    assert detect_format(path) == "nifti"
    info = probe(path)
    assert (info.format, info.kind, info.axes) == ("nifti", "volume", "ZYX")
    assert info.shape == (6, 5, 4)
    assert info.dtype == "int16"
    assert info.spacing == pytest.approx((2.5, 0.9, 0.8))
    assert info.extra["orientation"] == "RAS"
    middle = read_image(path)
    assert np.array_equal(middle, data[:, :, 3].T)
    volume, spacing = read_volume(path)
    assert volume.shape == (6, 5, 4)
    assert np.array_equal(volume, data.transpose(2, 1, 0))
    assert spacing == pytest.approx((2.5, 0.9, 0.8))


def test_nifti_units_and_time_axis(tmp_path: Path, write_nifti: WriteNifti) -> None:
    data = np.zeros((3, 4, 5, 2), dtype=np.float32)
    data[..., 1] = 1.0
    path = write_nifti(tmp_path / "t.nii", data, (0.5, 0.5, 1.0, 2.0), units="micron")
    info = probe(path)
    assert info.shape == (5, 4, 3, 2)
    assert info.axes == "ZYXT"
    assert info.spacing == pytest.approx((0.001, 0.0005, 0.0005))
    assert read_image(path).shape == (4, 3)
    volume, _ = read_volume(path)
    assert volume.shape == (5, 4, 3, 2)
    assert float(volume[..., 1].min()) == 1.0


def test_dicom_single_files(ct_small: Path, mr_small: Path) -> None:
    info = probe(ct_small)
    assert (info.format, info.kind, info.shape, info.dtype) == (
        "dicom",
        "image",
        (128, 128),
        "int16",
    )
    assert info.spacing == pytest.approx((0.661468, 0.661468))
    assert info.extra["modality"] == "CT"
    assert info.extra["rescale_intercept"] == -1024.0
    stored = _assert_read_matches(ct_small, info)
    volume, spacing = read_volume(ct_small)
    assert volume.shape == (1, 128, 128)
    assert volume.dtype == np.float32
    assert np.allclose(volume[0], stored.astype(np.float32) - 1024.0)  # Hounsfield units
    assert spacing == pytest.approx((5.0, 0.661468, 0.661468))

    info = probe(mr_small)
    assert (info.shape, info.extra["modality"]) == ((64, 64), "MR")
    assert _thumbnail_size(make_thumbnail(mr_small, size=256)) == (64, 64)  # never upscaled


def test_dicom_without_suffix_and_without_preamble(tmp_path: Path, ct_small: Path) -> None:
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(ct_small.read_bytes())
    assert detect_format(no_suffix) == "dicom"
    assert probe(no_suffix).shape == (128, 128)

    ds = pydicom.dcmread(ct_small)
    del ds.file_meta
    ds.preamble = None
    raw = tmp_path / "raw.dcm"
    pydicom.dcmwrite(raw, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[128:132] != b"DICM"
    assert detect_format(raw) == "dicom"
    assert np.array_equal(read_image(raw), read_image(ct_small))
    renamed = tmp_path / "raw.bin"
    renamed.write_bytes(raw.read_bytes())
    assert detect_format(renamed) is None  # no magic and no .dcm suffix


def test_detect_format_uses_content_not_suffix(tmp_path: Path, skimage_data: Path) -> None:
    png_named_jpg = tmp_path / "really_png.jpg"
    png_named_jpg.write_bytes((skimage_data / "camera.png").read_bytes())
    assert detect_format(png_named_jpg) == "png"
    assert probe(png_named_jpg).format == "png"
    assert detect_format(tmp_path / "missing.png") is None


def test_media_extensions() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".nii.gz", ".dcm"} <= MEDIA_EXTENSIONS
    assert {".fits", ".fit", ".fts", ".nii"} <= MEDIA_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in MEDIA_EXTENSIONS)


def test_media_info_is_json_serialisable(
    tmp_path: Path, skimage_data: Path, ct_small: Path, write_nifti: WriteNifti
) -> None:
    tiff_path = tmp_path / "t.tif"
    tifffile.imwrite(tiff_path, np.zeros((8, 8), np.uint16), tile=(16, 16))
    fits_path = tmp_path / "f.fits"
    fits.PrimaryHDU(np.zeros((4, 5), np.float32)).writeto(fits_path)
    nifti_path = write_nifti(tmp_path / "n.nii", np.zeros((3, 3, 3), np.uint8), (1.0, 1.0, 1.0))
    paths = [skimage_data / "camera.png", skimage_data / "rocket.jpg", tiff_path]
    for path in [*paths, fits_path, nifti_path, ct_small]:
        encoded = json.loads(json.dumps(dataclasses.asdict(probe(path))))
        assert encoded["format"] == detect_format(path)


@pytest.mark.parametrize(
    ("name", "kind", "shape", "dtype"),
    [
        ("SC_rgb_rle_2frame.dcm", "volume", (2, 100, 100, 3), "uint8"),  # multi-frame colour
        ("examples_palette.dcm", "image", (350, 800, 3), "uint16"),  # palette applied
        ("MR_small_bigendian.dcm", "image", (64, 64), "int16"),
        ("MR_small_RLE.dcm", "image", (64, 64), "int16"),
        ("image_dfl.dcm", "image", (512, 512), "uint8"),  # deflated transfer syntax
    ],
)
def test_shipped_dicom_variants(
    dicom_file: DicomFile, name: str, kind: str, shape: tuple[int, ...], dtype: str
) -> None:
    path = dicom_file(name)
    info = probe(path)
    assert (info.kind, info.shape, info.dtype) == (kind, shape, dtype)
    middle = read_image(path)
    assert middle.shape == (shape[1:] if kind == "volume" else shape)
    assert middle.dtype == np.dtype(dtype)
    assert _thumbnail_size(make_thumbnail(path, size=40))[0] <= 40


def test_dicom_without_a_decoder_says_so(dicom_file: DicomFile) -> None:
    # 12-bit lossy JPEG: none of the installed decoders (Pillow, pylibjpeg, pyjpegls,
    # which highdicom brings) reads it, so the error must name the compression
    path = dicom_file("JPEG-lossy.dcm")
    assert probe(path).shape == (1024, 256)  # headers are fine
    with pytest.raises(MediaError) as caught:
        read_image(path)
    assert "JPEG Extended" in caught.value.reason
    assert "decode" in caught.value.reason or "unsupported" in caught.value.reason


def test_dicom_without_pixels_is_not_an_image(dicom_file: DicomFile) -> None:
    with pytest.raises(MediaError, match="no image"):
        probe(dicom_file("rtplan.dcm"))


def test_one_bit_png_and_tiff_read_alike(tmp_path: Path) -> None:
    mask = np.arange(40 * 60).reshape(40, 60) % 7 == 0
    image = Image.fromarray(mask).convert("1")
    image.save(tmp_path / "mask.png")
    image.save(tmp_path / "mask.tif", compression="group4")
    for name in ("mask.png", "mask.tif"):
        info = probe(tmp_path / name)
        assert (info.shape, info.dtype) == ((40, 60), "uint8")
        assert np.array_equal(read_image(tmp_path / name), mask.astype(np.uint8) * 255)
