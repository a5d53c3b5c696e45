"""Files of 2-D segmentation under ``LOUPE_HOME/segments/<project>/``.

- ``masks/<item>/<sha256[:16]>.png``: human / accepted masks, 8-bit label values,
  content-addressed so every annotation version (and the audit history) keeps
  pointing at its own file (``.tif``, zlib-compressed, for big images);
- ``pixels/``: the per-item pixel feature cache (memory-mapped float16 grids);
- ``pred/v<version>/<item>.npz``: a model version's probability map of an item
  (uint8 0..255 per class on the finest feature grid);
- ``pred/live/<item>.npz``: the heatmap a running training wrote for the viewed
  item (removed when the run ends).

Big images (over :data:`BIG_PIXELS`) are never decoded whole: a tiled TIFF is read
region by region (:class:`TiffRegions`), its features are computed at half resolution
(:func:`feature_geometry`: filters on a 1/4 grid, CNNs on 1/8), probability maps stay
on the feature grid and masks are stored as compressed TIFF.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loupe.db.models import Item
from loupe.errors import ErrorCode, LoupeError
from loupe.features.grids import resample_grid, upsample_to_pixels
from loupe.features.pixel_cache import PixelFeatureCache
from loupe.features.pixels import PART_STRIDES, ImageRegions, parse_feature_set
from loupe.media import MediaError, read_image, to_display_uint8
from loupe.media.display import encode_jpeg
from loupe.media.tiles import read_region
from loupe.services.items.files import item_file_path
from loupe.settings import Settings

MAX_MASK_BYTES = 64 * 1024 * 1024
BIG_PIXELS = 4096 * 4096
"""Images with more pixels are "big": read by regions, half-resolution features, TIFF masks."""


def segments_dir(settings: Settings, project_id: int) -> Path:
    return settings.home / "segments" / str(int(project_id))


def feature_cache(settings: Settings, project_id: int) -> PixelFeatureCache:
    return PixelFeatureCache(segments_dir(settings, project_id) / "pixels")


def image_shape(item: Item) -> tuple[int, int]:
    """``(rows, cols)`` of a 2-D image item (INVALID for volumes and series)."""
    if item.kind != "image" or item.files or len(item.shape) < 2:
        raise LoupeError(
            ErrorCode.INVALID,
            f"item {item.id} ({item.filename}) is a {item.kind}; 2-D segmentation needs an image",
            item_id=item.id,
        )
    axes = item.axes or ""
    if "Y" in axes and "X" in axes and len(axes) == len(item.shape):
        return int(item.shape[axes.index("Y")]), int(item.shape[axes.index("X")])
    return int(item.shape[0]), int(item.shape[1])


def is_big(shape: tuple[int, int]) -> bool:
    return int(shape[0]) * int(shape[1]) > BIG_PIXELS


@dataclass(frozen=True)
class FeatureGeometry:
    """How an item's features are computed and cached: the cache key, each part's
    stride in full-resolution pixels, and the pixel scale the parts see."""

    key: str
    strides: dict[str, int]
    pixel_scale: int


def feature_geometry(item: Item, feature_set: str) -> FeatureGeometry:
    """Default strides for ordinary images; for big ones the parts see the image at
    half resolution (strides doubled: filters 4, CNNs 8), which quarters the CPU time
    and the feature cache of a 12,000 x 12,000 slide (0.4 + 0.9 GB of float16)."""
    parts = parse_feature_set(feature_set)
    scale = 2 if is_big(image_shape(item)) else 1
    strides = {p: PART_STRIDES[p] * scale for p in parts}
    key = item.sha256 if scale == 1 else f"{item.sha256}-x{scale}"
    return FeatureGeometry(key, strides, scale)


class TiffRegions:
    """A big TIFF item read region by region (:class:`~loupe.features.pixels.ImageRegions`):
    ``regions[r0:r1, c0:c1]`` decodes only the TIFF tiles/strips it touches and returns
    uint8 RGB (non-uint8 data windowed once for the whole image)."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        self.path = path
        self.shape: tuple[int, ...] = (int(shape[0]), int(shape[1]), 3)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        r0, r1, rs = rows.indices(self.shape[0])
        c0, c1, cs = cols.indices(self.shape[1])
        if rs != 1 or cs != 1:
            raise ValueError("TiffRegions reads contiguous regions only (step 1)")
        try:
            return read_region(self.path, (r0, r1), (c0, c1))
        except MediaError as exc:
            raise LoupeError(ErrorCode.INVALID, f"{self.path.name} is unreadable: {exc}") from exc


