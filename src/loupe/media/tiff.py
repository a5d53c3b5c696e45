"""TIFF (incl. BigTIFF, tiled, pyramidal, multi-page) through tifffile."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import tifffile

from loupe.media._core import (
    MediaError,
    MediaInfo,
    ParameterError,
    PathLike,
    check_pixels,
    translate_errors,
)
from loupe.media.resample import downscale, stride_for

_PALETTE = 3  # TIFF PhotometricInterpretation for palette-colour images
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # ResolutionUnit: inch, cm, (mm, um)
_PLACEHOLDER_DPI = frozenset({1.0, 72.0, 96.0})
_IMAGEJ_UNITS_MM = {"micron": 1e-3, "um": 1e-3, "\u00b5m": 1e-3, "nm": 1e-6, "mm": 1.0, "cm": 10.0}


@contextmanager
def _open(path: PathLike, what: str = "TIFF") -> Iterator[tifffile.TiffFile]:
    with translate_errors(path, what), warnings.catch_warnings():
        # tifffile logs/warns about unusual tags; actual damage raises while reading
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            yield tif


def _geometry(page: tifffile.TiffPage, *, path: PathLike) -> tuple[int, int, int, str]:
    """(rows, cols, channels or 0, dtype name) of a page as ``read`` will return it."""
    if page.dtype is None:
        raise MediaError("unsupported TIFF sample format", path=path)
    if page.imagedepth > 1:
        raise MediaError("unsupported TIFF with volumetric (ImageDepth) pages", path=path)
    rows, cols, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    if page.photometric == _PALETTE and page.colormap is not None:
        return rows, cols, 3, "uint8"
    dtype = "uint8" if page.dtype == np.bool_ else page.dtype.name  # 1-bit -> 0/255
    return rows, cols, (samples if samples > 1 else 0), dtype


def _check_data(page: tifffile.TiffPage, size: int, *, path: PathLike) -> None:
    """Every strip/tile must lie inside the file: catches truncated files without decoding."""
    for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
        if count and offset + count > size:
            raise MediaError(
                f"truncated TIFF (image data ends at byte {offset + count}, file has {size})",
                path=path,
            )


def _levels(tif: tifffile.TiffFile, index: int) -> list[tifffile.TiffPage]:
    """Page ``index`` followed by its reduced-resolution versions (SubIFDs or series levels)."""
    page = tif.pages[index]
    assert isinstance(page, tifffile.TiffPage)
    levels = [page]
    if page.pages is not None:
        levels += [sub for sub in page.pages if isinstance(sub, tifffile.TiffPage)]
    elif index == 0 and tif.series and len(tif.series[0].levels) > 1:
        for level in tif.series[0].levels[1:]:
            keyframe = level.keyframe
            if isinstance(keyframe, tifffile.TiffPage):
                levels.append(keyframe)
    # SubIFDs can also hold other data (e.g. raw sensor images): keep true reductions only
    base = (page.samplesperpixel, page.dtype)
    return [
        lvl
        for lvl in levels
        if (lvl.samplesperpixel, lvl.dtype) == base
        and lvl.imagelength <= page.imagelength
        and lvl.imagewidth <= page.imagewidth
    ]


def _pixel_size_mm(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> tuple[float, float] | None:
    try:
        x_res, y_res = page.resolution
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if x_res <= 0 or y_res <= 0:
        return None
    unit = int(page.resolutionunit)
    if unit == 2 and x_res == y_res and x_res in _PLACEHOLDER_DPI:
        return None  # writers' defaults (72 dpi ...), not a measurement
    if unit in _MM_PER_UNIT:
        mm = _MM_PER_UNIT[unit]
        return mm / y_res, mm / x_res
    metadata = tif.imagej_metadata or {}
    scale = _IMAGEJ_UNITS_MM.get(str(metadata.get("unit", "")).lower())
    if scale is None or (x_res, y_res) == (1.0, 1.0):
        return None
    return scale / y_res, scale / x_res


def probe(path: PathLike, *, size: int, max_pixels: int) -> MediaInfo:
    with _open(path, "TIFF header") as tif:
        pages = len(tif.pages)
        if pages == 0:
            raise MediaError("TIFF has no images", path=path)
        page = tif.pages.first
        rows, cols, channels, dtype = _geometry(page, path=path)
        check_pixels(rows, cols, max_pixels, path=path)
        _check_data(page, size, path=path)
        levels = _levels(tif, 0)
        extra: dict[str, Any] = {
            "compression": _enum_name(page.compression),
            "photometric": _enum_name(page.photometric),
            "tiled": bool(page.is_tiled),
            "bigtiff": bool(tif.is_bigtiff),
            "pyramid_levels": len(levels),
        }
        if page.is_tiled:
            extra["tile"] = [int(page.tilelength), int(page.tilewidth)]
        series_info = _series_summary(tif)
        if series_info:
            extra.update(series_info)
        spacing = _pixel_size_mm(tif, page)
    return MediaInfo(
        format="tiff",
        kind="image",
        shape=(rows, cols, channels) if channels else (rows, cols),
        dtype=dtype,
        pages=pages,
        spacing=spacing,
        axes="YXC" if channels else "YX",
        extra=extra,
    )


def _enum_name(value: object) -> str:
    """tifffile gives enums for known codes and plain ints for private ones."""
    return str(getattr(value, "name", value)).lower()


def _series_summary(tif: tifffile.TiffFile) -> dict[str, Any]:
    try:
        series = tif.series[0]
        return {"series_shape": [int(n) for n in series.shape], "series_axes": str(series.axes)}
    except Exception:  # series parsing is best-effort metadata, never a reason to fail
        return {}


def read(
    path: PathLike, *, size: int, page: int, max_side: int | None, max_pixels: int
) -> np.ndarray:
    """Decode page ``page``; with ``max_side`` read the smallest adequate pyramid level,
    strided, so that at most one strip/tile is decoded at a time."""
    with _open(path) as tif:
        count = len(tif.pages)
        if not 0 <= page < count:
            raise ParameterError(f"page must be in 0..{count - 1} for this file, got {page}")
        levels = _levels(tif, page)
        base = levels[0]
        rows, cols, _, _ = _geometry(base, path=path)
        if max_side is None:
            check_pixels(rows, cols, max_pixels, path=path)
            _check_data(base, size, path=path)
            return _apply_palette(_decode_full(base), base)
        level = _choose_level(levels, max_side)
        _check_data(level, size, path=path)
        step = stride_for(level.imagelength, level.imagewidth, max_side)
        if step == 1:
            check_pixels(level.imagelength, level.imagewidth, max_pixels, path=path)
            array = _decode_full(level)
        else:
            array = _read_strided(tif, level, step, max_pixels=max_pixels, path=path)
        return downscale(_apply_palette(array, base), max_side=max_side)


def _choose_level(levels: list[tifffile.TiffPage], max_side: int) -> tifffile.TiffPage:
    """Smallest level whose longest side is still >= max_side (else the largest level)."""
    adequate = [lvl for lvl in levels if max(lvl.imagelength, lvl.imagewidth) >= max_side]
    if not adequate:
        return max(levels, key=lambda lvl: lvl.imagelength * lvl.imagewidth)
    return min(adequate, key=lambda lvl: lvl.imagelength * lvl.imagewidth)


def _decode_full(page: tifffile.TiffPage) -> np.ndarray:
    array = page.asarray()
    axes = page.axes
    if "S" in axes and axes.index("S") < axes.index("Y"):  # planar-separate samples
        array = np.moveaxis(array, axes.index("S"), -1)
    return np.ascontiguousarray(array)


def _read_strided(
    tif: tifffile.TiffFile,
    page: tifffile.TiffPage,
    step: int,
    *,
    max_pixels: int,
    path: PathLike,
) -> np.ndarray:
    """``image[::step, ::step]`` without ever holding more than one decoded segment."""
    rows, cols, samples = page.imagelength, page.imagewidth, page.samplesperpixel
    out = np.zeros((math.ceil(rows / step), math.ceil(cols / step), samples), dtype=page.dtype)
    if page.is_memmappable:
        dtype = np.dtype(page.dtype).newbyteorder(tif.byteorder)
        mapped = np.memmap(
            tif.filehandle.path,
            dtype=dtype,
            mode="r",
            offset=page.dataoffsets[0],
            shape=tuple(page.shaped),
        )
        # shaped = (separate samples, depth, rows, cols, contiguous samples)
        sub = mapped[:, 0, ::step, ::step, :]
        out[...] = np.moveaxis(sub, 0, -1).reshape(out.shape) if sub.shape[0] > 1 else sub[0]
        return out[..., 0] if samples == 1 else out
    if page.is_tiled:
        segment_rows, segment_cols = page.tilelength, page.tilewidth
    else:
        segment_rows, segment_cols = min(page.rowsperstrip, rows), cols
    # one segment is decoded whole, so it is what the pixel limit applies to here
    check_pixels(segment_rows, segment_cols, max_pixels, path=path)
    # 1 MiB of compressed input at a time keeps the peak small (threaded decoding
    # in tifffile holds every decoded segment of a batch: no gain in memory terms).
    for data, (sample, _, row0, col0, _), _ in page.segments(buffersize=1 << 20):
        if data is None:  # sparse file: missing tile reads as zeros
            continue
        segment = data[0]  # (rows, cols, contiguous samples)
        height, width = min(segment.shape[0], rows - row0), min(segment.shape[1], cols - col0)
        first_row, first_col = (-row0) % step, (-col0) % step
        picked = segment[first_row:height:step, first_col:width:step]
        out_row, out_col = (row0 + first_row) // step, (col0 + first_col) // step
        region = out[out_row : out_row + picked.shape[0], out_col : out_col + picked.shape[1]]
        if page.planarconfig == 2 and samples > 1:
            region[..., sample] = picked[..., 0]
        else:
            region[...] = picked
    return out[..., 0] if samples == 1 else out


def _apply_palette(array: np.ndarray, page: tifffile.TiffPage) -> np.ndarray:
    """Palette indices -> uint8 RGB; bilevel bool -> uint8 0/255 (as for 1-bit PNGs)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if page.photometric != _PALETTE or page.colormap is None or array.ndim != 2:
        return array
    colormap = np.asarray(page.colormap)
    lut = (colormap >> 8).astype(np.uint8) if colormap.max() > 255 else colormap.astype(np.uint8)
    return np.ascontiguousarray(lut[:, np.clip(array, 0, lut.shape[1] - 1)].transpose(1, 2, 0))


def read_stack(path: PathLike, *, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A multi-page grayscale TIFF as a (z, y, x) volume (ImageJ spacing when present)."""
    with _open(path) as tif:
        first = tif.pages.first
        _check_data(first, size, path=path)
        rows, cols, channels, _ = _geometry(first, path=path)
        if channels:
            raise MediaError("TIFF stack has colour pages; only grayscale stacks are volumes")
        with translate_errors(path, "TIFF"):
            volume = tif.asarray(key=range(len(tif.pages)))
        if volume.ndim == 2:
            volume = volume[None]
        if volume.shape[1:] != (rows, cols):
            raise MediaError("TIFF pages differ in size; cannot stack them into a volume")
        pixel = _pixel_size_mm(tif, first) or (1.0, 1.0)
        metadata = tif.imagej_metadata or {}
        unit_mm = _IMAGEJ_UNITS_MM.get(str(metadata.get("unit", "")).lower(), 1.0)
        z_step = float(metadata.get("spacing", 1.0)) * (unit_mm if "spacing" in metadata else 1.0)
    return np.ascontiguousarray(volume), (z_step, float(pixel[0]), float(pixel[1]))
