from __future__ import annotations

import json

import numpy as np

from loupe.learn.classify import ClassifierHead
from loupe.learn.regress import ScoreHead
from loupe.learn.train import train_classifier_ensemble, train_score_ensemble

from .conftest import l2_normalise

# "novel" came with issue 10 (items unlike every labelled item)
REASONS = {None, "novel", "disagreement", "low_confidence", "ambiguous_set"}


def _two_views(digits):
    """Two members over the same digits: raw pixels, and 2x2-pooled pixels with noise."""
    X, y, images = digits
    pooled = images.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(y), -1)
    noise = np.random.default_rng(0).normal(scale=0.05, size=pooled.shape)
    return X, l2_normalise(np.abs(pooled + noise)), y


def test_classifier_ensemble_end_to_end_on_digits(digits):
    pixels, pooled, y = _two_views(digits)
    rng = np.random.default_rng(0)
    labelled = np.concatenate(  # 20 random labels per class
        [rng.permutation(np.flatnonzero(y == c))[:20] for c in range(10)]
    )
    names = [f"digit {c}" for c in range(10)]
    members = {"pixels": (pixels[labelled], pixels), "pooled": (pooled[labelled], pooled)}
    result = train_classifier_ensemble(members, y[labelled], names, threshold=0.8, seed=0)

    p = result.predictions
    n = len(y)
    assert p.probs.shape == (n, 10) and p.probs.dtype == np.float32
    assert set(p.member_probs) == {"pixels", "pooled"}
    assert p.label.shape == p.confidence.shape == p.uncertainty.shape == p.flagged.shape == (n,)
    np.testing.assert_allclose(p.confidence, p.probs.max(axis=1))
    assert np.mean(p.label == y) > 0.85  # chance: 0.10
    assert set(p.reason) <= REASONS
    np.testing.assert_array_equal(p.flagged, [r is not None for r in p.reason])
    assert p.prediction_sets is not None and result.qhat is not None
    # flagged items are less accurate than the rest: triage points at the hard ones
    assert np.mean(p.label[p.flagged] == y[p.flagged]) < np.mean(
        p.label[~p.flagged] == y[~p.flagged]
    )

    ens = result.ensemble_metrics
    assert ens is not None and ens["accuracy"] > 0.8
    assert ens["ece_after"] <= ens["ece_before"] + 0.02
    for name in ("pixels", "pooled"):
        member = result.member_metrics[name]
        assert member is not None and {"ece_before", "ece_after", "temperature"} <= set(member)
        head = ClassifierHead.from_state(result.heads[name])
        np.testing.assert_allclose(
            head.predict_proba(pixels if name == "pixels" else pooled),
            p.member_probs[name],
            atol=1e-6,
        )
    assert result.cv["n_splits"] == 5
    assert ens["accuracy_ci"][0] < ens["accuracy"] < ens["accuracy_ci"][1]
    metrics = json.loads(json.dumps(result.metrics_json()))
    assert metrics["ensemble"]["accuracy_ci"] == ens["accuracy_ci"]
    assert metrics["triage"]["novelty"]["n_novel"] == int(p.novel.sum())
    assert metrics["triage"]["flagged_before_budget"] == int(p.flagged.sum())  # no budget


def test_classifier_ensemble_is_deterministic(blobs):
    members = {
        "a": (blobs.X_train, blobs.X_test),
        "b": (blobs.X_train[:, ::-1], blobs.X_test[:, ::-1]),
    }
    names = [str(c) for c in range(5)]
    first = train_classifier_ensemble(members, blobs.y_train, names, threshold=0.8)
    second = train_classifier_ensemble(members, blobs.y_train, names, threshold=0.8)
    np.testing.assert_array_equal(first.predictions.probs, second.predictions.probs)
    assert first.predictions.reason == second.predictions.reason
    assert first.qhat == second.qhat


def test_tiny_classes_and_missing_classes_are_handled(blobs):
    # class 3 has one label, class 4 none: CV still runs and says so
    y = blobs.y_train.copy()
    keep = np.concatenate([np.flatnonzero(y < 3), np.flatnonzero(y == 3)[:1]])
    members = {"only": (blobs.X_train[keep], blobs.X_test)}
    result = train_classifier_ensemble(members, y[keep], ["a", "b", "c", "d", "e"], threshold=0.8)
    assert result.cv["excluded_classes"] == [3]
    assert any("one labelled example" in note for note in result.cv["notes"])
    assert result.predictions.probs[:, 4].max() < 1e-6
    assert "disagreement" not in result.predictions.reason  # one member cannot disagree
    json.dumps(result.metrics_json())


