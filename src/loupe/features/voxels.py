"""Per-voxel features of a 3-D volume: a small float32 filter bank for interactive segmentation.

The bank (intensity, then per scale: Gaussian, gradient magnitude, Laplacian of Gaussian)
is what an ilastik-style voxel classifier learns from. It is computed once per volume,
slab by slab along z, so the peak memory is the output plus one padded slab; the output
can be a memory-mapped array (the per-volume cache).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

DEFAULT_SIGMAS: tuple[float, ...] = (1.0, 2.0, 4.0)
_TRUNCATE = 4.0  # scipy.ndimage's default kernel radius, in sigmas
FILTERS = ("gaussian", "gradient_magnitude", "laplace")


def feature_names(sigmas: Sequence[float] = DEFAULT_SIGMAS) -> list[str]:
    """Names of the feature channels, in order."""
    return ["intensity"] + [f"{name}_s{sigma:g}" for sigma in sigmas for name in FILTERS]


def normalisation(volume: np.ndarray) -> tuple[float, float]:
    """(offset, scale) that maps the 1st..99th percentile of ``volume`` to about 0..1."""
    sample = np.asarray(volume)[::2, ::2, ::2] if min(volume.shape) > 8 else np.asarray(volume)
    low, high = (float(v) for v in np.percentile(sample, [1.0, 99.0]))
    scale = high - low if high > low else 1.0
    return low, scale


def voxel_features(
    volume: np.ndarray,
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    spacing: Sequence[float] | None = None,
    slab: int = 32,
    workers: int = 1,
    out: np.ndarray | None = None,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """The filter bank of a (z, y, x) volume.

    Parameters
    ----------
    volume : ndarray, shape (z, y, x)
        Intensities of any real dtype.
    sigmas : sequence of float, keyword-only
        Filter scales in voxels (of the finest axis when ``spacing`` is given).
    spacing : (dz, dy, dx) mm, keyword-only
        When given, the scales are scaled per axis so that the filters are isotropic
        in millimetres.
    slab : int, keyword-only
        Number of z planes computed at once (plus a halo of the kernel radius on each
        side); bounds the working memory. The result does not depend on it.
    workers : int, keyword-only
        Slabs computed in parallel (scipy.ndimage releases the GIL).
    out : ndarray, shape (z, y, x, F), float32, keyword-only
        Where to write the features (e.g. a ``np.memmap``); allocated when None.
    progress : callable(fraction), keyword-only
        Called after each slab.

    Returns
    -------
    features : ndarray, shape (z, y, x, F), float32
        ``F = 1 + 3 * len(sigmas)``; channel names from :func:`feature_names`. The
        intensity is normalised with :func:`normalisation` (1st..99th percentile).
    """
    from scipy import ndimage

    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"volume must be 3-D (z, y, x), got shape {array.shape}")
    if np.iscomplexobj(array) or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"volume must be real-valued, got dtype {array.dtype}")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be positive, got {tuple(sigmas)}")
    if slab < 1:
        raise ValueError(f"slab must be >= 1, got {slab}")
    per_axis = _per_axis(spacing)
    n_features = 1 + len(FILTERS) * len(sigmas)
    shape = (*array.shape, n_features)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
    offset, scale = normalisation(array)
    halo = max(int(_TRUNCATE * s * f + 0.5) for s in sigmas for f in per_axis) + 2
    steps = tuple(np.float32(1.0 / f) for f in per_axis)  # voxel size, finest axis = 1
    depth = array.shape[0]
    starts = list(range(0, depth, slab))
    done = 0

    def one_slab(start: int) -> None:
        stop = min(depth, start + slab)
        low, high = max(0, start - halo), min(depth, stop + halo)
        block = (array[low:high].astype(np.float32) - np.float32(offset)) / np.float32(scale)
        keep = slice(start - low, start - low + (stop - start))
        target = out[start:stop]
        target[..., 0] = block[keep]
        channel = 1
        for sigma in sigmas:
            axis_sigmas = tuple(sigma * f for f in per_axis)
            smooth = ndimage.gaussian_filter(block, axis_sigmas, mode="reflect")
            target[..., channel] = smooth[keep]
            # Finite differences of the smoothed block: one Gaussian per scale instead of
            # the nine separable passes of gaussian_gradient_magnitude / gaussian_laplace.
            squared = np.zeros_like(smooth)
            for axis, step in enumerate(steps):
                squared += np.square(np.gradient(smooth, step, axis=axis))
            target[..., channel + 1] = np.sqrt(squared[keep]) * np.float32(sigma)
            laplace = ndimage.laplace(smooth, mode="reflect")
            target[..., channel + 2] = laplace[keep] * np.float32(sigma * sigma)
            channel += 3

    def finished() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done / len(starts))

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(one_slab, start) for start in starts]:
                future.result()
                finished()
    else:
        for start in starts:
            one_slab(start)
            finished()
    return out


def cached_voxel_features(
    volume: np.ndarray,
    path: str | os.PathLike[str],
    *,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    spacing: Sequence[float] | None = None,
    workers: int = 1,
    progress: Callable[[float], None] | None = None,
) -> np.ndarray:
    """:func:`voxel_features` cached in a ``.npy`` file, returned memory-mapped read-only.

    A cache file of the right shape is reused; otherwise the features are computed into
    a temporary memory-mapped file that replaces ``path`` when complete (so a crash never
    leaves a half-written cache). The caller names the file per volume and settings.
    """
    target = Path(path)
    shape = (*np.shape(volume), 1 + len(FILTERS) * len(sigmas))
    if target.exists():
        cached = np.load(target, mmap_mode="r")
        if cached.shape == shape and cached.dtype == np.float32:
            return cached
    target.parent.mkdir(parents=True, exist_ok=True)
    # one partial file per process and thread: two requests may compute the same cache
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.partial")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    try:
        voxel_features(
            volume, sigmas=sigmas, spacing=spacing, workers=workers, out=out, progress=progress
        )
        out.flush()
        del out
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return np.load(target, mmap_mode="r")


def _per_axis(spacing: Sequence[float] | None) -> tuple[float, float, float]:
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(v) for v in spacing)
    if len(values) != 3 or not all(v > 0 and math.isfinite(v) for v in values):
        raise ValueError(f"spacing must be three positive numbers (dz, dy, dx), got {spacing}")
    finest = min(values)
    return (finest / values[0], finest / values[1], finest / values[2])


def feature_bytes(shape: Sequence[int], *, sigmas: Sequence[float] = DEFAULT_SIGMAS) -> int:
    """Bytes of the feature array of a volume of ``shape`` (z, y, x)."""
    return math.prod(shape) * (1 + len(FILTERS) * len(sigmas)) * 4
