"""DeepZoom tiles: the pyramid's geometry, exact pixels, bounded memory, pyramid levels,
one display window for 16-bit images, and every other format through read_image."""

from __future__ import annotations

import math
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from loupe.media import tiles

ROWS, COLS = 9_000, 12_000
TILE = 512


def _pattern(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """The test image's pixels in rows r0:r1, cols c0:c1 (RGB, all positions distinct
    enough that a shifted or swapped tile cannot match)."""
    y = np.arange(r0, r1, dtype=np.int32)[:, None]
    x = np.arange(c0, c1, dtype=np.int32)[None, :]
    out = np.empty((r1 - r0, c1 - c0, 3), np.uint8)
    out[..., 0] = (y * 7 + x) % 256
    out[..., 1] = (x // 3 + y // 5) % 256
    out[..., 2] = (y // 512 * 24 + x // 512) % 256
    return out


def _tiles(rows: int, cols: int) -> Iterator[np.ndarray]:
    for r in range(0, rows, TILE):
        for c in range(0, cols, TILE):
            yield _pattern(r, r + TILE, c, c + TILE)


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiles") / "slide.tif"
    tifffile.imwrite(
        path,
        _tiles(ROWS, COLS),
        shape=(ROWS, COLS, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        compression="zstd",
        compressionargs={"level": 1},
        bigtiff=True,
        photometric="rgb",
    )
    return path


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    tiles.clear_cache()
    yield
    tiles.clear_cache()


def test_deepzoom_levels_follow_the_convention() -> None:
    levels = tiles.deepzoom_levels(ROWS, COLS)
    assert len(levels) == math.ceil(math.log2(COLS)) + 1 == 15
    assert levels[0] == (1, 1)
    assert levels[-1] == (ROWS, COLS)
    assert levels[-2] == (4500, 6000)
    assert levels[-4] == (1125, 1500)
    assert tiles.deepzoom_levels(1, 1) == [(1, 1)]
    assert tiles.deepzoom_levels(3, 5)[-1] == (3, 5)
    # 254-pixel tiles with one pixel of overlap on inner edges only.
    assert tiles.tile_region((ROWS, COLS), 0, 0) == (0, 255, 0, 255)
    assert tiles.tile_region((ROWS, COLS), 3, 2) == (507, 763, 761, 1017)
    last_col, last_row = math.ceil(COLS / 254) - 1, math.ceil(ROWS / 254) - 1
    assert tiles.tile_region((ROWS, COLS), last_col, last_row) == (
        last_row * 254 - 1,
        ROWS,
        last_col * 254 - 1,
        COLS,
    )
    with pytest.raises(ValueError, match="outside"):
        tiles.tile_region((ROWS, COLS), last_col + 1, 0)
    xml = tiles.dzi_xml(ROWS, COLS)
    assert 'TileSize="254" Overlap="1" Format="jpeg"' in xml
    assert f'<Size Width="{COLS}" Height="{ROWS}"/>' in xml


@pytest.mark.parametrize(("col", "row"), [(0, 0), (10, 7), (20, 15), (47, 35)])
def test_full_resolution_tiles_are_the_source_pixels(big_tiff: Path, col: int, row: int) -> None:
    level = len(tiles.deepzoom_levels(ROWS, COLS)) - 1
    got = tiles.read_tile(big_tiff, level, col, row)
    r0, r1, c0, c1 = tiles.tile_region((ROWS, COLS), col, row)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _pattern(r0, r1, c0, c1))


def test_a_tile_decodes_a_few_source_tiles_not_the_image(big_tiff: Path) -> None:
    level = len(tiles.deepzoom_levels(ROWS, COLS)) - 1
    tiles.read_tile(big_tiff, level, 1, 1)  # warm imports and tifffile's decoder cache
    tracemalloc.start()
    try:
        for col, row in [(5, 5), (30, 20), (46, 34)]:
            tiles.read_tile(big_tiff, level, col, row)
        # a coarser level reads a region of 4 x 4 tiles' worth, then shrinks it
        tiles.read_tile(big_tiff, level - 2, 3, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak {peak / 1e6:.1f} MB; the image is {ROWS * COLS * 3 / 1e6:.0f} MB"


def test_coarse_levels_are_the_area_average(big_tiff: Path) -> None:
    levels = tiles.deepzoom_levels(ROWS, COLS)
    level = len(levels) - 3  # a quarter of the size
    got = tiles.read_tile(big_tiff, level, 2, 1).astype(np.float64)
    r0, r1, c0, c1 = tiles.tile_region(levels[level], 2, 1)
    source = _pattern(r0 * 4, r1 * 4, c0 * 4, c1 * 4).astype(np.float64)
    expected = source.reshape(r1 - r0, 4, c1 - c0, 4, 3).mean(axis=(1, 3))
    # the red and green channels vary fast (a box mean is all that fits); blue is per tile
    assert np.abs(got - expected).mean() < 1.0
    whole = tiles.read_tile(big_tiff, 0, 0, 0)
    assert whole.shape == (1, 1, 3)
    small = tiles.read_tile(big_tiff, 9, 0, 0)  # 282 x 375: one overview, two tiles wide
    assert small.shape == (255, 255, 3)


def _pyramid(path: Path) -> Path:
    """Level 0 holds 10, level 1 (half size, SubIFD) holds 200: tiles tell which was read."""
    side = 4096
    with tifffile.TiffWriter(path) as writer:
        writer.write(
            np.full((side, side), 10, np.uint8),
            tile=(256, 256),
            subifds=1,
            photometric="minisblack",
        )
        writer.write(
            np.full((side // 2, side // 2), 200, np.uint8),
            tile=(256, 256),
            subfiletype=1,
            photometric="minisblack",
        )
    return path


def test_pyramid_levels_are_used_when_present(tmp_path: Path) -> None:
    path = _pyramid(tmp_path / "pyramid.tif")
    top = len(tiles.deepzoom_levels(4096, 4096)) - 1
    assert (tiles.read_tile(path, top, 3, 3) == 10).all()  # full size: level 0
    assert (tiles.read_tile(path, top - 1, 3, 3) == 200).all()  # half size: the SubIFD


def test_16_bit_tiles_share_one_window(tmp_path: Path) -> None:
    # Left half dim (100..200), right half bright (3000..4000): per-tile windowing
    # would stretch both to full black..white.
    image = np.zeros((600, 600), np.uint16)
    image[:, :300] = np.linspace(100, 200, 300, dtype=np.uint16)[None, :]
    image[:, 300:] = np.linspace(3000, 4000, 300, dtype=np.uint16)[None, :]
    path = tmp_path / "sixteen.tif"
    tifffile.imwrite(path, image, tile=(256, 256))
    top = len(tiles.deepzoom_levels(600, 600)) - 1
    left = tiles.read_tile(path, top, 0, 0)
    right = tiles.read_tile(path, top, 2, 0)
    assert left.shape[2] == 3
    assert left.max() < 40  # dim stays dim
    assert right.min() > 150  # bright stays bright


def test_other_formats_and_strips(tmp_path: Path) -> None:
    rgb = _pattern(0, 700, 0, 900)
    png = tmp_path / "a.png"
    Image.fromarray(rgb).save(png)
    strips = tmp_path / "strips.tif"
    tifffile.imwrite(strips, rgb, rowsperstrip=64, compression="zlib")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, rgb)  # uncompressed and contiguous: memory-mapped
    top = len(tiles.deepzoom_levels(700, 900)) - 1
    for path in (png, strips, plain):
        got = tiles.read_tile(path, top, 2, 1)
        np.testing.assert_array_equal(got, rgb[253:509, 507:763])
        edge = tiles.read_tile(path, top, 3, 2)
        np.testing.assert_array_equal(edge, rgb[507:700, 761:900])
    with pytest.raises(ValueError, match="level"):
        tiles.read_tile(png, top + 1, 0, 0)
    jpeg = tiles.tile_jpeg(png, top, 0, 0)
    assert jpeg[:2] == b"\xff\xd8"
