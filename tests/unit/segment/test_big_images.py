"""Big-image pieces of 2-D segmentation: features from images read region by region,
band-by-band projection, band-by-band upsampling of probability maps, and labels
sampled tile by tile; each equals the whole-image computation."""

from __future__ import annotations

from typing import Any

import numpy as np

from loupe.features.pixels import FeatureGrid, PixelFeatures, pixel_features
from loupe.features.tiling import _shrink_uint8
from loupe.learn.pixel_heads import training_pixels
from loupe.services.segments import files, pixels


class Regions:
    """An ndarray seen only through region reads (as a big TIFF is), recording the
    largest region asked for."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.shape = image.shape
        self.largest = 0

    def __getitem__(self, key: Any) -> np.ndarray:
        out = self.image[key]
        self.largest = max(self.largest, out.shape[0] * out.shape[1])
        return np.array(out)


def test_features_from_regions_equal_the_whole_image_ones() -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((1100, 900, 3)) * 255).astype(np.uint8)
    regions = Regions(image)
    whole = pixel_features(image, "filters", channel_axis=-1, tile=256)
    tiled = pixel_features(regions, "filters", tile=256)
    assert np.array_equal(whole.parts[0].data, tiled.parts[0].data)
    assert regions.largest < image.shape[0] * image.shape[1] / 2  # never read whole


def test_half_resolution_features_are_the_shrunk_image_ones() -> None:
    rng = np.random.default_rng(1)
    image = (rng.random((700, 500, 3)) * 255).astype(np.uint8)
    coarse = pixel_features(
        Regions(image), "filters", strides={"filters": 4}, tile=256, pixel_scale=2
    )
    small = pixel_features(_shrink_uint8(image, 2), "filters", channel_axis=-1, tile=128)
    assert coarse.parts[0].stride == 4 and coarse.parts[0].data.shape == (175, 125, 24)
    np.testing.assert_allclose(coarse.parts[0].data, small.parts[0].data, atol=1e-5)


def test_band_projection_equals_the_whole_projection() -> None:
    rng = np.random.default_rng(2)
    features = PixelFeatures(
        (99, 80),
        (
            FeatureGrid("filters", 2, rng.random((50, 40, 3)).astype(np.float16)),
            FeatureGrid("effnet-lite0", 4, rng.random((25, 20, 5)).astype(np.float16)),
            FeatureGrid("dinov2-s", 8, rng.random((13, 10, 2)).astype(np.float16)),
        ),
    )
    weights, bias = rng.random((10, 3)), rng.random(3)
    whole = features.project(weights, bias)
    for rows in [(0, 7), (7, 13), (13, 50), (3, 4), (49, 50), (0, 50)]:
        band = features.band(rows)
        np.testing.assert_allclose(band.project(weights, bias), whole[rows[0] : rows[1]], atol=1e-5)
    assert features.band((7, 13)).shape == (12, 80)


def test_probability_rows_equal_the_whole_upsampling() -> None:
    rng = np.random.default_rng(3)
    proba = (rng.random((50, 41, 3)) * 255).astype(np.uint8)
    pmap = files.ProbabilityMap(proba, np.array([0, 1, 2]), 2, (99, 81), 1)
    whole = pmap.pixels()
    for start, stop in [(0, 10), (10, 30), (30, 99), (2, 3), (98, 99)]:
        np.testing.assert_allclose(pmap.pixel_rows(start, stop), whole[start:stop], atol=1e-6)


def test_big_labels_are_sampled_tile_by_tile_like_the_whole_image() -> None:
    shape = (4500, 4000)  # over BIG_PIXELS: labelled in tiles of LABEL_TILE
    assert files.is_big(shape)
    data = {
        "points": [
            {"x": 2047.0, "y": 2048.0, "value": 1},  # on a tile corner
            {"x": 10.0, "y": 4490.0, "value": 0},
            {"x": 3999.0, "y": 0.0, "value": 1},
        ],
        "scribbles": [{"value": 0, "width": 9, "path": [[100, 2000], [3900, 2100]]}],
    }
    rr, cc, values, groups = pixels.training_samples(
        None,  # type: ignore[arg-type]  # no mask: settings are not read
        1,
        shape,
        data,
        max_per_class=10**9,
        seed=0,
    )
    labels = pixels.sparse_labels(None, 1, shape, data)  # type: ignore[arg-type]
    wr, wc, wv = training_pixels(labels)
    got = sorted(zip(rr.tolist(), cc.tolist(), values.tolist(), strict=True))
    assert got == sorted(zip(wr.tolist(), wc.tolist(), wv.tolist(), strict=True))
    assert len(np.unique(groups)) >= 4  # the click disks and the (cut) stroke

    few_r, _, few_v, _ = pixels.training_samples(
        None,  # type: ignore[arg-type]
        1,
        shape,
        data,
        max_per_class=50,
        seed=0,
    )
    expected = np.minimum(np.bincount(wv), 50).tolist()  # class 1: two and a half disks
    assert np.bincount(few_v).tolist() == expected and len(few_r) == sum(expected)


def test_block_rle_and_label_values_equal_the_whole_mask_ones() -> None:
    from loupe.services.segments.exports import class_rle, rle_counts

    rng = np.random.default_rng(4)
    mask = (rng.random((37, 23)) * 3).astype(np.uint8)
    mask[:, :5] = 0  # a class-free margin for the box
    assert files.label_values(mask, block_pixels=50) == [0, 1, 2]
    for value in (1, 2, 7):
        counts, box = class_rle(mask, value, block_pixels=40)  # one column per block
        binary = mask == value
        assert counts == rle_counts(binary)
        assert sum(counts[1::2]) == int(binary.sum())
        if binary.any():
            rows, cols = np.nonzero(binary)
            assert box == [
                int(cols.min()),
                int(rows.min()),
                int(cols.max() - cols.min() + 1),
                int(rows.max() - rows.min() + 1),
            ]
        else:
            assert box == [0, 0, 0, 0]
    ones = np.ones((4, 6), np.uint8)  # a mask starting with the class: a leading 0 run
    assert class_rle(ones, 1, block_pixels=8)[0] == rle_counts(ones == 1) == [0, 24]
