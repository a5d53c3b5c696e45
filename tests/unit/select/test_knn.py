"""Cosine kNN against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.select.knn import cosine_knn, row_norms


def _brute(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return xn @ qn.T


def test_single_query_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 32)).astype(np.float32)
    q = rng.normal(size=32).astype(np.float32)
    rows, sims = cosine_knn(x, q, 10, chunk=37)
    brute = _brute(x, q[None])[:, 0]
    assert rows.tolist() == np.argsort(-brute)[:10].tolist()
    assert np.allclose(sims, np.sort(brute)[::-1][:10], atol=1e-5)
    # kept norms (one pass over the rows) give the same answer
    norms = row_norms(x, chunk=41)
    assert np.allclose(norms, np.linalg.norm(x, axis=1), rtol=1e-5)
    rows2, sims2 = cosine_knn(x, q, 10, chunk=37, norms=norms)
    assert rows2.tolist() == rows.tolist() and np.allclose(sims2, sims)


def test_several_queries_mean_and_max_and_exclude() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    queries = x[[3, 7]]
    exclude = np.zeros(300, dtype=bool)
    exclude[[3, 7]] = True
    rows, sims = cosine_knn(x, queries, 20, exclude=exclude, combine="max")
    brute = _brute(x, queries).max(axis=1)
    brute[[3, 7]] = -np.inf
    assert rows.tolist() == np.argsort(-brute)[:20].tolist()
    rows, _ = cosine_knn(x, queries, 20, exclude=exclude, combine="mean")
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    brute = _brute(x, qn.mean(axis=0, keepdims=True))[:, 0]
    brute[[3, 7]] = -np.inf
    assert rows.tolist() == np.argsort(-brute)[:20].tolist()
    assert 3 not in rows and 7 not in rows


def test_near_duplicates_come_first_and_bad_input_is_named() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    x[50] = x[10] * 3.0 + 0.01  # same direction, other scale
    rows, sims = cosine_knn(x, x[10], 1, exclude=np.arange(100) == 10)
    assert rows.tolist() == [50] and sims[0] > 0.999
    assert len(cosine_knn(x, x[0], 500)[0]) == 100
    with pytest.raises(ValueError, match="columns"):
        cosine_knn(x, np.zeros(3), 5)
    with pytest.raises(ValueError, match="combine"):
        cosine_knn(x, x[0], 5, combine="min")
