"""PixelFeatureCache: float16 memmaps per item and part, computed once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.features.pixel_cache import PixelFeatureCache
from loupe.features.pixels import pixel_features


def test_cache_computes_once_and_maps_float16(
    coins: np.ndarray, tmp_path: Path, onnx_cache: Path
) -> None:
    cache = PixelFeatureCache(tmp_path / "pixels")
    assert cache.get("7", coins.shape) is None
    first = cache.get_or_compute("7", coins, cache_dir=onnx_cache)
    files = sorted(p.name for p in (tmp_path / "pixels" / "7").iterdir())
    assert files == ["effnet-lite0-s4.npy", "filters-s2.npy"]
    for part in first.parts:
        assert isinstance(part.data, np.memmap) and part.data.dtype == np.float16
    fresh = pixel_features(coins, cache_dir=onnx_cache)
    for cached, computed in zip(first.parts, fresh.parts, strict=True):
        np.testing.assert_allclose(cached.data, computed.data, rtol=2e-3, atol=2e-3)
    stamp = (tmp_path / "pixels" / "7" / "filters-s2.npy").stat().st_mtime_ns
    again = cache.get_or_compute("7", coins, cache_dir=onnx_cache)
    assert (tmp_path / "pixels" / "7" / "filters-s2.npy").stat().st_mtime_ns == stamp
    assert again.dim == first.dim
    # A subset of the parts is served from the same files.
    only = cache.get("7", coins.shape, "filters")
    assert only is not None and only.parts[0].data.shape == (152, 192, 24)
    cache.drop("7")
    assert cache.get("7", coins.shape) is None


def test_cache_rejects_unsafe_keys(tmp_path: Path) -> None:
    cache = PixelFeatureCache(tmp_path)
    for key in ("../x", "", "a/b", ".."):
        with pytest.raises(ValueError, match="key"):
            cache.path(key, "filters", 2)
