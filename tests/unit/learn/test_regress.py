from __future__ import annotations

import numpy as np
import pytest

from loupe.learn.regress import ScoreHead, snap
from loupe.learn.state import state_from_bytes, state_to_bytes

SPECS = [
    {"name": "grade", "min": 1, "max": 5, "step": 1},
    {"name": "area", "min": 0.0, "max": 10.0, "step": 0.5},
]


def test_snap_clips_to_range_and_rounds_to_step():
    raw = np.array([[0.2, -1.0], [2.6, 10.3], [4.5, 3.24], [3.49, 3.25]])
    np.testing.assert_array_equal(snap(raw, SPECS), [[1, 0.0], [3, 10.0], [5, 3.0], [3, 3.5]])


def test_snap_counts_steps_from_min_and_never_passes_max():
    specs = [{"name": "odd", "min": 1, "max": 6, "step": 2}]  # 1, 3, 5
    out = snap(np.array([[1.9], [2.1], [5.9], [100.0]]), specs)
    np.testing.assert_array_equal(out[:, 0], [1, 3, 5, 5])


def test_snap_without_step_only_clips():
    specs = [{"name": "ratio", "min": 0, "max": 1, "step": None}]
    np.testing.assert_allclose(snap(np.array([[-0.5], [0.123], [2.0]]), specs)[:, 0], [0, 0.123, 1])


def _linear_targets(X: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = X @ rng.normal(size=(X.shape[1], 2))
    t = (t - t.min(axis=0)) / (t.max(axis=0) - t.min(axis=0))
    return np.stack([1 + 4 * t[:, 0], 10 * t[:, 1]], axis=1)


def test_ridge_learns_a_linear_score_and_matches_sklearn(digits):
    from sklearn.linear_model import Ridge

    X, _, _ = digits
    Y = _linear_targets(X)
    head = ScoreHead().fit(X[:300], Y[:300], SPECS)
    pred = head.predict(X[300:])
    assert np.abs(pred - Y[300:]).mean(axis=0).max() < 0.5
    # same problem as sklearn's Ridge on standardised features and 0-1 targets
    mean = X[:300].mean(axis=0)
    scale = np.sqrt(np.mean((X[:300] - mean) ** 2))
    for j, spec in enumerate(SPECS):
        span = spec["max"] - spec["min"]
        ridge = Ridge(alpha=head.alpha_[j] * X.shape[1])
        ridge.fit((X[:300] - mean) / scale, (Y[:300, j] - spec["min"]) / span)
        expected = ridge.predict((X[300:] - mean) / scale) * span + spec["min"]
        np.testing.assert_allclose(pred[:, j], expected, atol=1e-3)


def test_more_rows_than_dimensions_uses_the_primal_path(digits):
    X, _, _ = digits
    Y = _linear_targets(X)
    head = ScoreHead().fit(X[:1000], Y[:1000], SPECS)  # 1000 rows > 64 dims
    fixed = ScoreHead(fixed_alphas=head.alpha_).fit(X[:1000], Y[:1000], SPECS)
    np.testing.assert_allclose(head.predict(X[1000:]), fixed.predict(X[1000:]), atol=1e-3)


def test_state_round_trip_gives_identical_predictions(digits):
    X, _, _ = digits
    Y = _linear_targets(X)
    head = ScoreHead().fit(X[:200], Y[:200], SPECS)
    again = ScoreHead.from_state(state_from_bytes(state_to_bytes(head.to_state())))
    np.testing.assert_array_equal(again.predict(X), head.predict(X))
    np.testing.assert_array_equal(again.predict_snapped(X), snap(head.predict(X), SPECS))


def test_bad_metric_range_is_rejected(digits):
    X, _, _ = digits
    with pytest.raises(ValueError, match="max > min"):
        ScoreHead().fit(X[:10], np.zeros((10, 1)), [{"name": "x", "min": 1, "max": 1}])
