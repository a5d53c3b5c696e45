from __future__ import annotations

import numpy as np
import pytest

from loupe.learn.calibration import (
    conformal_threshold,
    expected_calibration_error,
    fit_temperature,
    prediction_sets,
    softmax,
)
from loupe.learn.classify import ClassifierHead
from loupe.learn.crossval import cross_validate_classifier


def test_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    # bin of 0.9: correct (|1 - 0.9|); bin of 0.6: wrong (|0 - 0.6|); (0.1 + 0.6) / 2
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.35)
    # two items in one bin: |mean acc - mean conf| = |0.5 - 0.9|
    probs = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert expected_calibration_error(probs, np.array([0, 0])) == pytest.approx(0.4)


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(5000, 4)) * 2.0
    p = softmax(true_logits)
    y = np.array([rng.choice(4, p=row / row.sum()) for row in p.astype(np.float64)])
    assert fit_temperature(3.0 * true_logits, y) == pytest.approx(3.0, rel=0.08)
    assert fit_temperature(0.5 * true_logits, y) == pytest.approx(0.5, rel=0.08)


def test_temperature_scaling_fixes_an_overconfident_head_without_changing_argmax(digits):
    X, y, _ = digits
    rng = np.random.default_rng(1)
    order = rng.permutation(len(y))
    train, calib, test = order[:300], order[300:900], order[900:]
    # almost no regularisation: separable training data, over-confident logits
    head = ClassifierHead(C=1e4).fit(X[train], y[train], n_classes=10)
    temperature = fit_temperature(head.logits(X[calib]), y[calib])
    assert temperature > 1.0
    before = head.predict_proba(X[test])
    head.temperature = temperature
    after = head.predict_proba(X[test])
    assert expected_calibration_error(after, y[test]) < 0.6 * expected_calibration_error(
        before, y[test]
    )
    np.testing.assert_array_equal(before.argmax(axis=1), after.argmax(axis=1))


def test_conformal_threshold_is_the_finite_sample_quantile():
    # scores 1 - p_true = 0.0, 0.1, ..., 0.9; n = 10, alpha = 0.2:
    # ceil(11 * 0.8) / 10 = 0.9 -> the 9th smallest score (method "higher") = 0.8
    p_true = 1.0 - np.arange(10) / 10
    probs = np.stack([p_true, 1 - p_true], axis=1)
    assert conformal_threshold(probs, np.zeros(10, int), alpha=0.2) == pytest.approx(0.8)
    # too few calibration points for 1 - alpha = 0.95: every class in every set
    assert conformal_threshold(probs, np.zeros(10, int), alpha=0.05) == 1.0
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(probs, np.zeros(10, int), alpha=1.5)


def test_prediction_sets_threshold():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]], dtype=np.float32)
    sets = prediction_sets(probs, qhat=0.7)  # keep p >= 0.3
    np.testing.assert_array_equal(sets, [[True, False, False], [True, True, False]])


def test_conformal_sets_cover_90_percent_of_held_out_digits(digits):
    X, y, _ = digits
    order = np.random.default_rng(0).permutation(len(y))
    calib, test = order[:500], order[500:]
    names = [str(c) for c in range(10)]
    cv = cross_validate_classifier(ClassifierHead, X[calib], y[calib], class_names=names)
    qhat = conformal_threshold(cv.probs, cv.y, alpha=0.1)
    head = ClassifierHead().fit(X[calib], y[calib], n_classes=10)
    head.temperature = cv.temperature
    sets = prediction_sets(head.predict_proba(X[test]), qhat)
    coverage = sets[np.arange(len(test)), y[test]].mean()
    assert 0.86 <= coverage <= 0.97
    assert sets.sum(axis=1).mean() < 2.5  # informative sets, not "everything"
