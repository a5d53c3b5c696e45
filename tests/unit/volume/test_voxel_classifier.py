"""Interactive mode on a real volume: simulated error-driven clicks reach Dice > 0.9."""

from __future__ import annotations

import time

import numpy as np
import pytest

from loupe.features.voxels import voxel_features
from loupe.learn.voxel_classifier import (
    VoxelClassifier,
    ball_points,
    brush_radius,
    click_ball,
    dice,
    error_click,
    view_box,
)

from .conftest import Mni

# a 64^3 region around the lateral ventricles: white matter, grey matter, CSF
REGION = (slice(62, 126), slice(90, 154), slice(66, 130))


def simulate(
    features: np.ndarray,
    truth: np.ndarray,
    clicks: int,
    *,
    extra_trees: bool = False,
    adaptive: bool = False,
    stop: float = 0.95,
) -> tuple[list[float], VoxelClassifier, np.ndarray]:
    classifier = VoxelClassifier(seed=0, extra_trees=extra_trees)
    prediction = np.zeros_like(truth)
    points: list[np.ndarray] = []
    values: list[np.ndarray] = []
    scores = []
    for _ in range(clicks):
        centre, label = error_click(prediction, truth)
        radius = brush_radius(truth, centre) if adaptive else 2
        ball = ball_points(centre, radius, truth.shape)
        if adaptive:  # the brush stays in its structure (a click of radius 2 may not)
            assert (truth[tuple(ball.T)] == label).all()
        points.append(ball)
        values.append(np.full(len(ball), label))
        if np.unique(np.concatenate(values)).size < 2:
            prediction = np.full_like(truth, label)
        else:
            classifier.fit(features, np.concatenate(points), np.concatenate(values))
            prediction = classifier.predict_volume(features)
        scores.append(dice(prediction, truth))
        if scores[-1] >= stop:
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


def test_white_matter_with_extra_trees_and_a_brush(mni: Mni) -> None:
    """The interactive service's setting (extra trees), a user whose brush fits the
    region: above 0.9 within 10 clicks and it stays there over the last clicks."""
    truth = (mni.labels[REGION] == 2).astype(np.uint8)
    features = voxel_features(mni.t1[REGION])
    scores, classifier, _ = simulate(
        features, truth, clicks=10, extra_trees=True, adaptive=True, stop=1.0
    )
    assert type(classifier.model).__name__ == "ExtraTreesClassifier"
    assert len(scores) == 10 and min(scores[-3:]) > 0.9, scores


def test_brush_radius_fits_inside_the_structure() -> None:
    truth = np.zeros((20, 20, 20), np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    assert brush_radius(truth, (10, 10, 10)) == 4  # capped
    assert brush_radius(truth, (10, 10, 10), max_radius=2) == 2
    assert brush_radius(truth, (6, 10, 10)) == 1  # the edge is 2 voxels away
    assert brush_radius(truth, (7, 10, 10)) == 2
    assert brush_radius(truth, (2, 10, 10)) == 2  # background: the cube is 3 away
    assert brush_radius(truth, (2, 2, 2)) == 4  # its corner is sqrt(27) away
    for centre in [(7, 10, 10), (8, 8, 8), (2, 2, 2), (0, 19, 0)]:
        ball = ball_points(centre, brush_radius(truth, centre), truth.shape)
        assert (truth[tuple(ball.T)] == truth[centre]).all()
    with pytest.raises(ValueError, match="max_radius"):
        brush_radius(truth, (10, 10, 10), max_radius=0)


def test_click_ball_keeps_the_voxels_like_the_clicked_one(mni: Mni) -> None:
    # clicks on grey-matter voxels next to another tissue: the whole ball labels some of
    # its neighbours as grey; the click ball leaves out a part of them (measured: 28 %;
    # partial-volume voxels at the boundary look alike after smoothing)
    labels = mni.labels[REGION]
    features = voxel_features(mni.t1[REGION])
    grey = labels == 1
    near_white = grey & (np.abs(np.diff(labels.astype(int), axis=0, append=0)) > 0)
    centres = np.argwhere(near_white)[::50][:20]
    crossed_ball = crossed_click = 0
    for centre in centres:
        ball = ball_points(centre, 2, labels.shape)
        kept = click_ball(features, centre, 2)
        assert len(kept) <= len(ball) and any((kept == centre).all(axis=1))
        assert {tuple(p) for p in kept} <= {tuple(p) for p in ball}
        crossed_ball += int((labels[tuple(ball.T)] != 1).sum())
        crossed_click += int((labels[tuple(kept.T)] != 1).sum())
    assert crossed_ball > 100 and crossed_click < 0.8 * crossed_ball, (crossed_ball, crossed_click)
    everything = click_ball(features, centres[0], 2, tolerance=np.inf)
    np.testing.assert_array_equal(everything, ball_points(centres[0], 2, labels.shape))


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
