"""Public entry points: probe, read and thumbnail any supported file or DICOM series."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from loupe.media import dicom, dicom_series, fits, nifti, raster, tiff
from loupe.media._core import (
    DEFAULT_MAX_PIXELS,
    MediaError,
    MediaInfo,
    PathLike,
    check_max_pixels,
    check_max_side,
    file_size,
)
from loupe.media.detect import detect_format, iter_media_files
from loupe.media.display import encode_jpeg, fit_longest_side, to_display_uint8

THUMBNAIL_QUALITY = 85
_UNRECOGNISED = "not an image (unrecognised format)"


def _format_of(path: PathLike) -> tuple[str, int]:
    size = file_size(path)
    fmt = detect_format(path)
    if fmt is None:
        raise MediaError(_UNRECOGNISED, path=path)
    return fmt, size


def probe(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> MediaInfo:
    """Describe ``path`` from its headers without decoding the pixel data.

    Also checks, cheaply, that the pixel data the header promises is present (JPEG end
    marker, PNG chunk CRCs, TIFF strip/tile extents, NIfTI/FITS/DICOM data length).

    Raises MediaError for empty, unrecognised, corrupt or truncated files and for
    decompression bombs: a plane (rows * cols; per slice for volumes) over ``max_pixels``.
    """
    check_max_pixels(max_pixels)
    fmt, size = _format_of(path)
    if fmt in ("jpeg", "png", "bmp"):
        return raster.probe(path, fmt, size=size, max_pixels=max_pixels)
    if fmt == "tiff":
        return tiff.probe(path, size=size, max_pixels=max_pixels)
    if fmt == "fits":
        return fits.probe(path, size=size, max_pixels=max_pixels)
    if fmt == "nifti":
        return nifti.probe(path, size=size, max_pixels=max_pixels)
    return dicom.probe(path, max_pixels=max_pixels)


def read_image(
    path: PathLike,
    *,
    page: int = 0,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode one 2-D image as ``(rows, cols)`` or ``(rows, cols, C)``.

    Parameters
    ----------
    page:
        TIFF page or FITS image HDU index (0 for other formats).
    max_side:
        If given, the result is downscaled (area average) so that its longest side is
        ``max_side``, decoding as little as possible: JPEG DCT scaling, the smallest
        adequate TIFF pyramid level, strided strip/tile reads, strided FITS memory maps.
    max_pixels:
        Limit on the pixels of any plane actually decoded (MediaError beyond it).

    The dtype is the stored one (uint8, uint16, int16, float32 ...), except that palette
    images become uint8 RGB, 1-bit images uint8 0/255, and FITS BSCALE/BZERO and NIfTI
    scl_slope/inter are applied as astropy/nibabel do. DICOM values are the stored ones
    (RescaleSlope/Intercept are in ``probe(...).extra`` and applied by ``read_volume``).
    For volumes (NIfTI, 3-D FITS, multi-frame DICOM) the middle z slice is returned.
    """
    check_max_side(max_side)
    check_max_pixels(max_pixels)
    if page < 0:
        raise ValueError(f"page must be >= 0, got {page}")
    fmt, size = _format_of(path)
    if fmt in ("jpeg", "png", "bmp", "nifti", "dicom") and page != 0:
        raise ValueError(f"page must be 0 for {fmt} files, got {page}")
    if fmt in ("jpeg", "png", "bmp"):
        return raster.read(path, fmt, max_side=max_side, max_pixels=max_pixels)
    if fmt == "tiff":
        return tiff.read(path, size=size, page=page, max_side=max_side, max_pixels=max_pixels)
    if fmt == "fits":
        return fits.read(path, size=size, page=page, max_side=max_side, max_pixels=max_pixels)
    if fmt == "nifti":
        return nifti.read_middle_slice(path, size=size, max_side=max_side, max_pixels=max_pixels)
    return dicom.read_frame(path, max_side=max_side, max_pixels=max_pixels)


