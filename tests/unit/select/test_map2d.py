"""The 2-D map (select/map2d.py) on real data: scikit-learn's handwritten digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.neighbors import KNeighborsClassifier

from loupe.select.map2d import (
    embed_2d,
    fit_map,
    load_model,
    place_by_neighbours,
    place_rows,
    reduce_pca,
    save_model,
    scale_to_unit,
)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32)[:900], y[:900]


def _neighbour_agreement(xy: np.ndarray, y: np.ndarray) -> float:
    """How often a point's 5 nearest map neighbours vote for its own digit (leave-one-out)."""
    knn = KNeighborsClassifier(n_neighbors=6).fit(xy, y)
    idx = knn.kneighbors(xy, return_distance=False)[:, 1:]
    votes = y[idx]
    majority = np.array([np.bincount(v, minlength=10).argmax() for v in votes])
    return float((majority == y).mean())


def test_umap_map_keeps_the_digits_apart(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    xy = embed_2d(x, method="umap", seed=0)
    assert xy.shape == (len(x), 2) and xy.dtype == np.float32
    assert np.isfinite(xy).all()
    assert np.abs(xy).max() <= 1.0 + 1e-6 and np.abs(xy).max() > 0.9
    assert _neighbour_agreement(xy, y) > 0.9
    again = embed_2d(x, method="umap", seed=0)
    np.testing.assert_allclose(xy, again, atol=1e-5)  # same seed, same map


def test_tsne_is_an_option(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    xy = embed_2d(x[:400], method="tsne", seed=0)
    assert xy.shape == (400, 2) and np.isfinite(xy).all()
    assert _neighbour_agreement(xy, y[:400]) > 0.85


def test_fit_on_a_sample_places_the_rest_by_neighbours(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    xy = embed_2d(x, method="umap", seed=0, fit_sample=300)
    assert xy.shape == (len(x), 2) and np.isfinite(xy).all()
    # the 600 placed rows land among their own digit as well as the fitted ones do
    assert _neighbour_agreement(xy, y) > 0.85


def test_place_by_neighbours_averages_the_nearest_anchors() -> None:
    anchors = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    anchor_xy = np.array([[1.0, 1.0], [5.0, 5.0], [9.0, 9.0]], dtype=np.float32)
    points = np.array([[0.1, 0.0], [9.9, 0.0]], dtype=np.float32)
    out = place_by_neighbours(points, anchors, anchor_xy, k=1)
    np.testing.assert_allclose(out, [[1.0, 1.0], [5.0, 5.0]])
    mid = place_by_neighbours(np.array([[5.0, 0.0]], np.float32), anchors, anchor_xy, k=2)
    np.testing.assert_allclose(mid, [[3.0, 3.0]], atol=1e-3)  # halfway: equal weights


def test_tiny_and_bad_inputs() -> None:
    assert embed_2d(np.zeros((0, 8), np.float32)).shape == (0, 2)
    two = embed_2d(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32))
    assert two.shape == (2, 2) and not np.allclose(two[0], two[1])
    with pytest.raises(ValueError, match="method"):
        embed_2d(np.ones((10, 4)), method="pca")
    with pytest.raises(ValueError, match="2-D"):
        embed_2d(np.ones(10))
    with pytest.raises(ValueError, match="NaN"):
        embed_2d(np.full((10, 4), np.nan))


@pytest.mark.parametrize("method", ["umap", "tsne"])
def test_fit_then_place_in_blocks_is_embed_2d(
    digits: tuple[np.ndarray, np.ndarray], method: str, tmp_path: Path
) -> None:
    """What the chunked map job does: fit once, place two halves apart (after a round
    trip through the saved model), scale the whole: embed_2d's map."""
    x = digits[0][:400]
    want = embed_2d(x, method=method, seed=0, fit_sample=50)
    model = fit_map(x, method=method, seed=0, fit_sample=50)
    assert len(model.sample) == 50 and model.components is not None
    assert model.components.shape == (50, 64) and model.components.dtype == np.float32
    save_model(tmp_path / "model.npz", model, rows=np.arange(400))
    loaded, extra = load_model(tmp_path / "model.npz")
    np.testing.assert_array_equal(extra["rows"], np.arange(400))
    halves = [place_rows(loaded, x[:170]), place_rows(loaded, x[170:], start=170)]
    got = scale_to_unit(np.concatenate(halves))
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the sampled rows kept their fitted positions; the other 350 were placed
    placed = np.concatenate(halves)
    np.testing.assert_array_equal(placed[model.sample], model.sample_xy)
    assert not np.allclose(want[:10], want[0])  # not a degenerate map


def test_saved_pca_reproduces_sklearn_transform(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x = digits[0]
    model = fit_map(x, method="umap", seed=0, fit_sample=40, pca_dims=12)
    assert model.mean is not None and model.components is not None
    anchors_again = reduce_pca(x, dims=12, seed=0)[model.sample]
    np.testing.assert_allclose(model.anchors, anchors_again, atol=1e-6)
    identity = fit_map(x[:, :8], method="umap", seed=0, fit_sample=40, pca_dims=12)
    assert identity.mean is None and identity.anchors.shape[1] == 8  # dims >= d: no PCA
    with pytest.raises(ValueError, match="dims"):
        place_rows(model, x[:5, :10])
