from __future__ import annotations

import numpy as np
import pytest

from loupe.learn.ensemble import (
    combine_members,
    confidence,
    score_spread,
    triage_classes,
    triage_scores,
    uncertainty,
)


def test_combine_members_is_the_mean():
    a = np.array([[0.8, 0.2], [0.5, 0.5]])
    b = np.array([[0.6, 0.4], [0.1, 0.9]])
    np.testing.assert_allclose(combine_members([a, b]), [[0.7, 0.3], [0.3, 0.7]], rtol=1e-6)
    with pytest.raises(ValueError):
        combine_members([a, b[:1]])


def test_triage_reasons_in_order():
    member_a = np.array(
        [
            [0.9, 0.1, 0.0],  # agree, confident, singleton set -> not flagged
            [0.9, 0.1, 0.0],  # members disagree
            [0.6, 0.3, 0.1],  # agree with low confidence
            [0.85, 0.15, 0.0],  # agree, confident, but two classes in the conformal set
            [0.3, 0.7, 0.0],  # disagree AND low confidence: first reason wins
        ]
    )
    member_b = np.array(
        [
            [0.95, 0.05, 0.0],
            [0.2, 0.8, 0.0],
            [0.7, 0.2, 0.1],
            [0.9, 0.1, 0.0],
            [0.6, 0.4, 0.0],
        ]
    )
    ensemble = combine_members([member_a, member_b])
    sets = np.array([[1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    flagged, reasons = triage_classes(
        [member_a, member_b], ensemble, threshold=0.8, conformal_sets=sets
    )
    assert reasons == [None, "disagreement", "low_confidence", "ambiguous_set", "disagreement"]
    np.testing.assert_array_equal(flagged, [False, True, True, True, True])
    # without conformal sets the third reason cannot occur
    _, reasons = triage_classes([member_a, member_b], ensemble, threshold=0.8)
    assert reasons[3] is None


def test_confidence_and_normalised_entropy():
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(confidence(probs), [1.0, 0.25, 0.5])
    np.testing.assert_allclose(uncertainty(probs), [0.0, 1.0, 0.5], atol=1e-6)


def test_triage_scores_flags_more_than_one_step():
    specs = [
        {"name": "grade", "min": 1, "max": 5, "step": 1},
        {"name": "size", "min": 0, "max": 1, "step": 0.1},
    ]
    a = np.array([[1, 0.1], [2, 0.5], [1, 0.3], [5, 0.9]])
    b = np.array([[2, 0.2], [4, 0.5], [1, 0.6], [2, 0.5]])
    flagged, reasons = triage_scores([a, b], specs)
    np.testing.assert_array_equal(flagged, [False, True, True, True])
    assert reasons == [
        None,
        "members differ by more than one step on grade",
        "members differ by more than one step on size",
        "members differ by more than one step on grade, size",
    ]
    spread = score_spread([a, b], specs)
    np.testing.assert_allclose(spread, [[1, 1], [2, 0], [0, 3], [3, 4]], rtol=1e-5)
