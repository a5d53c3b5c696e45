"""DeepZoom tiles of 2-D images, read region by region.

A viewer (OpenSeadragon) asks for square tiles of ``tile`` pixels plus ``overlap``
pixels on each inner edge, on a pyramid of levels: level ``L`` is the image scaled by
``2 ** (L - max_level)``, so level 0 is one pixel and ``max_level`` is full size.

Only the pixels a tile needs are decoded:

* TIFF: the strips/tiles that intersect the region, on the pyramid level (SubIFD or
  series level) closest to the wanted scale from above; a huge un-tiled image is read
  from a memory map where possible. A 12000 x 9000 image never sits in memory whole.
* Coarse levels (the whole level at most ``OVERVIEW_SIDE`` pixels) come from a cached
  downscaled image (``read_image(max_side=...)``), for every format.
* Other formats (JPEG, PNG, FITS, DICOM, NIfTI middle slice) are decoded once by
  ``read_image`` and kept in a small byte-bounded cache while their tiles are served.

Non-uint8 data (16-bit microscopy, float FITS) is windowed with one window for the
whole image, computed on its overview, so that neighbouring tiles match.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from loupe.media._core import (
    DEFAULT_MAX_PIXELS,
    MediaError,
    ParameterError,
    PathLike,
    check_pixels,
    translate_errors,
)
from loupe.media.api import probe, read_image
from loupe.media.display import display_window, encode_jpeg, to_display_uint8

TILE_SIZE = 254
OVERLAP = 1
OVERVIEW_SIDE = 2048
"""Levels no larger than this are cut from one cached downscaled image."""
CACHE_BYTES = 256 * 1024 * 1024
"""Decoded pixels kept between tile requests (overviews and small whole images)."""
TILE_QUALITY = 85

T = TypeVar("T")


# --- the pyramid --------------------------------------------------------------------


def deepzoom_levels(rows: int, cols: int) -> list[tuple[int, int]]:
    """``(rows, cols)`` of every DeepZoom level, level 0 (1 x 1) first, full size last.

    Level ``L`` of ``max_level = ceil(log2(max(rows, cols)))`` has
    ``ceil(rows / 2**(max_level - L))`` rows (and the same for columns).
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be >= 1, got {rows} x {cols}")
    max_level = math.ceil(math.log2(max(rows, cols))) if max(rows, cols) > 1 else 0
    return [
        (math.ceil(rows / 2 ** (max_level - level)), math.ceil(cols / 2 ** (max_level - level)))
        for level in range(max_level + 1)
    ]


def tile_grid(rows: int, cols: int, *, tile: int = TILE_SIZE) -> tuple[int, int]:
    """Number of ``(tile rows, tile columns)`` on a level of ``rows x cols`` pixels."""
    return math.ceil(rows / tile), math.ceil(cols / tile)


def tile_region(
    level_shape: tuple[int, int], col: int, row: int, *, tile: int = TILE_SIZE, overlap: int = 1
) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of tile ``(col, row)`` in level coordinates.

    DeepZoom convention: ``overlap`` extra pixels on each side that has a neighbour.
    ``ValueError`` when the tile lies outside the level.
    """
    rows, cols = level_shape
    n_rows, n_cols = tile_grid(rows, cols, tile=tile)
    if not (0 <= row < n_rows and 0 <= col < n_cols):
        raise ValueError(
            f"tile ({col}, {row}) is outside this level's {n_cols} x {n_rows} tiles (col x row)"
        )
    r0 = max(0, row * tile - overlap)
    c0 = max(0, col * tile - overlap)
    r1 = min(rows, (row + 1) * tile + overlap)
    c1 = min(cols, (col + 1) * tile + overlap)
    return r0, r1, c0, c1


def dzi_xml(rows: int, cols: int, *, tile: int = TILE_SIZE, overlap: int = 1) -> str:
    """The DeepZoom descriptor (``.dzi``) of a ``rows x cols`` image with JPEG tiles."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
        f'TileSize="{tile}" Overlap="{overlap}" Format="jpeg">'
        f'<Size Width="{cols}" Height="{rows}"/></Image>\n'
    )


# --- caches ---------------------------------------------------------------------------


