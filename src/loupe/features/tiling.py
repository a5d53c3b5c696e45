"""Tiling for per-pixel features: overlapping tiles of an image (or of an
:class:`ImageRegions`, a big image read region by region), stitched into grid outputs.

Only one tile with its margin is read and processed at a time, so a 12,000 x 12,000
slide costs one tile's memory, not the whole image's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from loupe.features.filter_bank import grid_shape, to_rgb_uint8

TILE = 1024
"""Core tile side in pixels (a multiple of 32)."""
FeatureFn = Callable[[np.ndarray], np.ndarray]


class ImageRegions(Protocol):
    """An image too big to hold, read region by region: ``shape`` is ``(H, W, 3)`` and
    ``regions[r0:r1, c0:c1]`` returns those pixels as a uint8 RGB ndarray (so every
    tile converts the same way and tiles match at their seams)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...


def tile_margin(sigma_max: float = 32.0) -> int:
    """Context in pixels that makes tiled filter-bank features equal the whole-image
    ones: 4 Gaussian widths (scikit-image truncates there) plus the derivative stencils,
    rounded up to a multiple of 32."""
    need = 4 * sigma_max + 8
    return int(-(-need // 32) * 32)


def map_tiles(
    image: np.ndarray | ImageRegions,
    fn: FeatureFn,
    *,
    stride: int,
    dim: int,
    tile: int = TILE,
    margin: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of ``image`` and stitch its grid outputs.

    ``fn`` maps an image patch ``(h, w, ...)`` to grid features
    ``(ceil(h / stride), ceil(w / stride), dim)``. The image is cut into cores of
    ``tile`` x ``tile`` pixels; each is extended by ``margin`` pixels of context on every
    side (clipped at the image edge), processed, and only its core is kept, so every
    output cell saw at least ``margin`` pixels of context (or the image edge).

    Parameters
    ----------
    image : (H, W, ...) ndarray or ImageRegions
        Only the tiles' regions are read (``image[r0:r1, c0:c1]``).
    fn : callable
    stride : int
        The grid stride; ``tile`` and ``margin`` must be multiples of it.
    dim : int
        Features per cell.
    tile : int
        Core side in pixels.
    margin : int, optional
        Context in pixels (default :func:`tile_margin`).
    out : ndarray, optional
        Where to write (e.g. a float16 memmap of the grid shape); allocated if None.

    Returns
    -------
    features : (ceil(H / stride), ceil(W / stride), dim) ndarray (float32 if allocated)
    """
    margin = tile_margin() if margin is None else margin
    if tile % stride or margin % stride or tile <= 0 or margin < 0:
        raise ValueError(f"tile ({tile}) and margin ({margin}) must be multiples of {stride}")
    rows, cols = image.shape[:2]
    grid = grid_shape(image.shape, stride)
    if out is None:
        out = np.empty((*grid, dim), dtype=np.float32)
    elif out.shape != (*grid, dim):
        raise ValueError(f"out must have shape {(*grid, dim)}, got {out.shape}")
    if rows <= tile + margin and cols <= tile + margin:
        out[...] = fn(image[0:rows, 0:cols])
        return out
    for r0 in range(0, rows, tile):
        for c0 in range(0, cols, tile):
            r1, c1 = min(r0 + tile, rows), min(c0 + tile, cols)
            er0, ec0 = max(r0 - margin, 0), max(c0 - margin, 0)
            er1, ec1 = min(r1 + margin, rows), min(c1 + margin, cols)
            part = fn(image[er0:er1, ec0:ec1])
            gr0, gc0 = (r0 - er0) // stride, (c0 - ec0) // stride
            gr1, gc1 = -(-r1 // stride) - r0 // stride, -(-c1 // stride) - c0 // stride
            out[r0 // stride : r0 // stride + gr1, c0 // stride : c0 // stride + gc1] = part[
                gr0 : gr0 + gr1, gc0 : gc0 + gc1
            ]
    return out


def scaled(fn: FeatureFn, scale: int) -> FeatureFn:
    """``fn`` applied to a patch block-averaged by ``scale`` (a no-op for 1); a
    ``(h, w)`` patch still gives the ``ceil(h / stride)`` grid of the full stride."""
    if scale == 1:
        return fn

    def run(patch: np.ndarray) -> np.ndarray:
        return fn(_shrink_uint8(to_rgb_uint8(patch, channel_axis=-1), scale))

    return run


def _shrink_uint8(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Block mean of a uint8 ``(h, w, 3)`` image by ``factor`` (rounded; partial edge
    blocks repeat their last pixels), summed in uint16 so no float copy is made."""
    rows, cols = rgb.shape[:2]
    pad = ((0, -rows % factor), (0, -cols % factor), (0, 0))
    data = np.pad(rgb, pad, mode="edge") if pad[0][1] or pad[1][1] else rgb
    gr, gc = data.shape[0] // factor, data.shape[1] // factor
    sums = data.reshape(gr, factor, gc, factor, 3).sum(axis=(1, 3), dtype=np.uint16)
    return ((sums + factor * factor // 2) // (factor * factor)).astype(np.uint8)
