"""The paths that keep strategies fast on big pools: sampling, shortlists, one BLAS thread."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.select import diverse
from loupe.select.base import SelectionRequest, one_blas_thread
from loupe.select.diverse import Diverse, k_center_greedy, pca_project
from loupe.select.hybrid import Hybrid
from loupe.select.uncertain import uncertainty_scores


def _clusters(per: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, (6, dim))
    return np.concatenate([c + rng.normal(0, 0.3, (per, dim)) for c in centres]).astype(np.float32)


def test_diverse_samples_a_big_pool_and_still_covers_every_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(diverse, "MAX_CANDIDATES", 60)
    x = _clusters(50, 16, seed=0)  # 300 rows: above the (patched) sample size
    labelled = np.zeros(300, dtype=bool)
    labelled[:50] = True  # cluster 0 is labelled
    blocked = np.zeros(300, dtype=bool)
    blocked[50:55] = True  # leased to someone else: cluster 1 counts as covered too
    req = SelectionRequest(
        ids=np.arange(300, dtype=np.int64), labelled=labelled, features=x, blocked=blocked, n=4
    )
    first = Diverse()(req)
    rows = first.ids
    assert len(set(rows.tolist())) == 4
    assert not labelled[rows].any() and not blocked[rows].any()
    assert sorted(int(r) // 50 for r in rows) == [2, 3, 4, 5]  # one per uncovered cluster
    again = Diverse()(req)
    assert np.array_equal(again.ids, rows)  # seeded: the same sample, the same picks


def test_hybrid_on_its_shortlist_matches_the_search_over_every_row() -> None:
    rng = np.random.default_rng(3)
    x = _clusters(40, 8, seed=1)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=240)
    labelled = np.zeros(240, dtype=bool)
    labelled[rng.choice(240, 30, replace=False)] = True
    req = SelectionRequest(
        ids=np.arange(1000, 1240, dtype=np.int64),
        labelled=labelled,
        features=x,
        probs=probs,
        n=6,
        params={"factor": 4},
    )
    got = Hybrid()(req)
    # the same k-center search run over all rows, the shortlist as candidates
    score = uncertainty_scores(probs, "margin")
    pool = np.flatnonzero(~labelled)
    shortlist = pool[np.lexsort((pool, -score[pool]))][:24]
    candidates = np.zeros(240, dtype=bool)
    candidates[shortlist] = True
    rows, _ = k_center_greedy(x, 6, centres=labelled, candidates=candidates)
    assert np.array_equal(got.ids, rows + 1000)


def test_pca_projection_keeps_the_distances_of_low_rank_data() -> None:
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(3000, 5)) @ rng.normal(size=(5, 200))).astype(np.float32)
    p = pca_project(x, 8)
    assert p.shape == (3000, 8) and p.dtype == np.float32
    a, b = rng.choice(3000, 50), rng.choice(3000, 50)
    exact = np.linalg.norm(x[a] - x[b], axis=1)
    projected = np.linalg.norm(p[a] - p[b], axis=1)
    assert np.allclose(projected, exact, rtol=1e-3, atol=1e-3)


def test_one_blas_thread_limits_blas_inside_the_block_only() -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    np.ones((2, 2)) @ np.ones((2, 2))  # BLAS loaded
    with one_blas_thread():
        assert blas_threads() and all(n == 1 for n in blas_threads())
