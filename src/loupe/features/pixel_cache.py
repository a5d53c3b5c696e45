"""A folder of memory-mapped per-pixel feature grids: one ``.npy`` per item and set.

The file ``<folder>/<item key>/<part>-s<stride>.npy`` holds one part of a feature set
(``filters``, ``effnet-lite0``, ...) as a float16 ``(grid rows, grid cols, dim)``
array in NumPy's ``.npy`` format: the header records shape and dtype, so
:func:`numpy.load` with ``mmap_mode`` opens it without reading it. float16 halves the
disk and page-cache footprint; heads standardise features, so ~3 significant digits
are plenty. Files are written under a temporary name and renamed: a reader never sees
half a file, and two writers of the same item just race to the same content.

The caller (the service layer) chooses the folder and the item keys (item id or the
image's sha256); nothing here knows about projects or the database.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from loupe.features.pixels import (
    DEFAULT_PIXEL_FEATURES,
    FeatureGrid,
    ImageRegions,
    PixelFeatures,
    grid_shape,
    parse_feature_set,
    part_dim,
    part_stride,
    pixel_features,
)

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class PixelFeatureCache:
    """Memory-mapped float16 feature grids under ``folder``, one file per item and part.

    Parameters
    ----------
    folder : Path
        Root folder (created on first write).

    Examples
    --------
    >>> cache = PixelFeatureCache(tmp / "pixels")  # doctest: +SKIP
    >>> features = cache.get_or_compute("42", image, "effnet-lite0+filters")  # doctest: +SKIP
    >>> [(p.name, p.stride, p.data.shape, p.data.dtype) for p in features.parts]  # doctest: +SKIP
    [('effnet-lite0', 4, (256, 256, 192), dtype('float16')),
     ('filters', 2, (512, 512, 24), dtype('float16'))]
    """

    dtype = np.dtype(np.float16)

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: str, part: str, stride: int) -> Path:
        """Where the grid of item ``key`` for one ``part`` at ``stride`` lives."""
        if not _SAFE.match(key) or key in (".", ".."):
            raise ValueError(f"key must be 1-128 chars of [A-Za-z0-9._-], got {key!r}")
        (name,) = parse_feature_set(part)
        return self.folder / key / f"{name}-s{int(stride)}.npy"

    def get(
        self,
        key: str,
        shape: tuple[int, int],
        feature_set: str = DEFAULT_PIXEL_FEATURES,
        *,
        strides: Mapping[str, int] | None = None,
    ) -> PixelFeatures | None:
        """The cached features of an image of ``shape`` (rows, cols) as read-only
        memmaps, or None when a part is absent, unreadable or of the wrong shape."""
        grids = []
        for part in parse_feature_set(feature_set):
            stride = part_stride(part, strides)
            data = self._load(key, part, stride, (*grid_shape(shape, stride), part_dim(part)))
            if data is None:
                return None
            grids.append(FeatureGrid(part, stride, data))
        return PixelFeatures((int(shape[0]), int(shape[1])), tuple(grids))

    def _load(
        self, key: str, part: str, stride: int, expected: tuple[int, ...]
    ) -> np.ndarray | None:
        path = self.path(key, part, stride)
        if not path.is_file():
            return None
        try:
            data = np.load(path, mmap_mode="r")
        except (OSError, ValueError):  # truncated or foreign file: compute again
            return None
        return data if data.shape == expected and data.dtype == self.dtype else None

    def get_or_compute(
        self,
        key: str,
        image: np.ndarray | ImageRegions,
        feature_set: str = DEFAULT_PIXEL_FEATURES,
        *,
        channel_axis: int | None = None,
        strides: Mapping[str, int] | None = None,
        cache_dir: Path | None = None,
        weights_dir: Path | None = None,
        pixel_scale: int = 1,
    ) -> PixelFeatures:
        """The cached features of ``image``; the missing parts are computed with
        :func:`~loupe.features.pixels.pixel_features` tile by tile straight into
        float16 memmaps, each published atomically. ``image`` may be an
        :class:`~loupe.features.pixels.ImageRegions` (read tile by tile, never whole);
        ``pixel_scale`` is passed on (use a key of its own for each scale).

        Returns
        -------
        features : PixelFeatures
            Every part a read-only float16 memmap.
        """
        if channel_axis is None or not isinstance(image, np.ndarray):
            shape = tuple(image.shape[:2])
        else:
            shape = _spatial_shape(image, channel_axis)
        shape2 = (int(shape[0]), int(shape[1]))
        missing = []
        for part in parse_feature_set(feature_set):
            stride = part_stride(part, strides)
            if self._load(key, part, stride, (*grid_shape(shape2, stride), part_dim(part))) is None:
                missing.append(part)
        if missing:
            self._compute(
                key,
                image,
                missing,
                shape2,
                channel_axis,
                strides,
                cache_dir,
                weights_dir,
                pixel_scale,
            )
        found = self.get(key, shape2, feature_set, strides=strides)
        if found is None:  # pragma: no cover - only if the folder is changed under us
            raise OSError(f"cached features of {key!r} vanished from {self.folder}")
        return found

    def _compute(
        self,
        key: str,
        image: np.ndarray | ImageRegions,
        parts: list[str],
        shape: tuple[int, int],
        channel_axis: int | None,
        strides: Mapping[str, int] | None,
        cache_dir: Path | None,
        weights_dir: Path | None,
        pixel_scale: int = 1,
    ) -> None:
        tmp: dict[str, Path] = {}
        outputs: dict[str, np.ndarray] = {}
        try:
            for part in parts:
                stride = part_stride(part, strides)
                path = self.path(key, part, stride)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp[part] = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.npy")
                outputs[part] = np.lib.format.open_memmap(
                    tmp[part],
                    mode="w+",
                    dtype=self.dtype,
                    shape=(*grid_shape(shape, stride), part_dim(part)),
                )
            pixel_features(
                image,
                "+".join(parts),
                channel_axis=channel_axis,
                strides=strides,
                cache_dir=cache_dir,
                weights_dir=weights_dir,
                outputs=outputs,
                pixel_scale=pixel_scale,
            )
            for part, memmap in outputs.items():
                memmap.flush()  # type: ignore[attr-defined]
                os.replace(tmp[part], self.path(key, part, part_stride(part, strides)))
        finally:
            outputs.clear()
            for path in tmp.values():
                path.unlink(missing_ok=True)

    def drop(self, key: str) -> None:
        """Forget every cached grid of item ``key``."""
        folder = self.path(key, "filters", 1).parent
        if folder.is_dir():
            for file in folder.glob("*.npy"):
                file.unlink(missing_ok=True)
            folder.rmdir()


def _spatial_shape(image: np.ndarray, channel_axis: int) -> tuple[int, ...]:
    return tuple(np.delete(np.asarray(image.shape), channel_axis % image.ndim))
