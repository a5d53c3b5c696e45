"""Issue 10, item 2: items unlike every labelled item are flagged "novel"; a review budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loupe.learn.novelty import knn_distance, novelty_scores, novelty_threshold
from loupe.learn.train import train_classifier_ensemble, train_score_ensemble

from .conftest import l2_normalise


def _brute_knn(
    queries: np.ndarray, reference: np.ndarray, k: int, loo: bool, centre: float = 0.0
) -> np.ndarray:
    q, r = l2_normalise(queries - centre), l2_normalise(reference - centre)
    distance = 1.0 - q.astype(np.float64) @ r.T.astype(np.float64)
    if loo:
        np.fill_diagonal(distance, np.inf)
    return np.sort(distance, axis=1)[:, :k].mean(axis=1)


def test_knn_distance_is_exact_in_chunks_and_leaves_one_out():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(37, 16)).astype(np.float32)
    queries = rng.normal(size=(101, 16)).astype(np.float32) * 3.0  # norms do not matter
    for k in (1, 3):
        got = knn_distance(queries, reference, k=k, chunk_rows=10)
        np.testing.assert_allclose(got, _brute_knn(queries, reference, k, False), atol=1e-5)
        loo = knn_distance(reference, reference, k=k, exclude_self=True, chunk_rows=8)
        np.testing.assert_allclose(loo, _brute_knn(reference, reference, k, True), atol=1e-5)
        # about a centre: cosines of (row - centre), without copying the queries
        centre = rng.normal(size=16).astype(np.float32)
        got = knn_distance(queries, reference, k=k, centre=centre, chunk_rows=7)
        want = _brute_knn(queries, reference, k, False, centre)
        np.testing.assert_allclose(got, want, atol=1e-4)
        loo = knn_distance(reference, reference, k=k, exclude_self=True, centre=centre)
        np.testing.assert_allclose(
            loo, _brute_knn(reference, reference, k, True, centre), atol=1e-4
        )
    # a query equal to a reference row is at distance 0 from it
    assert knn_distance(reference[:3], reference)[0] == pytest.approx(0.0, abs=1e-6)
    assert knn_distance(reference[:1], reference[:1], exclude_self=True)[0] == 0.0  # no other
    with pytest.raises(ValueError, match="k"):
        knn_distance(queries, reference, k=0)


def test_threshold_comes_from_the_labelled_set():
    rng = np.random.default_rng(1)
    labelled = rng.normal(size=(50, 8))
    loo = _brute_knn(labelled, labelled, 1, True)
    assert novelty_threshold(labelled, quantile=0.9, margin=1.5) == pytest.approx(
        1.5 * np.quantile(loo, 0.9), rel=1e-5
    )
    assert novelty_threshold(labelled[:1]) is None  # one label: no leave-one-out distance
    with pytest.raises(ValueError, match="quantile"):
        novelty_threshold(labelled, quantile=0.0)


def test_photos_among_digits_are_novel_and_held_out_digits_mostly_not(digits, faces_8x8):
    X, y, _ = digits
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:20] for c in range(10)])
    everything = np.concatenate([X, faces_8x8])
    pooled = l2_normalise(np.abs(everything @ rng.normal(size=(64, 24))))  # a second "backbone"
    members = {
        "pixels": (X[labelled], everything),
        "projected": (pooled[labelled], pooled),
    }
    found = novelty_scores(members)
    held_out = np.setdiff1d(np.arange(len(y)), labelled)
    assert found.novel[len(y) :].mean() > 0.9  # the photos
    assert found.novel[held_out].mean() < 0.1  # digits like the labelled ones
    assert not found.novel[labelled].any()
    np.testing.assert_allclose(
        found.novelty, (found.member_novelty["pixels"] + found.member_novelty["projected"]) / 2
    )
    json.dumps(found.describe())


def test_unlike_images_are_flagged_novel_never_drafted_confidently_unflagged(digits, faces_8x8):
    """Before issue 10 the photos were drafted as digits and (one member, no other
    reason firing) most went unflagged; now (nearly) every photo the head drafts at
    > 80% is flagged novel."""
    X, y, _ = digits
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:20] for c in range(5)])
    everything = np.concatenate([X, faces_8x8])
    result = train_classifier_ensemble(
        {"pixels": (X[labelled], everything)}, y[labelled], [str(c) for c in range(5)]
    )
    p = result.predictions
    photos = slice(len(y), None)
    assert np.mean(np.asarray(p.reason[photos]) == "novel") > 0.9
    confident_photos = p.confidence[photos] > 0.8
    assert confident_photos.any()  # the head alone would have trusted these
    assert p.flagged[photos][confident_photos].mean() > 0.95
    assert result.metrics_json()["flag_reasons"]["novel"] == int(p.novel.sum())


def test_review_budget_caps_flags_keeping_novel_then_least_confident(digits, faces_8x8):
    X, y, _ = digits
    rng = np.random.default_rng(0)
    labelled = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:20] for c in range(10)])
    everything = np.concatenate([X, faces_8x8])
    members = {"pixels": (X[labelled], everything)}
    names = [str(c) for c in range(10)]
    free = train_classifier_ensemble(members, y[labelled], names)
    capped = train_classifier_ensemble(members, y[labelled], names, max_flag_fraction=0.2)
    n = len(everything)
    assert free.predictions.flagged.sum() > 0.2 * n  # the budget has work to do
    assert capped.predictions.flagged.sum() == int(0.2 * n)
    assert capped.triage["flagged_before_budget"] == int(free.predictions.flagged.sum())
    assert capped.metrics_json()["triage"]["max_flag_fraction"] == 0.2
    # capped flags are a subset, with the same reasons
    kept = capped.predictions.flagged
    assert not (kept & ~free.predictions.flagged).any()
    assert [capped.predictions.reason[i] for i in np.flatnonzero(kept)] == [
        free.predictions.reason[i] for i in np.flatnonzero(kept)
    ]
    # every novel item fits in this budget, and it is kept; the rest are the least confident
    novel = free.predictions.novel
    assert novel.sum() < int(0.2 * n) and kept[novel].all()
    others = kept & ~novel
    dropped = free.predictions.flagged & ~kept
    assert capped.predictions.confidence[others].max() <= (
        capped.predictions.confidence[dropped].min() + 1e-6
    )
    np.testing.assert_array_equal(capped.predictions.novel, novel)  # novel stays known
    # a budget smaller than the novel items: only novel ones, the most novel
    tight = train_classifier_ensemble(members, y[labelled], names, max_flag_fraction=0.05)
    kept = tight.predictions.flagged
    assert kept.sum() == int(0.05 * n) and tight.predictions.novel[kept].all()
    assert tight.predictions.novelty[kept].min() >= tight.predictions.novelty[novel & ~kept].max()
    with pytest.raises(ValueError, match="max_flag_fraction"):
        train_classifier_ensemble(members, y[labelled], names, max_flag_fraction=1.5)


def test_score_ensemble_flags_unlike_images_and_respects_the_budget(digits, faces_8x8):
    X, y, _ = digits
    specs = [{"name": "grade", "min": 0, "max": 9, "step": 1}]
    labelled = np.random.default_rng(2).permutation(len(y))[:300]
    everything = np.concatenate([X, faces_8x8])
    members = {"pixels": (X[labelled], everything)}
    result = train_score_ensemble(members, y[labelled, None].astype(float), specs)
    p = result.predictions
    assert p.novel[len(y) :].mean() > 0.9
    assert p.reason[len(y)] == "novel" and p.flagged[len(y) :][p.novel[len(y) :]].all()
    assert result.metrics_json()["triage"]["novelty"]["n_novel"] == int(p.novel.sum())
    capped = train_score_ensemble(
        members, y[labelled, None].astype(float), specs, max_flag_fraction=0.05
    )
    assert capped.predictions.flagged.sum() == int(0.05 * len(everything))
    # the most novel are kept
    kept_novelty = capped.predictions.novelty[capped.predictions.flagged]
    dropped = p.flagged & ~capped.predictions.flagged
    assert kept_novelty.min() >= p.novelty[dropped].max() - 1e-6
