"""Deterministic conversion of any pixel array to displayable 8-bit RGB."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from loupe.media.resample import target_shape

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# Percentiles are estimated on at most this many values (a fixed stride, so the result is
# deterministic); the window of a 100 Mpx image barely moves and it is ~50x faster.
_PERCENTILE_SAMPLES = 2_000_000


def to_display_uint8(array: np.ndarray, *, channel_axis: int | None = -1) -> np.ndarray:
    """Normalise an image of any dtype and channel count to uint8 RGB ``(rows, cols, 3)``.

    Parameters
    ----------
    array:
        ``(rows, cols)`` or a 3-D array with a channel axis.
    channel_axis:
        Which axis of a 3-D ``array`` holds the channels; None means ``array`` has no
        channel axis and must be 2-D.

    Rules (the same normalisation is used by every feature backbone, so it is fixed):

    * uint8 values are kept as they are; bool becomes 0/255;
    * any other dtype is windowed jointly over the colour channels to its
      0.5..99.5 percentile range (finite values only) and scaled to 0..255; NaN/inf map
      to 0 and a constant image maps to 0;
    * 1 channel is repeated to 3; 2 channels are shown as red/green with blue 0;
      4 channels are RGBA, composited on white (alpha scaled by the dtype's maximum, or
      taken as 0..1 for floats); more than 4 channels: the first three.
    """
    data = np.asarray(array)
    if data.ndim == 3:
        if channel_axis is None:
            raise ValueError(
                "channel_axis is None but array is 3-D; pass the channel axis or a 2-D array"
            )
        if not -3 <= channel_axis <= 2:
            raise ValueError(f"channel_axis must be in -3..2 for a 3-D array, got {channel_axis}")
        planes = np.moveaxis(data, channel_axis, -1)
    elif data.ndim == 2:
        planes = data[..., None]
    else:
        raise ValueError(f"array must be 2-D or 3-D, got shape {data.shape}")
    channels = planes.shape[-1]
    if channels == 0 or data.size == 0:
        raise ValueError(f"array must not be empty, got shape {data.shape}")
    if np.iscomplexobj(planes):
        raise ValueError(f"array must be real-valued, got dtype {data.dtype}")

    alpha = planes[..., 3] if channels == 4 else None
    color = planes[..., :1] if channels == 1 else planes[..., : min(channels, 3)]
    color8 = _window_to_uint8(color)
    if color8.shape[-1] == 1:
        color8 = np.repeat(color8, 3, axis=-1)
    elif color8.shape[-1] == 2:
        color8 = np.concatenate([color8, np.zeros_like(color8[..., :1])], axis=-1)
    if alpha is not None:
        weight = _alpha_weight(alpha)[..., None]
        blended = color8.astype(np.float32) * weight + np.float32(255.0) * (1.0 - weight)
        color8 = np.rint(np.clip(blended, 0.0, 255.0)).astype(np.uint8)
    return np.ascontiguousarray(color8)


def display_window(values: np.ndarray) -> tuple[float, float] | None:
    """The (low, high) percentile window used for non-uint8 data, or None if constant/empty."""
    flat = values.reshape(-1)
    if flat.size > _PERCENTILE_SAMPLES:
        flat = flat[:: math.ceil(flat.size / _PERCENTILE_SAMPLES)]
    if np.issubdtype(flat.dtype, np.floating):
        flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        return None
    low, high = (float(v) for v in np.percentile(flat, [LOW_PERCENTILE, HIGH_PERCENTILE]))
    if high <= low:
        low, high = float(flat.min()), float(flat.max())
    if high <= low:
        return None
    return low, high


def _window_to_uint8(color: np.ndarray) -> np.ndarray:
    if color.dtype == np.uint8:
        return color
    if color.dtype == np.bool_:
        return color.astype(np.uint8) * np.uint8(255)
    window = display_window(color)
    if window is None:
        return np.zeros(color.shape, dtype=np.uint8)
    low, high = window
    scaled = (color.astype(np.float64) - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _alpha_weight(alpha: np.ndarray) -> np.ndarray:
    if alpha.dtype == np.bool_:
        return alpha.astype(np.float32)
    if np.issubdtype(alpha.dtype, np.integer):
        top = float(np.iinfo(alpha.dtype).max)
        return np.clip(alpha.astype(np.float32) / np.float32(top), 0.0, 1.0)
    weight = np.nan_to_num(alpha.astype(np.float32), nan=1.0)
    return np.clip(weight, 0.0, 1.0)


def fit_longest_side(rgb: np.ndarray, *, size: int) -> np.ndarray:
    """Resize uint8 RGB so its longest side is ``size`` (only ever shrinks)."""
    rows, cols = rgb.shape[:2]
    new_rows, new_cols = target_shape(rows, cols, size)
    if (new_rows, new_cols) == (rows, cols):
        return rgb
    image = Image.fromarray(rgb).resize((new_cols, new_rows), Image.Resampling.LANCZOS)
    return np.asarray(image)


def encode_jpeg(rgb: np.ndarray, *, quality: int = 85) -> bytes:
    """JPEG bytes of a uint8 RGB ``(rows, cols, 3)`` array."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be uint8 (rows, cols, 3), got {rgb.dtype} {rgb.shape}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
