from __future__ import annotations

import numpy as np
import pytest

from loupe.learn.calibration import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    conformal_threshold,
    expected_calibration_error,
    fit_temperature,
    laplace_targets,
    prediction_sets,
    softmax,
)
from loupe.learn.classify import ClassifierHead
from loupe.learn.crossval import cross_validate_classifier
from loupe.learn.train import train_classifier_ensemble


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


def test_temperature_cannot_collapse_on_perfectly_separated_logits():
    # 20 out-of-fold items, all right with margin 5: plain maximum likelihood wants T -> 0
    m = 5.0
    logits = np.array([[m, 0.0]] * 10 + [[0.0, m]] * 10)
    y = np.array([0] * 10 + [1] * 10)
    assert fit_temperature(logits, y, laplace=False) == pytest.approx(MIN_TEMPERATURE, rel=1e-3)
    # smoothed targets: the true class gets (n + 1) / (n + 2) = 21 / 22, which
    # softmax([m, 0] / T) reaches at T = m / ln 21; a finite, data-driven temperature
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(m / np.log(21.0), rel=1e-3)
    assert softmax(logits, temperature).max(axis=1) == pytest.approx(21 / 22, rel=1e-4)


def test_laplace_targets_spread_the_rest_over_labelled_classes_only():
    targets = laplace_targets(np.array([0, 0, 2]), 4)  # class 1 and 3 have no label
    np.testing.assert_allclose(targets.sum(axis=1), 1.0)
    np.testing.assert_allclose(targets[0], [4 / 5, 0.0, 1 / 5, 0.0])
    np.testing.assert_allclose(targets[2], [1 / 5, 0.0, 4 / 5, 0.0])
    np.testing.assert_allclose(laplace_targets(np.array([1, 1]), 3), [[0, 1, 0], [0, 1, 0]])


def test_few_easy_labels_do_not_draft_unlike_images_at_100_percent(digits, faces_8x8):
    """Issue 10, item 1: 20 easy labels (ten 0s, ten 1s) are separated perfectly out of
    fold. Before the fix T ran to its bound (0.05) and 9 in 10 of the other digits and of
    the face photos were drafted at > 99%; the temperature now stays a sane value and no
    image unlike the labels reads ~100%."""
    X, y, _ = digits
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:10] for c in (0, 1)])
    everything = np.concatenate([X, faces_8x8])
    unlike = np.r_[y >= 2, np.ones(len(faces_8x8), dtype=bool)]  # digits 2-9 and photos
    result = train_classifier_ensemble(
        {"pixels": (X[labelled], everything)}, y[labelled], ["0", "1"], novelty=False
    )
    assert result.ensemble_metrics is not None and result.ensemble_metrics["accuracy"] == 1.0
    temperature = result.temperatures["pixels"]
    assert 0.5 < temperature < MAX_TEMPERATURE  # was MIN_TEMPERATURE = 0.05
    confidence = result.predictions.confidence
    assert np.mean(confidence[unlike] > 0.99) < 0.01  # was 0.92
    # and no longer bimodal: the bulk of the drafts is neither ~50% nor ~100%
    assert np.mean((confidence > 0.55) & (confidence < 0.99)) > 0.8
    # held-out 0s and 1s are still drafted right, with confidence that is not 100%
    own = np.flatnonzero(y <= 1)
    own = np.setdiff1d(own, labelled)
    assert np.mean(result.predictions.label[own] == y[own]) > 0.97
    # the metrics carry the uncertainty of "100% on 20 labels"
    assert result.ensemble_metrics["accuracy_ci"] == pytest.approx([0.8389, 1.0], abs=1e-4)
