"""COCO compressed RLE of masks: the run lengths and the string pycocotools writes."""

from __future__ import annotations

import numpy as np

from loupe.services.segments.exports import rle_counts, rle_decode, rle_string


def test_counts_are_column_major_and_start_with_zeros() -> None:
    mask = np.array([[1, 0], [1, 1]], dtype=bool)
    # column-major: 1, 1, 0, 1 -> zero run of 0 first
    assert rle_counts(mask) == [0, 2, 1, 1]
    assert rle_counts(np.zeros((2, 3), bool)) == [6]


def test_known_pycocotools_string() -> None:
    # pycocotools.mask.encode of a 4x4 mask with a 2x2 square at rows 1-2, cols 1-2
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert rle_counts(mask) == [5, 2, 2, 2, 5]
    assert rle_string([5, 2, 2, 2, 5]) == "52203"


def test_roundtrip_on_a_real_mask() -> None:
    import skimage.data
    from skimage.filters import threshold_otsu

    coins = skimage.data.coins()
    mask = coins > threshold_otsu(coins)
    text = rle_string(rle_counts(mask))
    assert np.array_equal(rle_decode(text, mask.shape), mask)
