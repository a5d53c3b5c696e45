from __future__ import annotations

import json

import numpy as np

from loupe.learn.classify import ClassifierHead
from loupe.learn.crossval import (
    cross_validate_classifier,
    cross_validate_scores,
    kfold,
    stratified_folds,
)
from loupe.learn.regress import ScoreHead


def test_stratified_folds_are_deterministic_and_balanced():
    y = np.repeat(np.arange(3), [10, 7, 12])
    plan = stratified_folds(y, seed=3)
    assert plan.n_splits == 5
    np.testing.assert_array_equal(plan.fold, stratified_folds(y, seed=3).fold)
    assert not np.array_equal(plan.fold, stratified_folds(y, seed=4).fold)
    sizes = np.bincount(plan.fold)
    assert sizes.max() - sizes.min() <= 1
    for _, test in plan.splits():
        assert set(y[test].tolist()) == {0, 1, 2}  # every fold holds every class


def test_k_is_the_smallest_class_count_and_singletons_are_never_held_out():
    y = np.array([0] * 6 + [1] * 3 + [2])
    plan = stratified_folds(y, seed=0, class_names=["a", "b", "c"])
    assert plan.n_splits == 3
    assert plan.fold[-1] == -1 and plan.excluded_classes == (2,)
    assert plan.evaluated.sum() == 9
    assert any("'c'" in note and "one labelled example" in note for note in plan.notes)
    assert any("3-fold" in note for note in plan.notes)
    for train, _ in plan.splits():
        assert 9 in train  # the singleton is always trained on
    json.dumps(plan.describe())


def test_too_few_labels_means_no_folds():
    assert stratified_folds(np.array([0, 1, 2])).n_splits == 0
    assert stratified_folds(np.array([0, 0, 0])).n_splits == 0
    assert kfold(1).n_splits == 0
    assert kfold(3).n_splits == 3


def test_cross_validated_classifier_metrics(blobs):
    names = [str(c) for c in range(5)]
    cv = cross_validate_classifier(ClassifierHead, blobs.X_train, blobs.y_train, class_names=names)
    assert cv.metrics is not None
    assert cv.metrics["accuracy"] > 0.85
    assert cv.metrics["cv"]["n_splits"] == 5 and cv.metrics["cv"]["n_evaluated"] == 150
    assert cv.metrics["ece_after"] <= cv.metrics["ece_before"] + 0.02
    np.testing.assert_array_equal(cv.probs.argmax(axis=1), cv.logits.argmax(axis=1))
    json.dumps(cv.metrics)
    again = cross_validate_classifier(
        ClassifierHead, blobs.X_train, blobs.y_train, class_names=names
    )
    np.testing.assert_array_equal(again.logits, cv.logits)


def test_cross_validation_without_folds_returns_no_metrics(blobs):
    cv = cross_validate_classifier(
        ClassifierHead, blobs.X_train[:2], np.array([0, 1]), class_names=["a", "b"]
    )
    assert cv.metrics is None and cv.temperature == 1.0 and len(cv.index) == 0


def test_cross_validated_scores(blobs):
    metrics = [{"name": "grade", "min": 0, "max": 4, "step": 1}]
    Y = blobs.y_train[:, None].astype(float)
    cv = cross_validate_scores(ScoreHead, blobs.X_train, Y, metrics)
    assert cv.metrics is not None
    grade = cv.metrics["per_metric"]["grade"]
    assert grade["within_one_step"] > 0.8 and grade["spearman"] > 0.7
    assert set(np.unique(cv.snapped).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
