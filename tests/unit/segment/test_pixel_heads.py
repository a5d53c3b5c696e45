"""Pixel heads: sparse labels, logistic from a few clicks, class-balanced MLP, and the
projection identity (predicting on grids == predicting sampled features)."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.features.grids import upsample_to_pixels
from loupe.features.pixels import pixel_features
from loupe.learn.pixel_heads import (
    UNLABELLED,
    LogisticPixelHead,
    MlpPixelHead,
    balanced_weights,
    empty_labels,
    make_pixel_head,
    rasterize_clicks,
    rasterize_strokes,
    training_pixels,
    training_set,
)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_clicks_and_strokes_paint_sparse_labels() -> None:
    labels = empty_labels((20, 30))
    rasterize_clicks(labels, [10, 0], [10, 0], [1, 0], radius=3)
    assert (labels == 1).sum() == 29  # a radius-3 disk
    assert (labels == 0).sum() == 11  # a quarter of it at the corner (clipped)
    rasterize_strokes(labels, [(2, np.array([[15, 2], [15, 27]]))], width=2)
    assert (labels[15, 2:28] == 2).all() and (labels[17] == UNLABELLED).all()
    rows, cols, values = training_pixels(labels, max_per_class=5)
    assert sorted(np.bincount(values).tolist()) == [5, 5, 5]
    assert (labels[rows, cols] == values).all()
    with pytest.raises(ValueError, match="same length"):
        rasterize_clicks(labels, [1], [1, 2], [0])


def test_logistic_recovers_two_regions_from_a_few_clicks(
    two_regions: tuple[np.ndarray, np.ndarray],
) -> None:
    image, truth = two_regions
    features = pixel_features(image, "filters")
    labels = empty_labels(image.shape)
    rasterize_clicks(labels, [60, 45, 100, 15, 64], [90, 100, 20, 150, 140], [1, 1, 0, 0, 0])
    head = LogisticPixelHead().fit(*training_set(features, labels))
    proba = upsample_to_pixels(head.predict_proba(features), features.stride, image.shape)
    assert proba.shape == (*image.shape, 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=2), 1.0, atol=1e-5)
    mask = head.classes_[proba.argmax(axis=2)] == 1
    assert dice(mask, truth) > 0.9


def test_grid_prediction_equals_prediction_of_sampled_features(coins: np.ndarray) -> None:
    # Parts on 1/4 and 1/2 grids: projecting each on its grid and upsampling the
    # projection must equal the head applied to bilinearly sampled features.
    features = pixel_features(coins, "filters+filters".split("+")[0])
    wide = pixel_features(coins, "filters", strides={"filters": 4})
    both = type(features)(features.shape, (wide.parts[0], features.parts[0]))
    rng = np.random.default_rng(1)
    labels = empty_labels(coins.shape)
    rows, cols = rng.integers(0, 300, 40), rng.integers(0, 380, 40)
    rasterize_clicks(labels, rows, cols, (coins[rows, cols] > 110).astype(int))
    for head in (LogisticPixelHead(), MlpPixelHead(max_steps=30)):
        head.fit(*training_set(both, labels))
        grid = head.predict_proba(both)
        gr, gc = np.mgrid[0 : grid.shape[0] : 7, 0 : grid.shape[1] : 9]
        centre_r, centre_c = gr.ravel() * 2 + 0.5, gc.ravel() * 2 + 0.5
        direct = head.predict_proba_vectors(both.sample(centre_r, centre_c))
        np.testing.assert_allclose(grid[gr.ravel(), gc.ravel()], direct, atol=1e-4)


def test_mlp_trains_class_balanced() -> None:
    rng = np.random.default_rng(0)
    # 2,000 background vs 40 foreground samples, overlapping Gaussian clouds.
    background = rng.normal(0.0, 1.0, (2000, 6))
    foreground = rng.normal(1.6, 1.0, (40, 6))
    X = np.vstack([background, foreground]).astype(np.float32)
    y = np.r_[np.zeros(2000, int), np.ones(40, int)]
    classes, weights = balanced_weights(y)
    assert classes.tolist() == [0, 1]
    assert weights[y == 0].sum() == pytest.approx(weights[y == 1].sum())
    head = MlpPixelHead(seed=0).fit(X, y)
    test_bg = rng.normal(0.0, 1.0, (2000, 6)).astype(np.float32)
    test_fg = rng.normal(1.6, 1.0, (2000, 6)).astype(np.float32)
    recall_fg = (head.predict_proba_vectors(test_fg).argmax(1) == 1).mean()
    recall_bg = (head.predict_proba_vectors(test_bg).argmax(1) == 0).mean()
    # Unbalanced, the minority class would be nearly never predicted (prior 2 %).
    assert recall_fg > 0.8 and recall_bg > 0.8, (recall_fg, recall_bg)
    assert 0 < head.steps_ <= head.max_steps
    # Warm start: a refit with the same classes starts from the fitted weights.
    before = head.steps_
    head.fit(X, y)
    assert head.steps_ <= before + 10


def test_heads_by_name_and_bad_input() -> None:
    assert isinstance(make_pixel_head("logistic"), LogisticPixelHead)
    assert isinstance(make_pixel_head("mlp", hidden=8), MlpPixelHead)
    with pytest.raises(ValueError, match="name"):
        make_pixel_head("forest")
    with pytest.raises(ValueError, match="two classes"):
        LogisticPixelHead().fit(np.zeros((4, 3)), np.ones(4))