class _ByteCache:
    """A thread-safe LRU of numpy arrays (or small objects) bounded by total bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        with self._lock:
            hit = self._data.get(key)
            if hit is not None:
                self._data.move_to_end(key)
                return hit[0]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # One decode per key even when the viewer asks for many tiles at once.
        with key_lock:
            with self._lock:
                hit = self._data.get(key)
                if hit is not None:
                    return hit[0]
            value = make()
            size = int(value.nbytes) if isinstance(value, np.ndarray) else 256
            with self._lock:
                self._key_locks.pop(key, None)
                if size <= self.budget:
                    self._data[key] = (value, size)
                    self._bytes += size
                    while self._bytes > self.budget:
                        _, (_, dropped) = self._data.popitem(last=False)
                        self._bytes -= dropped
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


_cache = _ByteCache(CACHE_BYTES)


def clear_cache() -> None:
    """Forget cached overviews and geometry (tests; a file replaced in place)."""
    _cache.clear()


def _file_key(path: PathLike) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (os.fspath(path), stat.st_mtime_ns, stat.st_size)


@dataclass(frozen=True)
class _Geometry:
    rows: int
    cols: int
    dtype: str
    tiff: bool


def _geometry(path: PathLike, key: tuple[str, int, int]) -> _Geometry:
    def make() -> _Geometry:
        info = probe(path)
        if info.kind != "image":
            raise MediaError(
                f"a {info.kind} has no 2-D tile pyramid (open it in the volume viewer)",
                path=path,
            )
        return _Geometry(int(info.shape[0]), int(info.shape[1]), info.dtype, info.format == "tiff")

    return _cache.get_or_make(("geometry", *key), make)


def _overview(path: PathLike, key: tuple[str, int, int], side: int) -> np.ndarray:
    """The whole image downscaled (native dtype) so its longest side is ``side``."""
    return _cache.get_or_make(("overview", side, *key), lambda: read_image(path, max_side=side))


def _window(path: PathLike, key: tuple[str, int, int], dtype: str) -> tuple[float, float] | None:
    """One display window for the whole image (None for uint8/bool: shown as stored)."""
    if dtype in ("uint8", "bool"):
        return None

    def make() -> np.ndarray:
        image = _overview(path, key, OVERVIEW_SIDE)
        colour = image[..., :3] if image.ndim == 3 and image.shape[2] >= 3 else image
        window = display_window(colour)
        return np.asarray(window if window is not None else (0.0, 0.0), dtype=np.float64)

    low, high = _cache.get_or_make(("window", *key), make)
    return (float(low), float(high)) if high > low else None


def image_size(path: PathLike) -> tuple[int, int]:
    """``(rows, cols)`` of the 2-D image the tiles are cut from (headers only, cached).

    ``MediaError`` for volumes (they have no 2-D pyramid) and unreadable files.
    """
    geo = _geometry(path, _file_key(path))
    return geo.rows, geo.cols


# --- reading one tile -----------------------------------------------------------------


def read_tile(
    path: PathLike,
    level: int,
    col: int,
    row: int,
    *,
    tile: int = TILE_SIZE,
    overlap: int = OVERLAP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Tile ``(col, row)`` of DeepZoom level ``level`` as uint8 RGB ``(rows, cols, 3)``.

    The tile is at most ``tile + 2 * overlap`` pixels on a side. ``ValueError`` for a
    level or tile outside the pyramid, ``MediaError`` for files that cannot be read.
    """
    if tile < 1 or overlap < 0:
        raise ParameterError(f"tile must be >= 1 and overlap >= 0, got {tile}, {overlap}")
    key = _file_key(path)
    geo = _geometry(path, key)
    levels = deepzoom_levels(geo.rows, geo.cols)
    if not 0 <= level < len(levels):
        raise ParameterError(f"level must be in 0..{len(levels) - 1} for this image, got {level}")
    level_shape = levels[level]
    r0, r1, c0, c1 = tile_region(level_shape, col, row, tile=tile, overlap=overlap)
    out_shape = (r1 - r0, c1 - c0)
    if max(level_shape) <= OVERVIEW_SIDE:
        image = _level_image(path, key, level_shape)
        region = image[r0:r1, c0:c1]
    else:
        scale = 2 ** (len(levels) - 1 - level)
        full = (r0 * scale, min(geo.rows, r1 * scale), c0 * scale, min(geo.cols, c1 * scale))
        if geo.tiff:
            region = _tiff_region(path, full, scale, max_pixels=max_pixels)
        else:
            whole = _cache.get_or_make(
                ("full", *key), lambda: read_image(path, max_pixels=max_pixels)
            )
            region = whole[full[0] : full[1], full[2] : full[3]]
        region = _resize(region, out_shape)
    return _to_rgb(region, _window(path, key, geo.dtype))


