"""Resampling between pixel grids of different strides (NumPy only).

A grid of stride ``s`` over an ``(H, W)`` image has ``(ceil(H / s), ceil(W / s))``
cells; cell ``i`` is centred on pixel ``i * s + (s - 1) / 2`` (half-pixel centres, as
``torch.nn.functional.interpolate(align_corners=False)`` and scikit-image's
``resize``). Upsampling is bilinear with edge clamping, downsampling by an integer
factor is a block mean.
"""

from __future__ import annotations

import numpy as np


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks of the first two axes; partial blocks
    at the bottom and right edges average what they have. float32."""
    if factor == 1:
        return np.asarray(array, dtype=np.float32)
    rows, cols = array.shape[:2]
    pad = ((0, -rows % factor), (0, -cols % factor)) + ((0, 0),) * (array.ndim - 2)
    data = np.pad(np.asarray(array, dtype=np.float32), pad)
    gr, gc = data.shape[0] // factor, data.shape[1] // factor
    sums = data.reshape(gr, factor, gc, factor, *data.shape[2:]).sum(axis=(1, 3))
    if not pad[0][1] and not pad[1][1]:
        return sums / np.float32(factor * factor)
    counts = np.pad(np.ones((rows, cols), np.float32), pad[:2])
    n = counts.reshape(gr, factor, gc, factor).sum(axis=(1, 3))
    return sums / n.reshape(gr, gc, *([1] * (array.ndim - 2)))


def _upsample_axis(x: np.ndarray, factor: int, n_out: int, axis: int) -> np.ndarray:
    """Bilinear integer upsampling along ``axis`` (0 or 1) with half-pixel centres:
    each output phase is written in place as a weighted sum of the input and its
    shifted neighbour (no gather, no matrix, no transposed copies)."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = n * factor
    out = np.empty(shape, dtype=np.float32)

    def cut(start: int | None, stop: int | None, step: int | None = None) -> tuple[slice, ...]:
        return (slice(None),) * axis + (slice(start, stop, step),)

    for k in range(factor):
        offset = (k + 0.5) / factor - 0.5
        weight = np.float32(abs(offset))
        dst = out[cut(k, None, factor)]
        np.multiply(x, np.float32(1) - weight, out=dst)
        if offset < 0:  # the neighbour before; the first cell clamps to itself
            dst[cut(1, None)] += weight * x[cut(None, -1)]
            dst[cut(0, 1)] += weight * x[cut(0, 1)]
        else:
            dst[cut(None, -1)] += weight * x[cut(1, None)]
            dst[cut(-1, None)] += weight * x[cut(-1, None)]
    return out[cut(None, n_out)]


def resample_grid(
    data: np.ndarray, from_stride: float, to_stride: int, shape: tuple[int, int]
) -> np.ndarray:
    """Resample ``(h, w, c)`` features on a stride-``from_stride`` grid to the first
    ``shape`` cells of the stride-``to_stride`` grid: float32 ``(*shape, c)``.

    Integer ratios use block means (down) or shifted-slice bilinear interpolation (up);
    any other ratio (a ViT's 14 px patches) uses two bilinear interpolation matrices.
    """
    data = np.asarray(data, dtype=np.float32)
    ratio = from_stride / to_stride
    if ratio == 1:
        out = data
    elif ratio < 1 and float(1 / ratio).is_integer():
        out = block_mean(data, int(round(1 / ratio)))
    elif ratio > 1 and float(ratio).is_integer():
        factor = int(ratio)
        rows = _upsample_axis(data, factor, shape[0], 0)
        out = _upsample_axis(rows, factor, shape[1], 1)
    else:
        h, w, c = data.shape
        by_rows = resample_matrix(h, ratio, shape[0]) @ data.reshape(h, w * c)
        by_rows = np.ascontiguousarray(by_rows.reshape(shape[0], w, c).transpose(1, 0, 2))
        by_cols = resample_matrix(w, ratio, shape[1]) @ by_rows.reshape(w, shape[0] * c)
        out = by_cols.reshape(shape[1], shape[0], c).transpose(1, 0, 2)
    out = out[: shape[0], : shape[1]]
    if out.shape[:2] != tuple(shape):  # a grid that is short by a cell: clamp the edge
        pad = ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1]), (0, 0))
        out = np.pad(out, pad, mode="edge")
    return out


def resample_matrix(n_in: int, factor: float, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 bilinear interpolation matrix (half-pixel centres,
    edge clamping) that resamples a 1-D grid by ``factor`` output cells per input cell."""
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    src = np.clip((np.arange(n_out) + 0.5) / factor - 0.5, 0, n_in - 1)
    low = np.floor(src).astype(np.intp)
    high = np.minimum(low + 1, n_in - 1)
    weight = (src - low).astype(np.float32)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1.0 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


def upsample_to_pixels(grid: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """A ``(gh, gw)`` or ``(gh, gw, k)`` map on a stride grid, bilinearly upsampled to
    the ``(H, W)`` pixels it covers (what the viewer does on its side). float32."""
    squeeze = grid.ndim == 2
    data = grid[..., None] if squeeze else grid
    out = resample_grid(data, stride, 1, (int(shape[0]), int(shape[1])))
    return out[..., 0] if squeeze else out
