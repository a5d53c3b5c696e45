"""Downscaling that keeps the native dtype (used by ``read_image(max_side=...)``)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def target_shape(rows: int, cols: int, max_side: int) -> tuple[int, int]:
    """(rows, cols) scaled so that the longest side equals ``max_side`` (never upscaled)."""
    longest = max(rows, cols)
    if longest <= max_side:
        return rows, cols
    scale = max_side / longest
    new_rows = max_side if rows == longest else max(1, round(rows * scale))
    new_cols = max_side if cols == longest else max(1, round(cols * scale))
    return min(new_rows, max_side), min(new_cols, max_side)


def stride_for(rows: int, cols: int, max_side: int) -> int:
    """Largest integer step that keeps a strided read at least ``max_side`` long."""
    return max(1, max(rows, cols) // max_side)


def downscale(image: np.ndarray, *, max_side: int) -> np.ndarray:
    """Area-average ``image`` (rows, cols) or (rows, cols, C) so its longest side is ``max_side``.

    The output keeps the input dtype (integers are rounded and clipped to their range) and
    is returned unchanged when it already fits. Box filtering never produces values outside
    the input range, which matters for label-like and scientific data.
    """
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be 2-D or 3-D (rows, cols[, C]), got shape {image.shape}")
    rows, cols = image.shape[:2]
    new_rows, new_cols = target_shape(rows, cols, max_side)
    if (new_rows, new_cols) == (rows, cols):
        return image
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * np.uint8(255)
    planes = image[..., None] if image.ndim == 2 else image
    out = np.empty((new_rows, new_cols, planes.shape[2]), dtype=image.dtype)
    for index in range(planes.shape[2]):
        out[..., index] = _resize_plane(planes[..., index], (new_rows, new_cols))
    return out[..., 0] if image.ndim == 2 else out


def _resize_plane(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    size = (shape[1], shape[0])  # PIL speaks (width, height)
    if plane.dtype == np.uint8:
        resized = Image.fromarray(np.ascontiguousarray(plane)).resize(
            size, Image.Resampling.BOX, reducing_gap=2.0
        )
        return np.asarray(resized)
    if np.iscomplexobj(plane):
        raise ValueError("image must be real-valued, got a complex dtype")
    as_float = np.ascontiguousarray(plane, dtype=np.float32)
    resized_float = np.asarray(
        Image.fromarray(as_float).resize(size, Image.Resampling.BOX, reducing_gap=2.0)
    )
    if np.issubdtype(plane.dtype, np.integer):
        info = np.iinfo(plane.dtype)
        high = np.float64(info.max)
        if int(high) > info.max:  # int64/uint64 maxima are not exact in float64
            high = np.nextafter(high, 0)
        rounded = np.clip(np.rint(resized_float.astype(np.float64)), float(info.min), high)
        return rounded.astype(plane.dtype)
    return resized_float.astype(plane.dtype)


def block_count(length: int, step: int) -> int:
    """Number of samples a ``[::step]`` read of ``length`` items yields."""
    return math.ceil(length / step)