def read_region(
    path: PathLike,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Full-resolution pixels ``[rows[0], rows[1]) x [cols[0], cols[1])`` as uint8 RGB.

    A TIFF decodes only the strips/tiles the region touches (other formats: the whole
    image, kept in the small cache). Non-uint8 data is windowed as the tiles are (one
    window for the whole image), so neighbouring regions match. ``ValueError`` for a
    region outside the image, ``MediaError`` for files that cannot be read.
    """
    key = _file_key(path)
    geo = _geometry(path, key)
    r0, r1 = int(rows[0]), int(rows[1])
    c0, c1 = int(cols[0]), int(cols[1])
    if not (0 <= r0 < r1 <= geo.rows and 0 <= c0 < c1 <= geo.cols):
        raise ParameterError(
            f"region rows {rows} x cols {cols} is outside the {geo.rows} x {geo.cols} image"
        )
    if geo.tiff:
        region = _tiff_region(path, (r0, r1, c0, c1), 1, max_pixels=max_pixels)
    else:
        whole = _cache.get_or_make(("full", *key), lambda: read_image(path, max_pixels=max_pixels))
        region = whole[r0:r1, c0:c1]
    return _to_rgb(region, _window(path, key, geo.dtype))


def tile_jpeg(path: PathLike, level: int, col: int, row: int, **options: Any) -> bytes:
    """``read_tile`` encoded as JPEG (quality 85)."""
    return encode_jpeg(read_tile(path, level, col, row, **options), quality=TILE_QUALITY)


def _level_image(
    path: PathLike, key: tuple[str, int, int], level_shape: tuple[int, int]
) -> np.ndarray:
    """A whole (small) level: the cached overview, resized to the level's exact shape."""

    def make() -> np.ndarray:
        return _resize(_overview(path, key, OVERVIEW_SIDE), level_shape)

    return _cache.get_or_make(("level", level_shape, *key), make)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-average (or, when growing by rounding, bilinear) resize to exactly ``shape``."""
    if image.shape[:2] == shape:
        return image
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * np.uint8(255)
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((shape[0], shape[1], planes.shape[2]), dtype=image.dtype)
    size = (shape[1], shape[0])
    for k in range(planes.shape[2]):
        plane = np.ascontiguousarray(planes[..., k])
        if plane.dtype == np.uint8:
            out[..., k] = np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BOX))
        else:
            resized = Image.fromarray(plane.astype(np.float32)).resize(size, Image.Resampling.BOX)
            values = np.asarray(resized)
            if np.issubdtype(image.dtype, np.integer):
                info = np.iinfo(image.dtype)
                values = np.clip(np.rint(values), info.min, info.max)
            out[..., k] = values.astype(image.dtype)
    return out[..., 0] if image.ndim == 2 else out


def _to_rgb(region: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """uint8 RGB of a region, with the whole image's window for non-uint8 data."""
    if region.dtype != np.uint8 and region.dtype != np.bool_:
        low, high = window if window is not None else (0.0, 0.0)
        planes = region[..., None] if region.ndim == 2 else region
        channels = planes.shape[2]
        colour = planes[..., : min(channels, 3)].astype(np.float64)
        if high > low:
            scaled = (colour - low) * (255.0 / (high - low))
            colour8 = np.rint(np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255)).astype(np.uint8)
        else:
            colour8 = np.zeros(colour.shape, dtype=np.uint8)
        if channels == 4:
            alpha = planes[..., 3].astype(np.float64)
            top = (
                float(np.iinfo(region.dtype).max) if np.issubdtype(region.dtype, np.integer) else 1
            )
            alpha8 = np.rint(np.clip(np.nan_to_num(alpha / top, nan=1.0), 0, 1) * 255)
            colour8 = np.concatenate([colour8, alpha8.astype(np.uint8)[..., None]], axis=-1)
        region = colour8
    return to_display_uint8(region, channel_axis=-1 if region.ndim == 3 else None)