def open_image(item: Item) -> np.ndarray | ImageRegions:
    """The item's pixels: a big TIFF as :class:`TiffRegions` (never decoded whole),
    anything else decoded by :func:`load_image`."""
    shape = image_shape(item)
    if is_big(shape) and item.format == "tiff":
        return TiffRegions(item_file_path(item), shape)
    return load_image(item)


def load_image(item: Item) -> np.ndarray:
    """The item's pixels (rows, cols[, C]); NOT_FOUND / INVALID with the item named."""
    path = item_file_path(item)
    try:
        return read_image(path)
    except MediaError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"item {item.id} ({item.filename}) is unreadable: {exc}"
        ) from exc


def preview_jpeg(item: Item, max_size: int) -> bytes:
    """The item as a JPEG at most ``max_size`` pixels on its long side (a big TIFF is
    read from its smallest adequate pyramid level, never decoded whole)."""
    path = item_file_path(item)
    try:
        image = read_image(path, max_side=max_size)
    except MediaError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"item {item.id} ({item.filename}) is unreadable: {exc}"
        ) from exc
    return encode_jpeg(to_display_uint8(image, channel_axis=channel_axis(image)), quality=85)


def channel_axis(image: np.ndarray) -> int | None:
    return -1 if image.ndim == 3 else None


# --- masks --------------------------------------------------------------------------------


def decode_mask(data: bytes, shape: tuple[int, int] | None) -> np.ndarray:
    """A PNG / TIFF of label values as a ``shape`` uint8 array (INVALID otherwise);
    ``shape=None`` takes any 2-D size (a region of a mask, placed by the caller)."""
    if len(data) > MAX_MASK_BYTES:
        raise LoupeError(ErrorCode.TOO_LARGE, f"mask file over {MAX_MASK_BYTES} bytes")
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            import tifffile

            mask = np.asarray(tifffile.imread(io.BytesIO(data)))
        else:
            with Image.open(io.BytesIO(data)) as im:
                if im.mode not in ("L", "P", "1", "I", "I;16"):
                    raise LoupeError(
                        ErrorCode.INVALID,
                        f"a mask must be a single-channel image of label values, got {im.mode}",
                    )
                mask = np.asarray(im)
    except LoupeError:
        raise
    except Exception as exc:
        raise LoupeError(ErrorCode.INVALID, f"the mask is not a readable PNG/TIFF: {exc}") from exc
    if mask.ndim != 2 or (shape is not None and mask.shape != shape):
        raise LoupeError(
            ErrorCode.INVALID, f"mask shape {mask.shape} differs from the image shape {shape}"
        )
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise LoupeError(ErrorCode.INVALID, "mask label values must be 0..255")
    return mask.astype(np.uint8)


