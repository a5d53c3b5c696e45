"""Real-ish data for the learn tests: scikit-learn's digits (real 8x8 images), Gaussian blobs
and, as images unlike any digit, scikit-image's LFW crops (real photos) shrunk to 8x8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_blobs


@dataclass
class Split:
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def per_class_split(X: np.ndarray, y: np.ndarray, per_class: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    train = np.concatenate(
        [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    )
    test = np.setdiff1d(np.arange(len(y)), train)
    names = [str(c) for c in np.unique(y)]
    return Split(X[train], y[train], X[test], y[test], names)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features (1797, 64) L2-normalised float32, labels, images (1797, 8, 8) in [0, 1])``."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    return l2_normalise(data.data / 16.0), data.target.astype(np.int64), images


@pytest.fixture(scope="session")
def digits_20(digits: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Split:
    """20 labels per class for training, the other ~1600 digits for testing."""
    X, y, _ = digits
    return per_class_split(X, y, 20)


@pytest.fixture(scope="session")
def blobs() -> Split:
    X, y = make_blobs(n_samples=1500, centers=5, n_features=32, cluster_std=4.0, random_state=0)
    return per_class_split(l2_normalise(X + 10.0), y.astype(np.int64), 30)


@pytest.fixture(scope="session")
def faces_8x8() -> np.ndarray:
    """``(200, 64)`` L2-normalised float32: ``skimage.data.lfw_subset()`` (100 faces, 100
    non-faces, real 25x25 photo crops in the scikit-image wheel) resized to 8x8, the
    digits' pixel space: images unlike every digit."""
    import skimage.data
    from skimage.transform import resize

    crops = skimage.data.lfw_subset()
    small = np.stack([resize(crop, (8, 8), anti_aliasing=True) for crop in crops])
    return l2_normalise(small.reshape(len(small), -1))
