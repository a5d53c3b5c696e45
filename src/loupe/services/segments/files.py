"""Files of 2-D segmentation under ``LOUPE_HOME/segments/<project>/``.

- ``masks/<item>/<sha256[:16]>.png``: human / accepted masks, 8-bit label values,
  content-addressed so every annotation version (and the audit history) keeps
  pointing at its own file;
- ``pixels/``: the per-item pixel feature cache (memory-mapped float16 grids);
- ``pred/v<version>/<item>.npz``: a model version's probability map of an item
  (uint8 0..255 per class on the finest feature grid);
- ``pred/live/<item>.npz``: the heatmap a running training wrote for the viewed
  item (removed when the run ends).
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
from loupe.features.grids import upsample_to_pixels
from loupe.features.pixel_cache import PixelFeatureCache
from loupe.media import MediaError, read_image
from loupe.services.items.files import item_file_path
from loupe.settings import Settings

MAX_MASK_BYTES = 64 * 1024 * 1024


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


def load_image(item: Item) -> np.ndarray:
    """The item's pixels (rows, cols[, C]); NOT_FOUND / INVALID with the item named."""
    path = item_file_path(item)
    try:
        return read_image(path)
    except MediaError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"item {item.id} ({item.filename}) is unreadable: {exc}"
        ) from exc


def channel_axis(image: np.ndarray) -> int | None:
    return -1 if image.ndim == 3 else None


# --- masks --------------------------------------------------------------------------------


def decode_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """A PNG / TIFF of label values as a ``shape`` uint8 array (INVALID otherwise)."""
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
    if mask.ndim != 2 or mask.shape != shape:
        raise LoupeError(
            ErrorCode.INVALID, f"mask shape {mask.shape} differs from the image shape {shape}"
        )
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise LoupeError(ErrorCode.INVALID, "mask label values must be 0..255")
    return mask.astype(np.uint8)


def encode_png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def store_mask(settings: Settings, project_id: int, item_id: int, mask: np.ndarray) -> str:
    """Write the mask losslessly; return its path relative to the project folder."""
    data = encode_png(mask)
    name = hashlib.sha256(data).hexdigest()[:16]
    rel = f"masks/{int(item_id)}/{name}.png"
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
