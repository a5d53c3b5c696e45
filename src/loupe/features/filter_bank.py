"""The gray-level filter bank of the pixel features, and image helpers.

scikit-image's ``multiscale_basic_features`` (intensity, edges, texture at 6 Gaussian
scales) on the luminance, computed at 1/2 resolution for grids of stride 2 or more:
at 1024 x 1024 that is 0.15-0.4 s on 2 cores instead of 3-6 s at full resolution.
"""

from __future__ import annotations

import numpy as np

from loupe.features.grids import block_mean

FILTER_BANK_DIM = 24


def grid_shape(shape: tuple[int, ...], stride: int) -> tuple[int, int]:
    """``(ceil(rows / stride), ceil(cols / stride))``: the feature grid of an image."""
    return -(-int(shape[0]) // stride), -(-int(shape[1]) // stride)


# --- helpers on images --------------------------------------------------------------------


def to_rgb_uint8(image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
    """Any 2-D image (gray or multichannel, any dtype) as ``(H, W, 3)`` uint8.

    Non-uint8 data is scaled by its 0.5 / 99.5 percentiles (robust to hot pixels in
    microscopy); one channel is repeated, more than three are cut to the first three.
    """
    data = np.asarray(image)
    if channel_axis is not None:
        data = np.moveaxis(data, channel_axis, -1)
    elif data.ndim != 2:
        raise ValueError(f"image has {data.ndim} dims: pass channel_axis for a colour image")
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ValueError(f"image must be 2-D with optional channels, got shape {image.shape}")
    if data.dtype != np.uint8:
        values = data.astype(np.float32)
        low, high = np.percentile(values, (0.5, 99.5))
        scale = 255.0 / max(float(high - low), 1e-6)
        data = np.clip((values - low) * scale, 0, 255).astype(np.uint8)
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    elif data.shape[2] == 2:
        data = np.concatenate([data, data[..., :1]], axis=2)
    return np.ascontiguousarray(data[..., :3])


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance of ``(H, W, 3)`` uint8 as float32 in 0..1."""
    weights = np.array([0.2125, 0.7154, 0.0721], dtype=np.float32) / np.float32(255.0)
    return np.asarray(rgb, dtype=np.float32) @ weights


# --- the filter bank ----------------------------------------------------------------------


def filter_bank(
    image: np.ndarray,
    *,
    stride: int = 2,
    sigma_min: float = 1.0,
    sigma_max: float = 32.0,
    channel_axis: int | None = None,
) -> np.ndarray:
    """Multi-scale gray-level filter bank (intensity, edges, texture) on the stride grid.

    The image is converted to luminance, averaged over 2 x 2 blocks when ``stride`` is 2
    or more (at 1/2 resolution the bank costs a quarter and loses only the finest
    scale), filtered with scikit-image's ``multiscale_basic_features`` at 6 Gaussian
    scales between ``sigma_min`` and ``sigma_max`` (in full-resolution pixels), and
    block-averaged down to the grid.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Gray or colour image, any dtype.
    stride : int
        Grid stride: 1, 2, 4, 8 or 16.
    sigma_min, sigma_max : float
        Smallest and largest Gaussian scale, in full-resolution pixels.
    channel_axis : int, optional
        The channel axis of a colour image (None: a gray image).

    Returns
    -------
    features : (ceil(H / stride), ceil(W / stride), 24) float32 ndarray
    """
    from skimage.feature import multiscale_basic_features

    if stride not in (1, 2, 4, 8, 16):
        raise ValueError(f"stride must be one of 1, 2, 4, 8, 16, got {stride}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    gray = _gray_of(image, channel_axis)
    scale = 1 if stride == 1 else 2
    work = block_mean(gray, scale)
    features = multiscale_basic_features(
        work,
        sigma_min=sigma_min / scale,
        sigma_max=sigma_max / scale,
        num_sigma=6,
        workers=1,  # one OpenMP/thread pool at a time on a 2-core box
    )
    features = block_mean(features, stride // scale)
    rows, cols = grid_shape(gray.shape, stride)
    return np.ascontiguousarray(features[:rows, :cols], dtype=np.float32)


def _gray_of(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    data = np.asarray(image)
    if channel_axis is None and data.ndim == 2:
        values = data.astype(np.float32)
        low, high = float(values.min()), float(values.max())
        return (values - low) / max(high - low, 1e-6)
    return to_gray(to_rgb_uint8(data, channel_axis=channel_axis))


def gradient_magnitude(image: np.ndarray, *, channel_axis: int | None = None) -> np.ndarray:
    """Gaussian gradient magnitude (sigma 1 px) of the luminance, float32 ``(H, W)``:
    the boundary map :func:`loupe.learn.points.extract_points` can weigh points by.
    Precompute it with the features."""
    from scipy import ndimage

    gray = _gray_of(image, channel_axis)
    return ndimage.gaussian_gradient_magnitude(gray, sigma=1.0).astype(np.float32)
