from __future__ import annotations

import numpy as np
import pytest

from loupe.learn.ensemble import (
    apply_review_budget,
    combine_members,
    confidence,
    conformal_radius,
    interval_steps,
    score_intervals,
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


def test_novel_is_the_first_reason_for_classes_and_scores():
    member_a = np.array([[0.99, 0.01], [0.9, 0.1], [0.2, 0.8]])
    member_b = np.array([[0.99, 0.01], [0.9, 0.1], [0.9, 0.1]])
    ensemble = combine_members([member_a, member_b])
    novel = np.array([True, False, True])
    flagged, reasons = triage_classes([member_a, member_b], ensemble, novel=novel)
    # a confident agreeing draft of a novel item is flagged; novel beats disagreement
    assert reasons == ["novel", None, "novel"]
    np.testing.assert_array_equal(flagged, [True, False, True])
    specs = [{"name": "grade", "min": 0, "max": 4, "step": 1}]
    flagged, reasons = triage_scores(
        [np.array([[1.0], [1.0], [0.0]]), np.array([[1.0], [1.0], [4.0]])],
        specs,
        novel=np.array([True, False, False]),
    )
    assert reasons == ["novel", None, "members differ by more than one step on grade"]
    with pytest.raises(ValueError, match="novel"):
        triage_classes([member_a], member_a, novel=np.array([True]))


def test_review_budget_keeps_novel_first_then_the_most_uncertain():
    flagged = np.array([True, True, True, True, False, True, True, False, False, False])
    reasons = ["low_confidence", "novel", "disagreement", "novel", None] + [
        "low_confidence",
        "ambiguous_set",
        None,
        None,
        None,
    ]
    uncertainty = np.array([0.9, 0.0, 0.5, 0.1, 0.99, 0.7, 0.2, 0.0, 0.0, 0.0])
    novelty = np.array([0.0, 1.5, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    kept, kept_reasons = apply_review_budget(
        flagged, reasons, uncertainty=uncertainty, max_flag_fraction=0.4, novelty=novelty
    )
    # 4 of 10: both novel items, then the most uncertain flagged (0.9, 0.7); the unflagged
    # 0.99 stays unflagged: the budget caps flags, it does not add any
    np.testing.assert_array_equal(np.flatnonzero(kept), [0, 1, 3, 5])
    assert kept_reasons == ["low_confidence", "novel", None, "novel", None] + [
        "low_confidence",
        None,
        None,
        None,
        None,
    ]
    tight, _ = apply_review_budget(
        flagged, reasons, uncertainty=uncertainty, max_flag_fraction=0.1, novelty=novelty
    )
    np.testing.assert_array_equal(np.flatnonzero(tight), [3])  # the most novel
    same, same_reasons = apply_review_budget(
        flagged, reasons, uncertainty=uncertainty, max_flag_fraction=None
    )
    np.testing.assert_array_equal(same, flagged)
    assert same_reasons == reasons
    with pytest.raises(ValueError, match="max_flag_fraction"):
        apply_review_budget(flagged, reasons, uncertainty=uncertainty, max_flag_fraction=2.0)


def test_conformal_radius_is_the_corrected_residual_quantile():
    truth = np.zeros((19, 1))
    pred = np.arange(1, 20, dtype=float)[:, None]  # |residuals| 1..19
    # ceil((19 + 1) * 0.9) = 18th smallest residual
    np.testing.assert_allclose(conformal_radius(pred, truth, alpha=0.1), [18.0])
    assert conformal_radius(pred[:5], truth[:5], alpha=0.1) is None  # too few to cover 90%
    with pytest.raises(ValueError, match="alpha"):
        conformal_radius(pred, truth, alpha=1.5)


def test_one_member_flags_wide_intervals():
    specs = [{"name": "fibrosis", "min": 0, "max": 4, "step": 1}]
    raw = np.array([[2.0], [0.1], [2.0]])
    # one member: no spread, so before intervals nothing but novel items could flag
    lo, hi = score_intervals([raw], np.array([1.5]), specs)
    np.testing.assert_allclose(lo[:, 0], [0.5, 0.0, 0.5])
    np.testing.assert_allclose(hi[:, 0], [3.5, 1.6, 3.5])  # clipped to the range
    widths = interval_steps(lo, hi, specs)
    flagged, reasons = triage_scores(
        [np.round(raw)], specs, novel=np.array([False, False, True]), widths=widths
    )
    np.testing.assert_array_equal(flagged, [True, False, True])
    assert reasons == ["wide interval on fibrosis", None, "novel"]
