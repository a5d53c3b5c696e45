"""Huge TIFFs are probed and thumbnailed without ever decoding them whole."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from loupe.media import make_thumbnail, probe, read_image

SIDE = 12_000
TILE = 512
FULL_BYTES = SIDE * SIDE  # uint8


def _tiles(side: int, level: int = 0) -> Iterator[np.ndarray]:
    """Left half dark (20), right half bright (220), plus the pyramid level number so
    that a test can tell which level was read, and a stripe every 64 rows."""
    for _row in range(0, side, TILE):
        for col in range(0, side, TILE):
            columns = col + np.arange(TILE)
            tile = np.broadcast_to(np.where(columns < side // 2, 20, 220), (TILE, TILE))
            tile = (tile + level).astype(np.uint8)
            tile[::64, :] += 10
            yield tile


def _write_tiled(path: Path, *, pyramid_levels: int) -> Path:
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        writer.write(
            _tiles(SIDE),
            shape=(SIDE, SIDE),
            dtype=np.uint8,
            tile=(TILE, TILE),
            compression="zlib",
            subifds=pyramid_levels,
            photometric="minisblack",
        )
        for level in range(1, pyramid_levels + 1):
            side = SIDE // 2**level
            writer.write(
                _tiles(side, level),
                shape=(side, side),
                dtype=np.uint8,
                tile=(TILE, TILE),
                compression="zlib",
                subfiletype=1,
                photometric="minisblack",
            )
    return path


def _peak_bytes(action: Callable[[], object]) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, result


def _halves(jpeg: bytes) -> tuple[tuple[int, int], float, float]:
    with Image.open(io.BytesIO(jpeg)) as image:
        gray = np.asarray(image.convert("L"), dtype=np.float32)
        size = image.size
    half = gray.shape[1] // 2
    return size, float(gray[:, : half - 4].mean()), float(gray[:, half + 4 :].mean())


@pytest.fixture(scope="module")
def pyramid_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiled(tmp_path_factory.mktemp("big") / "pyramid.tif", pyramid_levels=3)


def test_pyramid_is_probed_from_headers(pyramid_tiff: Path) -> None:
    peak, _ = _peak_bytes(lambda: probe(pyramid_tiff))
    info = probe(pyramid_tiff)
    assert (info.shape, info.dtype, info.pages) == ((SIDE, SIDE), "uint8", 1)
    assert info.extra["pyramid_levels"] == 4
    assert info.extra["tiled"] is True
    assert info.extra["tile"] == [TILE, TILE]
    assert peak < FULL_BYTES // 50


def test_pyramid_thumbnail_reads_a_small_level(pyramid_tiff: Path) -> None:
    peak, jpeg = _peak_bytes(lambda: make_thumbnail(pyramid_tiff, size=256))
    assert isinstance(jpeg, bytes)
    size, dark, bright = _halves(jpeg)
    assert size == (256, 256)
    assert dark < 60 < 180 < bright  # content comes from the right place
    # the smallest level >= 256 px is 1500 x 1500 (2.25 MB); full res is 144 MB
    assert peak < FULL_BYTES // 40


def test_read_image_picks_the_smallest_adequate_level(pyramid_tiff: Path) -> None:
    level3 = read_image(pyramid_tiff, max_side=1500)  # exactly the 1500 px level
    assert (level3.shape, level3.dtype) == ((1500, 1500), np.uint8)
    assert (int(level3[1, 0]), int(level3[1, -1])) == (23, 223)
    level2 = read_image(pyramid_tiff, max_side=1501)  # 1500 is too small: 3000 px level
    assert (level2.shape, int(level2[1, 0])) == ((1501, 1501), 22)
    smaller = read_image(pyramid_tiff, max_side=1000)
    assert smaller.shape == (1000, 1000)


def test_tiled_tiff_without_pyramid_is_read_strided(tmp_path: Path) -> None:
    path = _write_tiled(tmp_path / "flat.tif", pyramid_levels=0)
    assert probe(path).extra["pyramid_levels"] == 1
    peak, jpeg = _peak_bytes(lambda: make_thumbnail(path, size=200))
    assert isinstance(jpeg, bytes)
    size, dark, bright = _halves(jpeg)
    assert size == (200, 200)
    assert dark < 60 < 180 < bright
    # every tile is decoded, but one at a time into a strided output
    assert peak < FULL_BYTES // 40


def test_uncompressed_strip_tiff_is_memory_mapped(tmp_path: Path) -> None:
    side = 6000
    path = tmp_path / "plain.tif"
    data = np.zeros((side, side), dtype=np.uint16)
    data[:, side // 2 :] = 50_000
    tifffile.imwrite(path, data, photometric="minisblack")
    del data
    peak, small = _peak_bytes(lambda: read_image(path, max_side=300))
    assert isinstance(small, np.ndarray)
    assert small.shape == (300, 300)
    assert small.dtype == np.uint16
    assert int(small[:, :140].max()) == 0
    assert int(small[:, 160:].min()) == 50_000
    assert peak < side * side * 2 // 20