def test_two_labels_train_without_cross_validation(blobs):
    members = {"a": (blobs.X_train[[0, 40]], blobs.X_test)}
    y = blobs.y_train[[0, 40]]
    result = train_classifier_ensemble(members, y, [str(c) for c in range(5)], threshold=0.8)
    assert result.ensemble_metrics is None and result.qhat is None
    assert result.predictions.prediction_sets is None
    assert result.cv["n_splits"] == 0 and result.cv["notes"]


def test_conformal_off(blobs):
    members = {"a": (blobs.X_train, blobs.X_test)}
    # novelty off too (it flags ~5% of any set by design): nothing else can flag
    result = train_classifier_ensemble(
        members,
        blobs.y_train,
        [str(c) for c in range(5)],
        threshold=0.0,
        conformal_alpha=None,
        novelty=False,
    )
    assert result.qhat is None and not result.predictions.flagged.any()
    assert not result.predictions.novel.any() and result.metrics_json()["triage"]["novelty"] is None


def test_score_ensemble_end_to_end(digits):
    pixels, pooled, y = _two_views(digits)
    specs = [
        {"name": "grade", "min": 0, "max": 4, "step": 1},
        {"name": "size", "min": 0.0, "max": 1.0, "step": 0.25},
    ]
    # a grade that follows the digit (0-1 -> 0, 2-3 -> 1, ...) and a size in quarters
    Y = np.stack([y // 2, (y % 5) / 4], axis=1).astype(float)
    labelled = np.random.default_rng(1).permutation(len(y))[:450]
    members = {"pixels": (pixels[labelled], pixels), "pooled": (pooled[labelled], pooled)}
    result = train_score_ensemble(members, Y[labelled], specs, seed=0)

    p = result.predictions
    assert p.values.shape == (len(y), 2)
    assert set(np.unique(p.values[:, 0]).tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert set(np.unique(p.values[:, 1]).tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    # a linear head on pixels for a non-linear grade: well above a constant guess (0.6)
    assert np.mean(np.abs(p.values[:, 0] - Y[:, 0]) <= 1) > 0.75
    assert all(
        r is None
        or r == "novel"
        or r.startswith(("members differ by more than one step on ", "wide interval on "))
        for r in p.reason
    )
    wide = (p.interval_hi - p.interval_lo) / np.array([1.0, 0.25]) > 2 + 1e-5
    np.testing.assert_array_equal(p.flagged, np.any((p.spread > 1 + 1e-6) | wide, axis=1) | p.novel)
    assert not p.novel[labelled].any()  # a labelled item is never unlike the labelled items
    grade = result.ensemble_metrics["per_metric"]["grade"]
    assert grade["within_one_step"] > 0.75 and grade["spearman"] > 0.5
    assert grade["mae_ci"][0] <= grade["mae"] <= grade["mae_ci"][1]
    head = ScoreHead.from_state(result.heads["pixels"])
    np.testing.assert_allclose(head.predict_snapped(pixels), p.member_values["pixels"])
    json.dumps(result.metrics_json())


def test_single_member_score_ensemble_flags_wide_intervals(digits):
    pixels, _, y = _two_views(digits)
    specs = [{"name": "fibrosis", "min": 0, "max": 4, "step": 1}]
    # a grade the pixels barely explain: noise of about two steps
    noise = np.random.default_rng(0).integers(-2, 3, size=len(y))
    Y = np.clip(y // 2 + noise, 0, 4).astype(float)[:, None]
    labelled = np.random.default_rng(1).permutation(len(y))[:300]
    members = {"pixels": (pixels[labelled], pixels)}
    result = train_score_ensemble(members, Y[labelled], specs, seed=0, novelty=False)

    p = result.predictions
    assert not p.novel.any() and not p.spread.any()  # one member: no spread to flag on
    assert p.flagged.any()
    assert {r for r in p.reason if r is not None} == {"wide interval on fibrosis"}
    assert p.interval_lo is not None and p.interval_hi is not None
    inside = np.clip(p.raw, 0, 4)  # raw is unclipped; the interval is clipped to the range
    assert np.all(p.interval_lo <= inside + 1e-6) and np.all(inside <= p.interval_hi + 1e-6)
    radius = result.metrics_json()["conformal"]["radius"]["fibrosis"]
    assert radius > 1.0
    np.testing.assert_allclose(p.uncertainty, (p.interval_hi - p.interval_lo)[:, 0], rtol=1e-5)


def test_conformal_sets_need_enough_evaluated_labels(blobs):
    keep = np.concatenate([np.flatnonzero(blobs.y_train == c)[:2] for c in range(3)])
    members = {"a": (blobs.X_train[keep], blobs.X_test)}
    result = train_classifier_ensemble(members, blobs.y_train[keep], ["a", "b", "c"], threshold=0.5)
    assert result.qhat is None and result.predictions.prediction_sets is None
    assert "too few" in result.ensemble_metrics["conformal_note"]
