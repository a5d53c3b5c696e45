"""The MLP class head: same interface as the softmax head, a boundary it cannot draw."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.learn import CLASS_HEADS
from loupe.learn.classify import ClassifierHead
from loupe.learn.mlp_head import MLPClassifierHead
from loupe.learn.train import train_classifier_ensemble


def _rings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric rings: no straight line separates them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    radius = np.where(y == 0, 1.0, 2.5) + rng.normal(0, 0.15, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32), y


def test_registry_holds_both_heads_by_kind() -> None:
    assert CLASS_HEADS["softmax"] is ClassifierHead
    assert CLASS_HEADS["mlp"] is MLPClassifierHead


def test_mlp_separates_rings_that_a_linear_head_cannot() -> None:
    x, y = _rings(300, 0)
    xt, yt = _rings(300, 1)
    mlp = MLPClassifierHead(C=10.0, hidden=32).fit(x, y, n_classes=2, seed=0)
    linear = ClassifierHead(C=10.0).fit(x, y, n_classes=2)
    assert np.mean(mlp.predict(xt) == yt) > 0.95
    assert np.mean(linear.predict(xt) == yt) < 0.75


def test_state_round_trip_and_absent_classes() -> None:
    x, y = _rings(120, 2)
    head = MLPClassifierHead(hidden=8).fit(x, y, n_classes=3, seed=0)
    head.temperature = 1.7
    again = MLPClassifierHead.from_state(head.to_state())
    np.testing.assert_allclose(again.predict_proba(x), head.predict_proba(x), rtol=1e-6)
    assert head.predict_proba(x)[:, 2].max() < 1e-6  # class 2 had no example
    with pytest.raises(ValueError, match="state kind"):
        MLPClassifierHead.from_state({"kind": "softmax"})


def test_the_trainer_uses_the_head_it_is_given() -> None:
    x, y = _rings(80, 3)
    feats = {"m": (x, x)}
    result = train_classifier_ensemble(feats, y, ["inner", "outer"], head=MLPClassifierHead)
    assert result.heads["m"]["kind"] == "mlp"
    default = train_classifier_ensemble(feats, y, ["inner", "outer"])
    assert default.heads["m"]["kind"] == "softmax"
    assert result.ensemble_metrics["accuracy"] > default.ensemble_metrics["accuracy"]
