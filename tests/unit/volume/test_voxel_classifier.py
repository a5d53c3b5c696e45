"""Interactive mode on a real volume: simulated error-driven clicks reach Dice > 0.9."""

from __future__ import annotations

import time

import numpy as np
import pytest

from loupe.features.voxels import voxel_features
from loupe.learn.voxel_classifier import (
    VoxelClassifier,
    ball_points,
    dice,
    error_click,
    view_box,
)

from .conftest import Mni

# a 64^3 region around the lateral ventricles: white matter, grey matter, CSF
REGION = (slice(62, 126), slice(90, 154), slice(66, 130))


def simulate(
    features: np.ndarray, truth: np.ndarray, clicks: int
) -> tuple[list[float], VoxelClassifier, np.ndarray]:
    classifier = VoxelClassifier(seed=0)
    prediction = np.zeros_like(truth)
    points: list[np.ndarray] = []
    values: list[np.ndarray] = []
    scores = []
    for _ in range(clicks):
        centre, label = error_click(prediction, truth)
        ball = ball_points(centre, 2, truth.shape)
        points.append(ball)
        values.append(np.full(len(ball), label))
        if np.unique(np.concatenate(values)).size < 2:
            prediction = np.full_like(truth, label)
        else:
            classifier.fit(features, np.concatenate(points), np.concatenate(values))
            prediction = classifier.predict_volume(features)
        scores.append(dice(prediction, truth))
        if scores[-1] >= 0.95:
            break
    return scores, classifier, prediction


def test_white_matter_within_ten_clicks(mni: Mni) -> None:
    truth = (mni.labels[REGION] == 2).astype(np.uint8)
    features = voxel_features(mni.t1[REGION])
    scores, classifier, prediction = simulate(features, truth, clicks=10)
    assert max(scores) > 0.9, scores
    # the region around the view equals the same region of the whole-volume prediction
    box = view_box((32, 32, 32), 24, truth.shape)
    exact = classifier.predict_volume(features, coarse=1)
    np.testing.assert_array_equal(classifier.predict_box(features, box), exact[box])
    assert (prediction == exact).mean() > 0.995
    started = time.perf_counter()
    classifier.fit(
        features, np.argwhere(truth[::8, ::8, ::8] >= 0) * 8, truth[::8, ::8, ::8].ravel()
    )
    assert time.perf_counter() - started < 5.0  # a refit is interactive (< 0.5 s idle)


def test_helpers_validate_and_clip() -> None:
    assert len(ball_points((0, 0, 0), 1, (5, 5, 5))) == 4  # centre + 3 inside neighbours
    assert view_box((1, 10, 10), 8, (20, 20, 20)) == (slice(0, 5), slice(6, 14), slice(6, 14))
    features = np.zeros((4, 4, 4, 2), np.float32)
    with pytest.raises(ValueError, match="two labels"):
        VoxelClassifier().fit(features, np.zeros((3, 3), int), np.zeros(3, int))
    with pytest.raises(ValueError, match="inside"):
        VoxelClassifier().fit(features, np.array([[0, 0, 0], [9, 0, 0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="not fitted"):
        VoxelClassifier().predict_box(features, view_box((1, 1, 1), 2, (4, 4, 4)))
    with pytest.raises(ValueError, match="no click"):
        error_click(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
