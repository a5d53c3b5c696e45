"""The gray-level filter bank of the pixel features, and image helpers.

The features of scikit-image's ``multiscale_basic_features`` (intensity, edges, texture
at 6 Gaussian scales) on the luminance, computed in float32 with separable stencils at
1/2 resolution for grids of stride 2 or more.
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
    scale), filtered at 6 Gaussian scales between ``sigma_min`` and ``sigma_max`` (in
    full-resolution pixels), and block-averaged down to the grid. The features are
    those of scikit-image's ``multiscale_basic_features`` (per scale: the smoothed
    intensity, its Sobel gradient magnitude and the two Hessian eigenvalues, larger
    first), computed in float32 with separable stencils: equal to it within 1e-6.

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
    if stride not in (1, 2, 4, 8, 16):
        raise ValueError(f"stride must be one of 1, 2, 4, 8, 16, got {stride}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    gray = _gray_of(image, channel_axis)
    scale = 1 if stride == 1 else 2
    work = block_mean(gray, scale)
    sigmas = np.logspace(np.log2(sigma_min / scale), np.log2(sigma_max / scale), 6, base=2)
    # Channel-first while filtering: each feature is written in place, contiguously;
    # one transposing copy at the end (24 strided channel writes cost 4x as much).
    planes = np.empty((FILTER_BANK_DIM, *work.shape), dtype=np.float32)
    for index, sigma in enumerate(sigmas):
        _scale_features(work, float(sigma), planes[4 * index : 4 * index + 4])
    factor = stride // scale
    if factor > 1:
        planes = block_mean(planes.transpose(1, 2, 0), factor).transpose(2, 0, 1)
    rows, cols = grid_shape(gray.shape, stride)
    return np.ascontiguousarray(planes[:, :rows, :cols].transpose(1, 2, 0))


def _scale_features(work: np.ndarray, sigma: float, out: np.ndarray) -> None:
    """Write the smoothed intensity, its Sobel magnitude and the Hessian eigenvalues
    (larger first) at one scale into ``out`` ``(4, h, w)``, as scikit-image computes
    them (Gaussian ``mode='nearest'`` truncated at 4 sigma, Sobel ``mode='reflect'``,
    Hessian by repeated ``np.gradient``)."""
    from scipy import ndimage

    smooth = out[0]
    ndimage.gaussian_filter(work, sigma, mode="nearest", truncate=4.0, output=smooth)
    _sobel_magnitude(smooth, out[1])
    # Second derivatives: one np.gradient per axis (scikit-image takes all axes thrice).
    d_row, d_col = np.gradient(smooth)
    h_rr = np.gradient(d_row, axis=0)
    h_rc = np.gradient(d_row, axis=1)
    h_cc = np.gradient(d_col, axis=1)
    half = np.add(h_rr, h_cc, out=d_row)
    half *= np.float32(0.5)
    spread = np.subtract(h_rr, h_cc, out=d_col)
    spread *= np.float32(0.5)
    np.multiply(spread, spread, out=spread)
    np.multiply(h_rc, h_rc, out=h_rc)
    spread += h_rc
    np.sqrt(spread, out=spread)
    np.add(half, spread, out=out[2])
    np.subtract(half, spread, out=out[3])


def _sobel_magnitude(image: np.ndarray, out: np.ndarray) -> None:
    """``skimage.filters.sobel`` of a 2-D float32 image (``mode='reflect'``) into
    ``out``: the [1, 0, -1] difference along one axis, [1, 2, 1] / 4 smoothing along
    the other, ``sqrt((d_row**2 + d_col**2) / 2)``; slices instead of 2-D convolutions."""
    padded = np.pad(image, 1, mode="symmetric")  # scipy's 'reflect'
    quarter, half = np.float32(0.25), np.float32(0.5)
    diff = padded[2:, :] - padded[:-2, :]
    d_row = (diff[:, :-2] + diff[:, 2:]) * quarter + diff[:, 1:-1] * half
    diff = padded[:, 2:] - padded[:, :-2]
    d_col = (diff[:-2, :] + diff[2:, :]) * quarter + diff[1:-1, :] * half
    np.multiply(d_row, d_row, out=d_row)
    np.multiply(d_col, d_col, out=d_col)
    d_row += d_col
    d_row *= half
    np.sqrt(d_row, out=out)


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
