from __future__ import annotations

import json

import numpy as np
import pytest

from loupe.learn.metrics import classification_metrics, score_metrics, spearman


def test_classification_metrics_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 1])
    m = classification_metrics(y_true, y_pred, None, ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 1, 0]]
    assert m["accuracy"] == pytest.approx(3 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m["per_class"]["a"] == {"precision": 2 / 3, "recall": 2 / 3, "support": 3}
    assert m["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert m["per_class"]["c"] == {"precision": None, "recall": 0.0, "support": 1}
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
