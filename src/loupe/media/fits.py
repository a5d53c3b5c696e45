"""FITS images and cubes: astropy parses headers, numpy memory-maps the pixel data."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from astropy.io import fits

from loupe.media._core import (
    MediaError,
    MediaInfo,
    ParameterError,
    PathLike,
    check_pixels,
    translate_errors,
)
from loupe.media.resample import downscale, stride_for

_RAW_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}


@dataclass(frozen=True)
class _ImagePlane:
    """One image HDU with 2-D or 3-D data, described from its header."""

    hdu: Any
    index: int
    shape: tuple[int, ...]  # numpy order: (z, y, x) or (y, x)
    bitpix: int
    bscale: float
    bzero: float
    data_offset: int
    compressed: bool

    @property
    def dtype(self) -> np.dtype:
        bits = abs(self.bitpix)
        if self.bscale == 1 and self.bitpix > 8 and self.bzero == 2 ** (bits - 1):
            return np.dtype(f"uint{bits}")
        if self.bscale == 1 and self.bitpix == 8 and self.bzero == -128:
            return np.dtype("int8")
        if self.bscale != 1 or self.bzero != 0:
            return np.dtype("float32" if self.bitpix in (8, 16, -32) else "float64")
        return np.dtype(_RAW_DTYPES[self.bitpix]).newbyteorder("=")


@contextmanager
def _open(path: PathLike) -> Iterator[list[_ImagePlane]]:
    with translate_errors(path, "FITS"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fits.open(path, memmap=False, lazy_load_hdus=True, uint=True) as hdul:
            planes = [plane for i, hdu in enumerate(hdul) if (plane := _plane(hdu, i))]
            for warning in caught:
                if "truncated" in str(warning.message).lower():
                    raise MediaError("truncated FITS", path=path)
            if not planes:
                raise MediaError("FITS file has no 2-D or 3-D image data", path=path)
            yield planes


def _plane(hdu: Any, index: int) -> _ImagePlane | None:
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        return None
    header = hdu.header
    naxis = int(header.get("NAXIS", 0))
    shape = tuple(int(header.get(f"NAXIS{k}", 0)) for k in range(naxis, 0, -1))
    while len(shape) > 2 and shape[0] == 1:  # degenerate leading axes (e.g. Stokes)
        shape = shape[1:]
    if len(shape) not in (2, 3) or min(shape) < 1:
        return None
    bitpix = int(header["BITPIX"])
    if bitpix not in _RAW_DTYPES:
        raise MediaError(f"corrupt FITS: invalid BITPIX {bitpix}")
    return _ImagePlane(
        hdu=hdu,
        index=index,
        shape=shape,
        bitpix=bitpix,
        bscale=float(header.get("BSCALE", 1.0)),
        bzero=float(header.get("BZERO", 0.0)),
        data_offset=int(hdu.fileinfo()["datLoc"]),
        compressed=isinstance(hdu, fits.CompImageHDU),
    )


def _check_length(plane: _ImagePlane, size: int, *, path: PathLike) -> None:
    if plane.compressed:
        needed = plane.data_offset + max(int(plane.hdu.fileinfo()["datSpan"]) - 2880, 1)
    else:
        needed = plane.data_offset + abs(plane.bitpix) // 8 * math.prod(plane.shape)
    if size < needed:
        raise MediaError(f"truncated FITS ({size} bytes, header declares {needed})", path=path)


def probe(path: PathLike, *, size: int, max_pixels: int) -> MediaInfo:
    with _open(path) as planes:
        first = planes[0]
        rows, cols = first.shape[-2:]
        check_pixels(rows, cols, max_pixels, path=path)
        _check_length(first, size, path=path)
        header = first.hdu.header
        extra: dict[str, Any] = {"hdu": first.index, "bitpix": first.bitpix}
        for key in ("OBJECT", "TELESCOP", "INSTRUME", "BUNIT"):
            if key in header and isinstance(header[key], str):
                extra[key.lower()] = header[key].strip()[:80]
        if first.compressed:
            extra["compressed"] = True
        volume = len(first.shape) == 3
        return MediaInfo(
            format="fits",
            kind="volume" if volume else "image",
            shape=first.shape,
            dtype=first.dtype.name,
            pages=len(planes),
            spacing=None,
            axes="ZYX" if volume else "YX",
            extra=extra,
        )


def read(
    path: PathLike, *, size: int, page: int, max_side: int | None, max_pixels: int
) -> np.ndarray:
    """The ``page``-th image HDU (middle slice for cubes), scaled by BSCALE/BZERO."""
    with _open(path) as planes:
        if not 0 <= page < len(planes):
            raise ParameterError(f"page must be in 0..{len(planes) - 1} for this file, got {page}")
        plane = planes[page]
        rows, cols = plane.shape[-2:]
        step = 1 if max_side is None else stride_for(rows, cols, max_side)
        check_pixels(math.ceil(rows / step), math.ceil(cols / step), max_pixels, path=path)
        _check_length(plane, size, path=path)
        middle = plane.shape[0] // 2 if len(plane.shape) == 3 else None
        with translate_errors(path, "FITS data"):
            if plane.compressed:
                section = plane.hdu.section
                raw = np.asarray(section[middle] if middle is not None else section[:, :])
                image = np.ascontiguousarray(raw[::step, ::step]).astype(
                    raw.dtype.newbyteorder("=")
                )
            else:
                image = _scaled(_memmap_plane(path, plane, middle)[::step, ::step], plane)
    return image if max_side is None else downscale(image, max_side=max_side)


def read_cube(path: PathLike, *, size: int) -> np.ndarray:
    """The first image HDU as a (z, y, x) array (2-D data gives z = 1)."""
    with _open(path) as planes:
        plane = planes[0]
        _check_length(plane, size, path=path)
        with translate_errors(path, "FITS data"):
            if plane.compressed:
                data = np.asarray(plane.hdu.data)
                data = data.astype(data.dtype.newbyteorder("="))
            else:
                data = _scaled(_memmap_all(path, plane), plane)
    return data if data.ndim == 3 else data[None]


def _memmap_all(path: PathLike, plane: _ImagePlane) -> np.ndarray:
    return np.memmap(
        path, dtype=_RAW_DTYPES[plane.bitpix], mode="r", offset=plane.data_offset, shape=plane.shape
    )


def _memmap_plane(path: PathLike, plane: _ImagePlane, middle: int | None) -> np.ndarray:
    mapped = _memmap_all(path, plane)
    return mapped[middle] if middle is not None else mapped


def _scaled(raw: np.ndarray, plane: _ImagePlane) -> np.ndarray:
    """Apply BSCALE/BZERO like astropy: unsigned-offset integers stay integers."""
    target = plane.dtype
    if target.kind == "u" and plane.bitpix > 8:
        flipped = raw.view(raw.dtype.str.replace("i", "u")) ^ np.array(
            1 << (abs(plane.bitpix) - 1), dtype=raw.dtype.str.replace("i", "u")
        )
        return np.ascontiguousarray(flipped.astype(target))
    if target == np.int8:
        return np.ascontiguousarray((raw ^ np.uint8(0x80)).view(np.int8))
    if target.kind == "f" and (plane.bscale != 1 or plane.bzero != 0):
        return np.ascontiguousarray(raw.astype(target) * target.type(plane.bscale)) + target.type(
            plane.bzero
        )
    return np.ascontiguousarray(raw.astype(target))