# --- TIFF regions ---------------------------------------------------------------------


def _tiff_region(
    path: PathLike, full: tuple[int, int, int, int], scale: int, *, max_pixels: int
) -> np.ndarray:
    """Full-resolution region ``(row0, row1, col0, col1)`` read from the pyramid level
    whose downsampling is the largest one not above ``scale`` (so never upsampled)."""
    import tifffile

    from loupe.media import tiff

    with translate_errors(path, "TIFF"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tifffile.TiffFile(path) as tif:
            levels = tiff._levels(tif, 0)
            base = levels[0]
            best = base
            for lvl in levels[1:]:
                factor = base.imagewidth / lvl.imagewidth
                if factor <= scale * 1.01 and lvl.imagewidth < best.imagewidth:
                    best = lvl
            fy = base.imagelength / best.imagelength
            fx = base.imagewidth / best.imagewidth
            r0, r1, c0, c1 = full
            rows = (
                int(math.floor(r0 / fy)),
                min(best.imagelength, max(int(math.ceil(r1 / fy)), int(math.floor(r0 / fy)) + 1)),
            )
            cols = (
                int(math.floor(c0 / fx)),
                min(best.imagewidth, max(int(math.ceil(c1 / fx)), int(math.floor(c0 / fx)) + 1)),
            )
            check_pixels(rows[1] - rows[0], cols[1] - cols[0], max_pixels, path=path)
            region = _read_page_region(tif, best, rows, cols, max_pixels=max_pixels, path=path)
            return tiff._apply_palette(region, base)


def _read_page_region(
    tif: Any,
    page: Any,
    rows: tuple[int, int],
    cols: tuple[int, int],
    *,
    max_pixels: int,
    path: PathLike,
) -> np.ndarray:
    """``page[rows[0]:rows[1], cols[0]:cols[1]]`` (``(r, c)`` or ``(r, c, S)``), decoding
    only the strips/tiles it touches (or slicing a memory map)."""
    samples = int(page.samplesperpixel)
    r0, r1 = rows
    c0, c1 = cols
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
        sub = np.asarray(mapped[:, 0, r0:r1, c0:c1, :])
        array = np.moveaxis(sub[..., 0], 0, -1) if sub.shape[0] > 1 else sub[0]
        return np.ascontiguousarray(array[..., 0] if samples == 1 else array)
    image_rows, image_cols = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        seg_rows, seg_cols = int(page.tilelength), int(page.tilewidth)
    else:
        seg_rows, seg_cols = min(int(page.rowsperstrip), image_rows), image_cols
    check_pixels(seg_rows, seg_cols, max_pixels, path=path)  # one segment is decoded whole
    down, across = math.ceil(image_rows / seg_rows), math.ceil(image_cols / seg_cols)
    separate = page.planarconfig == 2 and samples > 1
    planes = samples if separate else 1
    out = np.zeros((r1 - r0, c1 - c0, samples), dtype=page.dtype)
    decode = page.decode
    handle = tif.filehandle
    for plane in range(planes):
        for sr in range(r0 // seg_rows, (r1 - 1) // seg_rows + 1):
            for sc in range(c0 // seg_cols, (c1 - 1) // seg_cols + 1):
                index = plane * down * across + sr * across + sc
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if not count:
                    continue  # sparse file: a missing tile reads as zeros
                with handle.lock:
                    handle.seek(offset)
                    data = handle.read(count)
                segment, _, _ = decode(data, index, jpegtables=page.jpegtables)
                if segment is None:
                    continue
                seg = segment[0]  # (rows, cols, contiguous samples)
                top, left = sr * seg_rows, sc * seg_cols
                y0, y1 = max(r0, top), min(r1, top + seg.shape[0], image_rows)
                x0, x1 = max(c0, left), min(c1, left + seg.shape[1], image_cols)
                if y1 <= y0 or x1 <= x0:
                    continue
                piece = seg[y0 - top : y1 - top, x0 - left : x1 - left]
                target = out[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
                if separate:
                    target[..., plane] = piece[..., 0]
                else:
                    target[...] = piece
    if page.dtype == np.bool_:
        out = out.astype(np.uint8) * np.uint8(255)
    return out[..., 0] if samples == 1 else out
