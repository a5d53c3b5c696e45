"""Each strategy on small synthetic arrays with a known answer (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.errors import LoupeError
from loupe.select import registry
from loupe.select.band import Band
from loupe.select.base import SelectionRequest
from loupe.select.builtin import register_builtin
from loupe.select.diverse import Diverse, k_center_greedy
from loupe.select.hybrid import Hybrid
from loupe.select.mistakes import Mistakes
from loupe.select.oddities import Oddities, outlier_scores
from loupe.select.simple import Flagged, Random
from loupe.select.uncertain import Uncertain, uncertainty_scores


def _req(n_rows: int, **kw: object) -> SelectionRequest:
    kw.setdefault("labelled", np.zeros(n_rows, dtype=bool))
    return SelectionRequest(ids=np.arange(100, 100 + n_rows, dtype=np.int64), **kw)


def test_registry_lists_builtins_and_rejects_unknown_names() -> None:
    register_builtin()
    names = registry.names()
    for name in (
        "uncertain",
        "diverse",
        "hybrid",
        "oddities",
        "band",
        "flagged",
        "random",
        "mistakes",
    ):
        assert name in names
        assert registry.get(name).info()["name"] == name
    with pytest.raises(LoupeError) as err:
        registry.get("nope")
    assert err.value.extra["known"] == names


def test_uncertainty_measures_rank_the_even_split_first() -> None:
    probs = np.array([[0.98, 0.01, 0.01], [0.34, 0.33, 0.33], [0.6, 0.39, 0.01], [0.5, 0.5, 0.0]])
    for measure in ("entropy", "least_confidence"):
        assert int(np.argmax(uncertainty_scores(probs, measure))) == 1
    margin = uncertainty_scores(probs, "margin")
    assert margin[3] == pytest.approx(1.0) and margin[0] < margin[2]
    labelled = np.array([False, True, False, False])
    got = Uncertain()(_req(4, probs=probs, labelled=labelled, params={"measure": "margin"}))
    assert got.ids.tolist() == [103, 102, 100]  # the labelled even split is left out
    scores = _req(4, spread=np.array([0.1, 2.0, 0.5, 1.0]), n=2)
    assert Uncertain()(scores).ids.tolist() == [101, 103]


def test_k_center_picks_one_item_per_far_cluster() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    x = np.concatenate([c + rng.normal(0, 0.1, (25, 2)) for c in centres]).astype(np.float32)
    rows, dists = k_center_greedy(x, 4, chunk=7)  # a small chunk exercises the blocking
    assert sorted(r // 25 for r in rows) == [0, 1, 2, 3]
    assert np.all(np.diff(dists[1:]) <= 1e-6)  # farthest first after the seed
    # cluster 0 labelled: the first pick comes from another cluster, the far corner
    labelled = np.zeros(100, dtype=bool)
    labelled[:25] = True
    got = Diverse()(_req(100, features=x, labelled=labelled, n=3))
    clusters = [(int(i) - 100) // 25 for i in got.ids]
    assert clusters[0] == 3 and sorted(clusters) == [1, 2, 3]


def test_blocked_items_are_never_returned() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), size=40)
    blocked = np.zeros(40, dtype=bool)
    blocked[::2] = True
    req = _req(40, features=x, probs=probs, blocked=blocked, flagged=np.ones(40, bool), n=40)
    for strategy in (Uncertain(), Diverse(), Hybrid(), Oddities(), Flagged(), Random()):
        ids = strategy(req).ids
        assert len(ids) == 20 and not np.any((ids - 100) % 2 == 0), strategy.name


def test_hybrid_takes_uncertain_items_from_different_clusters() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(c, 0.1, (20, 2)) for c in (0.0, 5.0, 10.0)]).astype(np.float32)
    probs = np.tile([[0.95, 0.05]], (60, 1))
    probs[[3, 4, 5, 25, 26, 45]] = [0.5, 0.5]  # uncertain in all three clusters
    got = Hybrid()(_req(60, features=x, probs=probs, n=3, params={"factor": 2}))
    assert sorted((int(i) - 100) // 20 for i in got.ids) == [0, 1, 2]
    assert np.allclose(got.scores, 1.0)


def test_oddities_rank_planted_outliers_first() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 64)).astype(np.float32)
    planted = [17, 123, 250]
    x[planted] += 12.0
    for method in ("both", "lof", "iforest"):
        scores = outlier_scores(x, method=method, seed=0)
        assert set(np.argsort(-scores)[:3].tolist()) == set(planted), method
    got = Oddities()(_req(300, features=x, n=3))
    assert sorted(got.ids.tolist()) == [100 + p for p in planted]


def test_band_picks_items_in_range_of_the_chosen_class() -> None:
    p1 = np.array([0.1, 0.35, 0.55, 0.79, 0.9, 0.5])
    probs = np.stack([1 - p1, p1], axis=1)
    labelled = np.array([False, False, False, False, False, True])
    req = _req(6, probs=probs, labelled=labelled, class_names=("neg", "pos"),
               params={"band_class": "pos", "band_lo": 0.3, "band_hi": 0.8})  # fmt: skip
    got = Band()(req)
    assert got.ids.tolist() == [102, 101, 103]  # nearest the middle 0.55 first
    req0 = _req(6, probs=probs, class_names=("neg", "pos"), params={"band_class": "neg"})
    assert sorted(Band()(req0).ids.tolist()) == [101, 102, 105]
    with pytest.raises(ValueError, match="band_class"):
        Band()(_req(6, probs=probs, class_names=("neg", "pos"), params={"band_class": "x"}))
    with pytest.raises(ValueError, match="band_lo"):
        Band()(_req(6, probs=probs, class_names=("neg", "pos"), params={"band_lo": 0.9}))


def test_flagged_and_random_use_only_the_pool() -> None:
    flagged = np.array([True, False, True, True])
    probs = np.array([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.55, 0.45]])
    got = Flagged()(_req(4, flagged=flagged, probs=probs, labelled=np.array([1, 0, 0, 0], bool)))
    assert got.ids.tolist() == [103, 102]
    a = Random()(_req(50, n=10, seed=4)).ids
    assert (
        len(set(a.tolist())) == 10 and a.tolist() == Random()(_req(50, n=10, seed=4)).ids.tolist()
    )


def test_mistakes_finds_flipped_labels() -> None:
    rng = np.random.default_rng(5)
    k, per = 3, 60
    centres = rng.normal(0, 6, (k, 16))
    x = np.concatenate([rng.normal(c, 1.0, (per, 16)) for c in centres]).astype(np.float32)
    truth = np.repeat(np.arange(k), per)
    labels = truth.copy()
    flipped = rng.choice(len(labels), 15, replace=False)
    labels[flipped] = (labels[flipped] + 1) % k
    labels[::20] = -1  # a few unlabelled rows
    flipped = np.array([f for f in flipped if labels[f] >= 0])
    req = _req(len(labels), features=x, labels=labels, labelled=labels >= 0,
               class_names=("a", "b", "c"), n=100)  # fmt: skip
    assert Mistakes().missing(req) == []
    got = Mistakes()(req)
    found = set((got.ids - 100).tolist())
    true = set(flipped.tolist())
    precision = len(found & true) / max(1, len(found))
    recall = len(found & true) / len(true)
    assert precision >= 0.6 and recall >= 0.6, (precision, recall)
    assert np.all(np.diff(got.scores) <= 1e-9)  # most suspicious first
    assert Mistakes().missing(_req(4, features=x[:4])) == ["labels"]


def test_missing_arrays_are_reported() -> None:
    bare = _req(5)
    assert Uncertain().missing(bare) == ["probs|spread"]
    assert Diverse().missing(bare) == ["features"]
    assert Hybrid().missing(bare) == ["features", "probs|spread"]
    assert Random().missing(bare) == []
    with pytest.raises(ValueError, match="rows"):
        _req(5, probs=np.zeros((4, 2)))


def test_k_center_on_a_pca_projection_when_the_exact_search_is_too_big(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from loupe.select import diverse

    monkeypatch.setattr(diverse, "EXACT_WORK", 0.0)
    rng = np.random.default_rng(6)
    centres = rng.normal(0, 5, (5, 300))
    x = np.concatenate([c + rng.normal(0, 0.5, (40, 300)) for c in centres]).astype(np.float32)
    labelled = np.zeros(200, dtype=bool)
    labelled[:40] = True
    rows, _ = k_center_greedy(x, 4, centres=labelled, max_dim=8)
    assert sorted(int(r) // 40 for r in rows) == [1, 2, 3, 4]
