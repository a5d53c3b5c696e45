"""``classic``: hand-crafted colour and texture features with scikit-image (no torch).

On the 128 x 128 centre square (shorter side resized to 128), five groups, each
L2-normalised on its own before concatenation so that no group dominates by its length
(the whole vector is then L2-normalised again):

=========================  ====  =====================================================
group                      size  what
=========================  ====  =====================================================
RGB histograms               48  16 bins per channel, fractions of pixels
HSV histograms               32  hue 16 bins, saturation 8, value 8
HOG                         324  9 orientations, 32 px cells, 2 x 2 blocks (L2-Hys)
uniform LBP histograms       28  (P=8, R=1) 10 bins + (P=16, R=2) 18 bins
GLCM texture                 48  contrast, homogeneity, energy, correlation at distances
                                 1, 2, 4 and angles 0, 45, 90, 135 degrees (32 levels)
=========================  ====  =====================================================
"""

from __future__ import annotations

import numpy as np

from loupe.features.base import Backbone, l2_normalise
from loupe.features.registry import register_backbone

SIZE = 128
_RGB_BINS = 16
_HSV_BINS = (16, 8, 8)
_HOG_CELL = 32
_LBP_SETTINGS = ((8, 1.0), (16, 2.0))
_GLCM_LEVELS = 32
_GLCM_DISTANCES = (1, 2, 4)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")

CLASSIC_DIM = 48 + 32 + 324 + 28 + 48


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _histogram(values: np.ndarray, bins: int, upper: float) -> np.ndarray:
    counts, _ = np.histogram(values, bins=bins, range=(0.0, upper))
    return counts / max(1, values.size)


def classic_features(rgb: np.ndarray) -> np.ndarray:
    """The un-normalised-overall feature vector (float64, ``CLASSIC_DIM``) of a uint8
    ``(SIZE, SIZE, 3)`` image; each group is already unit length."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.feature import graycomatrix, graycoprops, hog, local_binary_pattern

    rgb_hist = np.concatenate([_histogram(rgb[..., c], _RGB_BINS, 256.0) for c in range(3)])
    hsv = rgb2hsv(rgb)
    hsv_hist = np.concatenate(
        [_histogram(hsv[..., c], bins, 1.0 + 1e-9) for c, bins in enumerate(_HSV_BINS)]
    )
    gray = rgb2gray(rgb)
    hog_vector = hog(
        gray,
        orientations=9,
        pixels_per_cell=(_HOG_CELL, _HOG_CELL),
        cells_per_block=(2, 2),
        block_norm="L2-Hys",
        feature_vector=True,
    )
    gray8 = np.rint(gray * 255.0).astype(np.uint8)
    lbp_parts = []
    for points, radius in _LBP_SETTINGS:
        codes = local_binary_pattern(gray8, points, radius, method="uniform")
        lbp_parts.append(_histogram(codes, points + 2, points + 2.0))
    levels = (gray8 // (256 // _GLCM_LEVELS)).astype(np.uint8)
    matrix = graycomatrix(
        levels, _GLCM_DISTANCES, _GLCM_ANGLES, levels=_GLCM_LEVELS, symmetric=True, normed=True
    )
    props = []
    for prop in _GLCM_PROPS:
        values = np.nan_to_num(graycoprops(matrix, prop).ravel(), nan=0.0)
        # Contrast grows with the square of grey-level differences: compress it.
        props.append(np.log1p(values) if prop == "contrast" else values)
    glcm = np.concatenate(props)
    groups = [rgb_hist, hsv_hist, hog_vector, np.concatenate(lbp_parts), glcm]
    return np.concatenate([_unit(np.asarray(g, dtype=np.float64)) for g in groups])


@register_backbone("classic")
class Classic(Backbone):
    """Colour histograms, HOG, LBP and GLCM texture (scikit-image); no weights."""

    dim = CLASSIC_DIM
    input_size = SIZE
    requires_torch = False
    description = "Colour histograms, HOG, LBP, GLCM texture (no neural network)"

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        return l2_normalise(np.stack([classic_features(image) for image in batch]))
