"""Point extraction: limits, determinism, and the round trip points -> head -> mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from loupe.features.grids import upsample_to_pixels
from loupe.features.pixels import gradient_magnitude, pixel_features
from loupe.learn.pixel_heads import (
    LogisticPixelHead,
    empty_labels,
    rasterize_clicks,
    training_set,
)
from loupe.learn.points import extract_points


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def _coins_model(coins: np.ndarray) -> tuple[object, np.ndarray]:
    features = pixel_features(coins, "filters")
    labels = empty_labels(coins.shape)
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, coins.shape[0], 60), rng.integers(0, coins.shape[1], 60)
    rasterize_clicks(labels, rows, cols, (coins[rows, cols] > 110).astype(int))
    head = LogisticPixelHead().fit(*training_set(features, labels))
    proba = upsample_to_pixels(head.predict_proba(features), features.stride, coins.shape)
    return features, proba


def test_points_respect_limits(coins: np.ndarray) -> None:
    _, proba = _coins_model(coins)
    edges = gradient_magnitude(coins)
    for max_points, min_distance, threshold in ((50, 10, 0.9), (300, 3, 0.8), (1000, 5, 0.95)):
        classes, rows, cols = extract_points(
            proba,
            max_points=max_points,
            min_distance=min_distance,
            confidence_threshold=threshold,
            gradient=edges,
        )
        assert classes.dtype == rows.dtype == cols.dtype == np.int64
        for value in (0, 1):
            mine = classes == value
            assert 0 < mine.sum() <= max_points
            assert (proba[rows[mine], cols[mine], value] >= threshold).all()
            points = np.stack([rows[mine], cols[mine]], 1)
            nearest = cKDTree(points).query(points, k=2)[0][:, 1]
            assert nearest.min() >= min_distance - 1e-9
    again = extract_points(proba, max_points=300, gradient=edges)
    np.testing.assert_array_equal(
        again[1], extract_points(proba, max_points=300, gradient=edges)[1]
    )


def test_points_spread_over_the_region_and_few_at_edges(coins: np.ndarray) -> None:
    _, proba = _coins_model(coins)
    edges = gradient_magnitude(coins)
    classes, rows, cols = extract_points(proba, max_points=200, gradient_weight=0.2, gradient=edges)
    fg_rows = rows[classes == 1]
    # Spread: the points of the coins class cover all coin rows of the image.
    coin_rows = np.nonzero((proba[..., 1] > 0.8).any(axis=1))[0]
    assert fg_rows.min() - coin_rows.min() < 15 and coin_rows.max() - fg_rows.max() < 15
    strong = edges[rows, cols] > np.quantile(edges, 0.95)
    assert strong.mean() < 0.35  # most points are not bunched at boundaries


def test_round_trip_reproduces_the_mask(coins: np.ndarray) -> None:
    features, proba = _coins_model(coins)
    mask = proba.argmax(axis=2) == 1
    classes, rows, cols = extract_points(proba, max_points=500, gradient=gradient_magnitude(coins))
    labels = rasterize_clicks(empty_labels(coins.shape), rows, cols, classes)
    head = LogisticPixelHead().fit(*training_set(features, labels))
    again = upsample_to_pixels(head.predict_proba(features), features.stride, coins.shape)
    assert dice(again.argmax(axis=2) == 1, mask) >= 0.92


def test_points_check_arguments() -> None:
    proba = np.full((10, 10, 2), 0.5, np.float32)
    assert all(len(a) == 0 for a in extract_points(proba, confidence_threshold=0.9))
    with pytest.raises(ValueError, match="proba"):
        extract_points(proba[..., 0])
    with pytest.raises(ValueError, match="gradient_weight"):
        extract_points(proba, gradient_weight=2)
    with pytest.raises(ValueError, match="classes"):
        extract_points(proba, classes=[1])
