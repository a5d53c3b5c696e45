"""From a file (or a DICOM series) to the square uint8 RGB array a backbone sees."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from loupe.media import read_image, to_display_uint8

ImageSource = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""One image file, or the files of one DICOM series (its middle slice is used)."""

# A first read asks for a longest side of this many times the model's input: enough for
# any aspect ratio up to 2:1 without a second read. Longer shapes are read again.
_FIRST_READ_FACTOR = 2
_MAX_READ_SIDE = 16_384


def fit_square(rgb: np.ndarray, *, size: int) -> np.ndarray:
    """Resize ``rgb`` so its shorter side is ``size``, then crop the centre square.

    ``rgb`` is uint8 ``(rows, cols, 3)``; the result is uint8 ``(size, size, 3)``. The
    resize is bilinear and antialiased (Pillow), so it is the same for up- and
    down-scaling; an image already ``size`` x ``size`` is returned unchanged. The crop keeps
    the whole shorter axis, so nothing of a square image is lost.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    rows, cols = rgb.shape[:2]
    if (rows, cols) == (size, size):
        return rgb
    scale = size / min(rows, cols)
    new_rows = max(size, round(rows * scale))
    new_cols = max(size, round(cols * scale))
    if (new_rows, new_cols) != (rows, cols):
        resized = Image.fromarray(rgb).resize((new_cols, new_rows), Image.Resampling.BILINEAR)
        rgb = np.asarray(resized)
    top = (new_rows - size) // 2
    left = (new_cols - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def read_rgb(source: ImageSource, *, size: int) -> np.ndarray:
    """Read one image and return it as uint8 ``(size, size, 3)`` via :func:`fit_square`.

    Decodes no more than needed: the first read asks ``read_image`` for a longest side of
    ``2 * size``; if the shorter side then falls below ``size`` (aspect ratio over 2:1)
    the file is read again at the resolution that keeps the shorter side at ``size``.
    Raises ``MediaError`` for unreadable files.
    """
    max_side = _FIRST_READ_FACTOR * size
    image = _read(source, max_side=max_side)
    rows, cols = image.shape[:2]
    if min(rows, cols) < size and max(rows, cols) >= max_side:
        needed = math.ceil(size * max(rows, cols) / max(1, min(rows, cols)))
        image = _read(source, max_side=min(needed, _MAX_READ_SIDE))
    rgb = to_display_uint8(image, channel_axis=-1 if image.ndim == 3 else None)
    return fit_square(rgb, size=size)


def _read(source: ImageSource, *, max_side: int) -> np.ndarray:
    if isinstance(source, str | os.PathLike):
        return read_image(source, max_side=max_side)
    paths = list(source)
    if not paths:
        raise ValueError("an image source must not be an empty list of paths")
    if len(paths) == 1:
        return read_image(paths[0], max_side=max_side)
    # Several files are the slices of one DICOM series: embed its middle slice.
    from loupe.media.dicom_series import middle_slice

    return middle_slice(paths, max_side=max_side)
