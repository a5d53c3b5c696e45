from __future__ import annotations

import json

import numpy as np
import pytest

from loupe.learn.metrics import (
    bootstrap_mean_interval,
    classification_metrics,
    format_rate,
    score_metrics,
    spearman,
    wilson_interval,
)


def test_classification_metrics_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y_true, y_pred, None, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # recall_ci (a 95% Wilson interval) was added with issue 10: the exact dicts grew a key
    a = m["per_class"]["a"]
    assert {k: a[k] for k in ("precision", "recall", "support")} == {
        "precision": 2 / 3,
        "recall": 2 / 3,
        "support": 3,
    }
    assert a["recall_ci"] == pytest.approx([0.2077, 0.9385], abs=1e-4)  # Wilson, 2 of 3
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    c = m["per_class"]["c"]
    assert (c["precision"], c["recall"], c["support"]) == (None, 0.0, 1)
    assert c["recall_ci"] == pytest.approx([0.0, 0.7935], abs=1e-4)  # Wilson, 0 of 1
    assert m["n"] == 6 and m["accuracy_ci"] == pytest.approx([0.1876, 0.8124], abs=1e-4)
    assert m["ece"] is None
    assert json.loads(json.dumps(m)) == m


def test_classification_metrics_with_probs_gives_ece():
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])
    m = classification_metrics(np.array([0, 1]), np.array([0, 0]), probs, ["x", "y"])
    assert m["ece"] == pytest.approx(0.35)


def test_score_metrics_by_hand():
    specs = [
        {"name": "grade", "min": 1, "max": 5, "step": 1},
        {"name": "area", "min": 0.0, "max": 1.0, "step": 0.1},
    ]
    y_true = np.array([[1, 0.1], [2, 0.2], [3, 0.3], [4, 0.4]])
    y_pred = np.array([[1, 0.2], [4, 0.2], [3, 0.5], [5, 0.3]])
    m = score_metrics(y_true, y_pred, specs)
    # grade errors 0, 2, 0, 1 -> MAE 0.75, within one step 3/4
    assert m["grade"]["mae"] == pytest.approx(0.75)
    assert m["grade"]["within_one_step"] == pytest.approx(0.75)
    # ranks true 1 2 3 4, pred 1 3 2 4 -> rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15) = 0.8
    assert m["grade"]["spearman"] == pytest.approx(0.8)
    # area errors 0.1, 0, 0.2, 0.1 -> MAE 0.1; 0.1 counts as within one step (float noise)
    assert m["area"]["mae"] == pytest.approx(0.1)
    assert m["area"]["within_one_step"] == pytest.approx(0.75)
    assert json.loads(json.dumps(m)) == m


def test_spearman_handles_ties_and_constants():
    from scipy.stats import spearmanr

    a = np.array([1, 2, 2, 3, 5, 5, 5])
    b = np.array([2, 1, 3, 3, 4, 6, 5])
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman(np.ones(4), np.arange(4)) is None


def test_score_metrics_shape_mismatch_names_the_arrays():
    with pytest.raises(ValueError, match="y_true"):
        score_metrics(np.zeros((3, 2)), np.zeros((3, 1)), [{"name": "a", "min": 0, "max": 1}])


def test_wilson_interval_matches_known_values_and_edges():
    # 18 of 18: the "100% from 18 easy labels" case; the interval says how little that is
    assert wilson_interval(18, 18) == pytest.approx([0.8241, 1.0], abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson_interval(50, 100) == pytest.approx([0.4038, 0.5962], abs=1e-4)
    assert wilson_interval(0, 0) is None
    lo, hi = wilson_interval(1, 1000)
    assert 0.0 < lo < 0.001 < hi


def test_format_rate_reads_like_the_issue():
    assert format_rate(1.0, 18, wilson_interval(18, 18)) == "100% (18 labels, 95% CI 82-100%)"
    # never "100%" unless every one was right, and bounds round outwards
    assert format_rate(199 / 200, 200, wilson_interval(199, 200)) == (
        "99% (200 labels, 95% CI 97-99%)"
    )
    assert format_rate(0.5, 1, None) == "50% (1 label)"
    assert format_rate(None, 0, None) == "n/a"
    assert format_rate(0.9, 10, [0.6, 0.98], unit="items") == "90% (10 items, 95% CI 60-98%)"


def test_score_metrics_carry_intervals():
    specs = [{"name": "grade", "min": 0, "max": 4, "step": 1}]
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, size=(60, 1)).astype(float)
    pred = np.clip(truth + rng.integers(-1, 2, size=(60, 1)), 0, 4)
    m = score_metrics(truth, pred, specs)["grade"]
    lo, hi = m["mae_ci"]
    assert lo < m["mae"] < hi and hi - lo < 0.4
    assert m["within_one_step"] == 1.0 and m["within_one_step_ci"][1] == 1.0
    assert m["within_one_step_ci"][0] == pytest.approx(0.9398, abs=1e-4)  # Wilson 60/60
    assert score_metrics(truth, pred, specs) == score_metrics(truth, pred, specs)  # seeded
    assert bootstrap_mean_interval(np.array([3.0])) is None
