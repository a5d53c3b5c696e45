"""Per-pixel features of 2-D images for segmentation from clicks and scribbles.

A *feature set* names what is stacked per pixel; sets combine with ``+``:

==========================  ====  ===================================================
feature set                 dim   what
==========================  ====  ===================================================
``filters``                 24    gray-level filter bank (intensity, edges, texture
                                  at 6 scales: scikit-image's
                                  ``multiscale_basic_features``)
``effnet-lite0``            192   EfficientNet-Lite0 hypercolumn (ONNX Runtime)
``mobilenet_v2``            168   MobileNetV2 hypercolumn (ONNX Runtime)
``dinov2-s``                384   DINOv2 ViT-S/14 patch tokens (optional weights file)
``effnet-lite0+filters``    216   the default: best mean Dice at 10-40 clicks
                                  over 3 real images (``benchmarks/segment_clicks.py``)
==========================  ====  ===================================================

Each part lives on a *grid* of its own stride (:data:`PART_STRIDES`: the filter bank
at 1/2 resolution, CNN hypercolumns at 1/4): grid cell ``(i, j)`` covers pixels
``[i*s, (i+1)*s) x [j*s, (j+1)*s)``; the grid of an ``(H, W)`` image is
``(ceil(H / s), ceil(W / s))``. :class:`PixelFeatures` holds the parts; heads train on
features sampled bilinearly at the labelled pixels and predict on the finest grid
(1/2), and the viewer upsamples the probability map. A full-resolution float32
hypercolumn of a 2048 x 2048 image (3 GB) is never allocated: the CNN taps are
resampled to the 1/4 grid (0.2 GB float32 at 2048 x 2048), the filter bank is computed
at 1/2 resolution, and big images are processed in overlapping tiles
(:func:`map_tiles`, in :mod:`loupe.features.tiling`), read region by region when the
image is an :class:`ImageRegions` (a big TIFF is never decoded whole), optionally at
half resolution (``pixel_scale=2``: every part on a grid twice as coarse). Heads predict
a big image band by band (:meth:`PixelFeatures.band`).

Everything here takes and returns NumPy arrays; torch is never imported by this module
(ONNX Runtime runs the CNNs). The filter bank lives in :mod:`loupe.features.filter_bank`,
the hypercolumns in :mod:`loupe.features.hypercolumns`, the cache in
:mod:`loupe.features.pixel_cache`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from loupe.features.cnn import default_onnx_cache_dir
from loupe.features.filter_bank import (
    FILTER_BANK_DIM,
    filter_bank,
    gradient_magnitude,
    grid_shape,
    to_gray,
    to_rgb_uint8,
)
from loupe.features.grids import resample_grid
from loupe.features.hypercolumns import (
    HYPERCOLUMN_DIMS,
    cnn_hypercolumn,
    dino_hypercolumn,
)
from loupe.features.tiling import TILE, FeatureFn, ImageRegions, map_tiles, scaled, tile_margin

FILTERS = "filters"
DEFAULT_PIXEL_FEATURES = "effnet-lite0+filters"
PIXEL_FEATURE_PARTS = (FILTERS, "effnet-lite0", "mobilenet_v2", "dinov2-s")
PART_STRIDES = {FILTERS: 2, "effnet-lite0": 4, "mobilenet_v2": 4, "dinov2-s": 8}
"""Default grid stride of each part."""
_ROW_CHUNK = 64  # grid rows projected at a time: bounds float32 copies of float16 memmaps

__all__ = [
    "DEFAULT_PIXEL_FEATURES",
    "FILTER_BANK_DIM",
    "PART_STRIDES",
    "FeatureBand",
    "FeatureGrid",
    "ImageRegions",
    "TILE",
    "PixelFeatures",
    "feature_dim",
    "filter_bank",
    "gradient_magnitude",
    "grid_shape",
    "map_tiles",
    "parse_feature_set",
    "part_dim",
    "part_stride",
    "pixel_features",
    "sample_grid",
    "tile_margin",
    "to_gray",
    "to_rgb_uint8",
]


def parse_feature_set(feature_set: str) -> tuple[str, ...]:
    """The parts of a feature set name (``'effnet-lite0+filters'`` ->
    ``('effnet-lite0', 'filters')``); ``ValueError`` for an unknown part."""
    parts = tuple(p.strip() for p in feature_set.split("+") if p.strip())
    unknown = [p for p in parts if p not in PIXEL_FEATURE_PARTS]
    if not parts or unknown or len(set(parts)) != len(parts):
        raise ValueError(
            f"feature_set must join distinct parts of {list(PIXEL_FEATURE_PARTS)} with '+', "
            f"got {feature_set!r}"
        )
    return parts


def feature_dim(feature_set: str) -> int:
    """Number of features per grid cell of ``feature_set``."""
    return sum(
        FILTER_BANK_DIM if p == FILTERS else HYPERCOLUMN_DIMS[p]
        for p in parse_feature_set(feature_set)
    )


# --- the dispatcher -----------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureGrid:
    """One part of a feature set on its own grid.

    ``data`` is ``(ceil(H / stride), ceil(W / stride), dim)``; cell ``(i, j)`` is centred
    on pixel ``(i * stride + (stride - 1) / 2, j * stride + (stride - 1) / 2)``.
    """

    name: str
    stride: int
    data: np.ndarray


@dataclass(frozen=True)
class PixelFeatures:
    """The features of one image: each part on its native grid (see the module notes).

    Parts stay on their own grids (filters 1/2, CNNs 1/4) because every head is linear in
    the features up to its first layer: it projects each part on its grid and adds the
    bilinearly upsampled projections (:meth:`project`), which equals projecting
    bilinearly upsampled features, at a fraction of the memory.
    """

    shape: tuple[int, int]
    parts: tuple[FeatureGrid, ...]

    @property
    def dim(self) -> int:
        return sum(part.data.shape[2] for part in self.parts)

    @property
    def stride(self) -> int:
        """The finest part's stride: the grid heads predict on."""
        return min(part.stride for part in self.parts)

    def astype(self, dtype: DTypeLike) -> PixelFeatures:
        """A copy with every part's data in ``dtype`` (e.g. load float16 memmaps into
        float32 RAM once per interactive session)."""
        return PixelFeatures(
            self.shape,
            tuple(
                FeatureGrid(p.name, p.stride, np.asarray(p.data, dtype=dtype)) for p in self.parts
            ),
        )

    def project(
        self, weights: np.ndarray, bias: np.ndarray, *, rows: tuple[int, int] | None = None
    ) -> np.ndarray:
        """``features @ weights + bias`` on the finest grid: each part is projected on
        its own grid (in row chunks, so float16 memmaps are never copied whole) and the
        projections bilinearly upsampled and added.

        Parameters
        ----------
        weights : (dim, m) ndarray
            Rows in the order of the parts' features.
        bias : (m,) ndarray
        rows : (int, int), optional
            Only the finest-grid rows ``[rows[0], rows[1])`` (each coarser part is read
            with one cell of context, so a band equals that slice of the whole).

        Returns
        -------
        projected : (ceil(H / s), ceil(W / s), m) float32 ndarray
            ``s`` = :attr:`stride`; ``rows[1] - rows[0]`` rows when ``rows`` is given.
        """
        if weights.shape[0] != self.dim:
            raise ValueError(f"weights has {weights.shape[0]} rows for {self.dim} features")
        shape = grid_shape(self.shape, self.stride)
        g0, g1 = (0, shape[0]) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= g0 < g1 <= shape[0]:
            raise ValueError(f"rows must lie in 0..{shape[0]}, got {rows}")
        total = np.zeros((g1 - g0, shape[1], weights.shape[1]), dtype=np.float32)
        start = 0
        for part in self.parts:
            dim = part.data.shape[2]
            w = np.ascontiguousarray(weights[start : start + dim], dtype=np.float32)
            start += dim
            factor = part.stride // self.stride
            if part.stride % self.stride:  # a non-integer ratio: resample all, then cut
                p0, p1, top, bottom = 0, part.data.shape[0], 0, shape[0]
            else:
                p0 = max(g0 // factor - 1, 0)
                p1 = min(-(-g1 // factor) + 1, part.data.shape[0])
                top, bottom = p0 * factor, min(p1 * factor, shape[0])
            projected = np.empty((p1 - p0, part.data.shape[1], w.shape[1]), dtype=np.float32)
            for r0 in range(p0, p1, _ROW_CHUNK):
                chunk = np.asarray(part.data[r0 : min(r0 + _ROW_CHUNK, p1)], dtype=np.float32)
                projected[r0 - p0 : r0 - p0 + len(chunk)] = chunk @ w
            resampled = resample_grid(projected, part.stride, self.stride, (bottom - top, shape[1]))
            total += resampled[g0 - top : g1 - top]
        total += np.asarray(bias, dtype=np.float32)
        return total

    def band(self, rows: tuple[int, int]) -> FeatureBand:
        """The finest-grid rows ``[rows[0], rows[1])`` as features a head can predict on
        (:meth:`project` of a band is that slice of the whole image's projection)."""
        return FeatureBand(self, (int(rows[0]), int(rows[1])))

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Features at pixels ``(rows[k], cols[k])``, bilinearly interpolated on each
        part's grid: float32 ``(n, dim)``."""
        rows = np.asarray(rows, dtype=np.float64)
        cols = np.asarray(cols, dtype=np.float64)
        return np.concatenate([sample_grid(p.data, p.stride, rows, cols) for p in self.parts], 1)


@dataclass(frozen=True)
class FeatureBand:
    """A horizontal band of an image's features (:meth:`PixelFeatures.band`): heads
    predict a big image band by band, so no whole-grid float array is allocated."""

    features: PixelFeatures
    rows: tuple[int, int]
    """Finest-grid rows ``[start, stop)``."""

    @property
    def shape(self) -> tuple[int, int]:
        """Pixel ``(rows, cols)`` the band covers."""
        s = self.features.stride
        top = self.rows[0] * s
        return min(self.rows[1] * s, self.features.shape[0]) - top, self.features.shape[1]

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Features at pixels of the band (rows relative to its top)."""
        offset = self.rows[0] * self.features.stride
        return self.features.sample(np.asarray(rows, dtype=np.float64) + offset, cols)

    def project(self, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        return self.features.project(weights, bias, rows=self.rows)


def sample_grid(data: np.ndarray, stride: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples of a stride-``stride`` grid at pixel coordinates: ``(n, dim)``
    float32 (half-pixel centres, clamped at the edges)."""
    out = np.zeros((len(rows), data.shape[2]), dtype=np.float32)
    r = np.clip((rows + 0.5) / stride - 0.5, 0, data.shape[0] - 1)
    c = np.clip((cols + 0.5) / stride - 0.5, 0, data.shape[1] - 1)
    r0, c0 = np.floor(r).astype(np.intp), np.floor(c).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, data.shape[0] - 1), np.minimum(c0 + 1, data.shape[1] - 1)
    wr, wc = (r - r0).astype(np.float32)[:, None], (c - c0).astype(np.float32)[:, None]
    for rr, cc, weight in (
        (r0, c0, (1 - wr) * (1 - wc)),
        (r0, c1, (1 - wr) * wc),
        (r1, c0, wr * (1 - wc)),
        (r1, c1, wr * wc),
    ):
        out += weight * np.asarray(data[rr, cc], dtype=np.float32)
    return out


def part_stride(part: str, strides: Mapping[str, int] | None = None) -> int:
    """The grid stride of one part: ``strides[part]`` or :data:`PART_STRIDES`."""
    stride = (strides or {}).get(part, PART_STRIDES[part])
    if stride not in (1, 2, 4, 8, 16) or (stride == 1 and part != FILTERS):
        raise ValueError(f"stride of {part!r} must be one of 1, 2, 4, 8, 16, got {stride}")
    return stride


def part_dim(part: str) -> int:
    return FILTER_BANK_DIM if part == FILTERS else HYPERCOLUMN_DIMS[part]


def pixel_features(
    image: np.ndarray | ImageRegions,
    feature_set: str = DEFAULT_PIXEL_FEATURES,
    *,
    channel_axis: int | None = None,
    strides: Mapping[str, int] | None = None,
    cache_dir: Path | None = None,
    weights_dir: Path | None = None,
    tile: int = TILE,
    threads: int = 2,
    outputs: Mapping[str, np.ndarray] | None = None,
    pixel_scale: int = 1,
) -> PixelFeatures:
    """All features of ``feature_set`` for one image, each part on its grid.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray, or ImageRegions
        Gray or colour image, any dtype (scaled to uint8 as the CNNs expect); or a big
        image read region by region (uint8 RGB regions; ``channel_axis`` ignored): only
        one tile with its margin is in memory at a time.
    feature_set : str
        Parts joined by ``+`` (see the module docstring); default
        ``'effnet-lite0+filters'``.
    channel_axis : int, optional
        Channel axis of a colour image (None: gray).
    strides : mapping, optional
        Grid stride per part (default :data:`PART_STRIDES`: filters 2, CNNs 4,
        DINOv2 8). Filters at 2 keep 10-20 px nuclei; CNN features are smooth at 4.
    cache_dir : Path, optional
        Where ONNX exports are cached (default ``<LOUPE_HOME>/cache/onnx``, as the
        image backbones).
    weights_dir : Path, optional
        Extra folder with weights files (DINOv2).
    tile : int
        Core tile side for big images (multiple of 32); tiles overlap by
        :func:`tile_margin` pixels.
    threads : int
        ONNX Runtime threads.
    outputs : mapping, optional
        Per part, a preallocated array of the part's grid shape (e.g. a float16 memmap
        from :class:`~loupe.features.pixel_cache.PixelFeatureCache`) to write into.
    pixel_scale : int
        1, or 2 for very big images: each tile is block-averaged by this factor before
        the parts see it, so every part costs a quarter and describes structures twice
        as large; ``strides`` (in full-resolution pixels) must be multiples of it
        (e.g. filters 4, CNNs 8), and tiles and margins grow by the same factor.

    Returns
    -------
    features : PixelFeatures
        Parts in the order of ``feature_set``; data float32 unless ``outputs`` says
        otherwise.

    Raises
    ------
    ValueError
        For an unknown feature set, a bad stride or a bad image shape.
    WeightsNotFound
        When a part's weights file is missing (DINOv2 without ``LOUPE_WEIGHTS``).
    """
    parts = parse_feature_set(feature_set)
    if tile % 32 or tile <= 0:
        raise ValueError(f"tile must be a positive multiple of 32, got {tile}")
    if pixel_scale not in (1, 2):
        raise ValueError(f"pixel_scale must be 1 or 2, got {pixel_scale}")
    rgb = to_rgb_uint8(image, channel_axis=channel_axis) if isinstance(image, np.ndarray) else image
    onnx_dir = Path(cache_dir) if cache_dir is not None else default_onnx_cache_dir()
    grids = []
    for part in parts:
        stride = part_stride(part, strides)
        if stride % pixel_scale:
            raise ValueError(f"stride of {part!r} ({stride}) must be a multiple of pixel_scale")
        fn = scaled(
            _part_fn(part, stride // pixel_scale, onnx_dir, weights_dir, threads), pixel_scale
        )
        target = None if outputs is None else outputs.get(part)
        data = map_tiles(
            rgb,
            fn,
            stride=stride,
            dim=part_dim(part),
            tile=tile * pixel_scale,
            margin=tile_margin() * pixel_scale,
            out=target,
        )
        grids.append(FeatureGrid(part, stride, data))
    return PixelFeatures((int(rgb.shape[0]), int(rgb.shape[1])), tuple(grids))


def _part_fn(
    part: str, stride: int, cache_dir: Path, weights_dir: Path | None, threads: int
) -> FeatureFn:
    if part == FILTERS:
        return lambda patch: filter_bank(patch, stride=stride, channel_axis=-1)
    if part == "dinov2-s":
        return lambda patch: dino_hypercolumn(
            patch, stride=stride, weights_dir=weights_dir, threads=threads
        )
    return lambda patch: cnn_hypercolumn(
        patch, part, stride=stride, cache_dir=cache_dir, weights_dir=weights_dir, threads=threads
    )