def label_values(mask: np.ndarray, *, block_pixels: int = 2_000_000) -> list[int]:
    """The distinct values of a uint8 mask, counted in row blocks (``np.unique`` would
    sort a copy of a big mask)."""
    if mask.dtype != np.uint8:
        return [int(v) for v in np.unique(mask).tolist()]
    seen = np.zeros(256, dtype=bool)
    step = max(1, block_pixels // max(mask.shape[1], 1))
    for r0 in range(0, mask.shape[0], step):
        seen |= np.bincount(mask[r0 : r0 + step].ravel(), minlength=256)[:256] > 0
    return np.flatnonzero(seen).tolist()


def encode_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def encode_tiff(mask: np.ndarray) -> bytes:
    """A zlib-compressed, tiled TIFF of label values (big masks: fast and small)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(
        buf, np.ascontiguousarray(mask, dtype=np.uint8), compression="zlib", tile=(512, 512)
    )
    return buf.getvalue()


def store_mask(settings: Settings, project_id: int, item_id: int, mask: np.ndarray) -> str:
    """Write the mask losslessly (PNG; compressed TIFF for big images); return its path
    relative to the project folder."""
    big = is_big(mask.shape[:2])
    data = encode_tiff(mask) if big else encode_png(mask)
    name = hashlib.sha256(data).hexdigest()[:16]
    rel = f"masks/{int(item_id)}/{name}.{'tif' if big else 'png'}"
    path = segments_dir(settings, project_id) / rel
    if not path.is_file():
        _atomic_write(path, data)
    return rel


def mask_path(settings: Settings, project_id: int, rel: str) -> Path:
    root = segments_dir(settings, project_id).resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise LoupeError(ErrorCode.INVALID, f"mask path {rel!r} leaves the project folder")
    return path


def read_mask(settings: Settings, project_id: int, rel: str) -> np.ndarray:
    path = mask_path(settings, project_id, rel)
    if not path.is_file():
        raise LoupeError(ErrorCode.NOT_FOUND, f"mask file {rel} is missing")
    if path.suffix == ".tif":
        import tifffile

        return np.asarray(tifffile.imread(path), dtype=np.uint8)
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.uint8)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- probability maps ---------------------------------------------------------------------


@dataclass
class ProbabilityMap:
    """A stored prediction: class probabilities on a grid of ``stride`` over ``shape``."""

    proba: np.ndarray  # (gh, gw, K) uint8, 255 = 1.0
    classes: np.ndarray  # (K,) label values
    stride: int
    shape: tuple[int, int]
    model_version_id: int
    rev: int = 0

    def pixels(self) -> np.ndarray:
        """Float32 ``(H, W, K)`` probabilities at full resolution (bilinear)."""
        grid = self.proba.astype(np.float32) / 255.0
        return upsample_to_pixels(grid, self.stride, self.shape)

    def pixel_rows(self, start: int, stop: int) -> np.ndarray:
        """Float32 ``(stop - start, W, K)``: rows ``[start, stop)`` of :meth:`pixels`,
        upsampled from the grid rows around them only (``start`` a multiple of the stride)."""
        s = self.stride
        if start % s or not 0 <= start < stop <= self.shape[0]:
            raise ValueError(f"rows [{start}, {stop}) must start on the stride {s} grid")
        g0 = max(start // s - 1, 0)
        g1 = min(-(-stop // s) + 1, self.proba.shape[0])
        grid = self.proba[g0:g1].astype(np.float32) / 255.0
        bottom = min(g1 * s, self.shape[0])
        out = resample_grid(grid, s, 1, (bottom - g0 * s, self.shape[1]))
        return out[start - g0 * s : stop - g0 * s]

    def column(self, value: int) -> int:
        hits = np.flatnonzero(self.classes == int(value))
        if not len(hits):
            raise LoupeError(
                ErrorCode.INVALID,
                f"class value {value} is not in the prediction ({self.classes.tolist()})",
            )
        return int(hits[0])


def _pred_path(settings: Settings, project_id: int, folder: str, item_id: int) -> Path:
    return segments_dir(settings, project_id) / "pred" / folder / f"{int(item_id)}.npz"


def write_probability(
    settings: Settings, project_id: int, item_id: int, pmap: ProbabilityMap, *, live: bool
) -> None:
    folder = "live" if live else f"v{pmap.model_version_id}"
    path = _pred_path(settings, project_id, folder, item_id)
    buf = io.BytesIO()
    np.savez(
        buf,
        proba=pmap.proba,
        classes=pmap.classes,
        meta=np.array([pmap.stride, *pmap.shape, pmap.model_version_id, pmap.rev], np.int64),
    )
    _atomic_write(path, buf.getvalue())


def read_probability(
    settings: Settings, project_id: int, item_id: int, active_version: int | None
) -> ProbabilityMap | None:
    """The live heatmap of a running training, else the active version's map, else None."""
    candidates = [_pred_path(settings, project_id, "live", item_id)]
    if active_version is not None:
        candidates.append(_pred_path(settings, project_id, f"v{active_version}", item_id))
    for path in candidates:
        if path.is_file():
            with np.load(path) as z:
                stride, rows, cols, version, rev = (int(v) for v in z["meta"])
                return ProbabilityMap(z["proba"], z["classes"], stride, (rows, cols), version, rev)
    return None


def drop_live(settings: Settings, project_id: int) -> None:
    shutil.rmtree(segments_dir(settings, project_id) / "pred" / "live", ignore_errors=True)


def to_uint8_proba(proba: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(proba * 255.0), 0, 255).astype(np.uint8)
