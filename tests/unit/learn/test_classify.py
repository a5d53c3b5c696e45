from __future__ import annotations

import json

import numpy as np
import pytest

from loupe.learn.classify import ABSENT_CLASS_LOGIT, ClassifierHead
from loupe.learn.state import state_from_bytes, state_to_bytes


def test_digits_with_20_labels_per_class_is_far_above_chance(digits_20):
    head = ClassifierHead().fit(digits_20.X_train, digits_20.y_train, n_classes=10)
    accuracy = np.mean(head.predict(digits_20.X_test) == digits_20.y_test)
    assert accuracy > 0.85  # chance is 0.10


def test_blobs_are_learned(blobs):
    head = ClassifierHead().fit(blobs.X_train, blobs.y_train, n_classes=5)
    assert np.mean(head.predict(blobs.X_test) == blobs.y_test) > 0.9


def test_probabilities_are_float32_rows_summing_to_one(digits_20):
    head = ClassifierHead().fit(digits_20.X_train, digits_20.y_train, n_classes=10)
    probs = head.predict_proba(digits_20.X_test[:50])
    assert probs.dtype == np.float32 and probs.shape == (50, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_matches_a_direct_optimum_of_the_same_objective(blobs):
    # the L-BFGS answer must be the optimum: a much tighter run gives the same logits
    loose = ClassifierHead().fit(blobs.X_train, blobs.y_train, n_classes=5)
    tight = ClassifierHead(tol=1e-9, max_iter=5000).fit(blobs.X_train, blobs.y_train, n_classes=5)
    np.testing.assert_allclose(loose.logits(blobs.X_test), tight.logits(blobs.X_test), atol=0.05)


def test_state_round_trip_gives_identical_predictions(digits_20):
    head = ClassifierHead(C=0.5).fit(digits_20.X_train, digits_20.y_train, n_classes=10)
    head.temperature = 1.7
    state = state_from_bytes(state_to_bytes(head.to_state()))
    again = ClassifierHead.from_state(state)
    np.testing.assert_array_equal(again.logits(digits_20.X_test), head.logits(digits_20.X_test))
    np.testing.assert_array_equal(
        again.predict_proba(digits_20.X_test), head.predict_proba(digits_20.X_test)
    )
    meta = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    assert json.loads(json.dumps(meta)) == meta


def test_class_without_examples_gets_probability_zero(blobs):
    keep = blobs.y_train < 3
    head = ClassifierHead().fit(blobs.X_train[keep], blobs.y_train[keep], n_classes=4)
    assert head.intercept_ is not None and head.intercept_[3] == ABSENT_CLASS_LOGIT
    probs = head.predict_proba(blobs.X_test)
    assert probs.shape[1] == 4 and probs[:, 3].max() < 1e-6


def test_single_class_fit_predicts_that_class(blobs):
    head = ClassifierHead().fit(blobs.X_train[:5], np.full(5, 2), n_classes=3)
    assert set(head.predict(blobs.X_test).tolist()) == {2}


def test_bad_inputs_name_the_parameter():
    with pytest.raises(ValueError, match="C"):
        ClassifierHead(C=0)
    with pytest.raises(ValueError, match="y"):
        ClassifierHead().fit(np.zeros((3, 2)), np.array([0, 1, 5]), n_classes=3)
    with pytest.raises(RuntimeError):
        ClassifierHead().logits(np.zeros((1, 2)))
