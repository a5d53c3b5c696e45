"""NIfTI-1/2 volumes (``.nii`` and ``.nii.gz``) through nibabel.

nibabel stores voxels as (x, y, z[, t]); we expose (z, y, x[, t]) without reorienting,
so the array index order matches the file and masks can be written back 1:1.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from typing import Any

import nibabel as nib
import numpy as np

from loupe.media._core import MediaError, MediaInfo, PathLike, check_pixels, translate_errors
from loupe.media.resample import downscale

_MM_PER_UNIT = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}


def _load(path: PathLike) -> Any:
    with translate_errors(path, "NIfTI header"):
        image = nib.load(path)
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise MediaError("not a single-file NIfTI image", path=path)
        return image


def _zyx_shape(image: Any) -> tuple[int, ...]:
    """(z, y, x[, rest]) with 2-D files given z = 1 and dims beyond the 4th folded in."""
    shape = tuple(int(n) for n in image.shape)
    x, y = shape[0], shape[1] if len(shape) > 1 else 1
    z = shape[2] if len(shape) > 2 else 1
    rest = math.prod(shape[3:]) if len(shape) > 3 else 0
    return (z, y, x, rest) if rest > 1 else (z, y, x)


def _spacing_mm(image: Any) -> tuple[float, float, float]:
    header = image.header
    zooms = [float(v) for v in header.get_zooms()[:3]] + [1.0] * 3
    unit = header.get_xyzt_units()[0]
    scale = _MM_PER_UNIT.get(unit, 1.0)
    x, y, z = (abs(v) * scale if v else 1.0 for v in zooms[:3])
    return z, y, x


def _check_length(path: PathLike, image: Any, size: int) -> None:
    """The file must hold offset + voxels bytes; for gzip, compare the ISIZE trailer first."""
    dtype = image.header.get_data_dtype()
    needed = int(image.dataobj.offset) + math.prod(image.shape) * dtype.itemsize
    if str(path).lower().endswith(".gz"):
        with open(path, "rb") as handle:
            handle.seek(-4, 2)
            (isize,) = struct.unpack("<I", handle.read(4))
        if isize == needed % (1 << 32):
            return
        # The trailer disagrees: a truncated stream (or an unusual multi-member file).
        # Decide for sure by inflating the stream without keeping it.
        total = _gunzipped_length(path)
        if total is None or total < needed:
            raise MediaError("truncated NIfTI (compressed stream ends early)", path=path)
        return
    if size < needed:
        raise MediaError(f"truncated NIfTI ({size} bytes, header declares {needed})", path=path)


def _gunzipped_length(path: PathLike) -> int | None:
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while block := stream.read(1 << 22):
                total += len(block)
    except (OSError, EOFError, zlib.error):
        return None
    return total


def probe(path: PathLike, *, size: int, max_pixels: int) -> MediaInfo:
    image = _load(path)
    dtype = image.header.get_data_dtype()
    if dtype.fields is not None:
        raise MediaError(f"unsupported NIfTI data type {dtype}", path=path)
    shape = _zyx_shape(image)
    check_pixels(shape[1], shape[2], max_pixels, path=path)
    _check_length(path, image, size)
    slope, inter = image.dataobj.slope, image.dataobj.inter
    extra: dict[str, Any] = {
        "orientation": "".join(nib.aff2axcodes(image.affine)),
        "nifti_version": 2 if isinstance(image, nib.Nifti2Image) else 1,
        "scaled": bool(slope != 1 or inter != 0),
    }
    return MediaInfo(
        format="nifti",
        kind="volume",
        shape=shape,
        dtype=dtype.name,
        pages=1,
        spacing=_spacing_mm(image),
        axes="ZYXT" if len(shape) == 4 else "ZYX",
        extra=extra,
    )


def read_middle_slice(
    path: PathLike, *, size: int, max_side: int | None, max_pixels: int
) -> np.ndarray:
    """The middle axial (z) slice as (y, x); the first time point of 4-D series."""
    image = _load(path)
    z, y, x = _zyx_shape(image)[:3]
    check_pixels(y, x, max_pixels, path=path)
    _check_length(path, image, size)
    ndim = len(image.shape)
    index: tuple[Any, ...] = (slice(None), slice(None))
    if ndim >= 3:
        index += (z // 2,) + (0,) * (ndim - 3)
    with translate_errors(path, "NIfTI data"):
        plane = np.asarray(image.dataobj[index])
    plane = np.ascontiguousarray(plane.reshape(x, y).T)
    plane = plane.astype(plane.dtype.newbyteorder("="), copy=False)
    return plane if max_side is None else downscale(plane, max_side=max_side)


def read_volume(path: PathLike, *, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(z, y, x[, t]) array with scl_slope/inter applied as nibabel does, plus spacing in mm."""
    image = _load(path)
    _check_length(path, image, size)
    with translate_errors(path, "NIfTI data"):
        data = np.asanyarray(image.dataobj)
    shape = _zyx_shape(image)
    x, y, z = shape[2], shape[1], shape[0]
    data = data.reshape((x, y, z, -1)) if len(shape) == 4 else data.reshape(x, y, z)
    axes = (2, 1, 0, 3) if data.ndim == 4 else (2, 1, 0)
    volume = np.ascontiguousarray(data.transpose(axes))
    return volume.astype(volume.dtype.newbyteorder("="), copy=False), _spacing_mm(image)