def read_volume(
    path_or_paths: PathLike | Sequence[PathLike],
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load a volume as a ``(z, y, x)`` array (``(z, y, x, t)`` for 4-D NIfTI) and its
    ``(z, y, x)`` voxel spacing in mm.

    Accepts a NIfTI file, a DICOM file (multi-frame, or one slice giving z = 1), a list of
    DICOM files of one series (or a directory holding exactly one series), a 3-D FITS
    file or a multi-page grayscale TIFF. Values are in physical units where the file
    declares a scaling (DICOM RescaleSlope/Intercept -> float32, NIfTI scl_slope, FITS
    BSCALE). Unknown spacing is reported as 1.0. Voxel order is the file's (no reorienting).
    """
    if isinstance(path_or_paths, str | os.PathLike):
        path = Path(path_or_paths)
        if path.is_dir():
            return read_volume(_single_series_in(path))
        fmt, size = _format_of(path)
        if fmt == "nifti":
            return nifti.read_volume(path, size=size)
        if fmt == "dicom":
            return dicom.read_file_volume(path)
        if fmt == "fits":
            return fits.read_cube(path, size=size), (1.0, 1.0, 1.0)
        if fmt == "tiff":
            return tiff.read_stack(path, size=size)
        raise MediaError(f"a {fmt} file is a 2-D image, not a volume", path=path)
    paths = list(path_or_paths)
    if not paths:
        raise ValueError("path_or_paths must not be an empty list")
    if len(paths) == 1:
        return read_volume(paths[0])
    for member in paths:
        fmt, _ = _format_of(member)
        if fmt != "dicom":
            raise MediaError("only DICOM files can be combined into a volume", path=member)
    return dicom_series.read_series(paths)


def _single_series_in(directory: Path) -> list[Path]:
    groups = group_dicom_series(iter_media_files(directory))
    if len(groups) != 1:
        raise MediaError(
            f"directory holds {len(groups)} DICOM series; exactly one is needed", path=directory
        )
    return next(iter(groups.values()))


def make_thumbnail(
    path: PathLike, *, size: int = 256, page: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """JPEG bytes (quality 85) whose longest side is ``size`` (or the image's, if smaller).

    Uses ``read_image(max_side=size)`` so huge images are never fully decoded, then the
    same ``to_display_uint8`` normalisation as everywhere else. Volumes: the middle slice.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    image = read_image(path, page=page, max_side=size, max_pixels=max_pixels)
    return _encode_thumbnail(image, size=size)


def _encode_thumbnail(image: np.ndarray, *, size: int) -> bytes:
    rgb = to_display_uint8(image, channel_axis=-1 if image.ndim == 3 else None)
    return encode_jpeg(fit_longest_side(rgb, size=size), quality=THUMBNAIL_QUALITY)


def group_dicom_series(paths: Iterable[PathLike]) -> dict[str, list[Path]]:
    """Map SeriesInstanceUID -> that series' files (sorted by path).

    Only headers are read. Paths that are not DICOM, cannot be parsed or have no
    SeriesInstanceUID are left out (``probe`` reports what is wrong with them).
    """
    return dicom.group_series(paths)


def probe_dicom_series(
    paths: Iterable[PathLike], *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> MediaInfo:
    """Volume info for the files of one series: shape (z, y, x), spacing (z, y, x) in mm
    from PixelSpacing and the slice positions. ``pages`` is the number of files.
    MediaError if the files mix series or slice sizes, or any file is unreadable."""
    check_max_pixels(max_pixels)
    return dicom_series.probe_series(paths, max_pixels=max_pixels)


def thumbnail_dicom_series(paths: Iterable[PathLike], *, size: int = 256) -> bytes:
    """JPEG thumbnail of the middle slice (in spatial order) of one DICOM series."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return _encode_thumbnail(dicom_series.middle_slice(paths, max_side=size), size=size)
