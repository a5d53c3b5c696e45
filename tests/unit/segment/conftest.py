"""Shared fixtures of the 2-D segmentation science tests: an ONNX export cache and real
images from scikit-image."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data


@pytest.fixture(scope="session")
def onnx_cache() -> Path:
    """ONNX exports shared across test sessions (keyed by weights hash and recipe,
    written atomically): the export costs 5-15 s once, then every test reuses it."""
    folder = Path(tempfile.gettempdir()) / "loupe-test-cache" / "pixel-onnx"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def coins() -> np.ndarray:
    """scikit-image's ``coins`` (303 x 384, uint8 gray)."""
    return skimage.data.coins()


@pytest.fixture(scope="session")
def astronaut_small() -> np.ndarray:
    """The top-left 160 x 192 of scikit-image's ``astronaut`` (uint8 RGB)."""
    return np.ascontiguousarray(skimage.data.astronaut()[:160, :192])


@pytest.fixture()
def two_regions() -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright disk on a darker noisy background, and its true mask."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:128, :160]
    truth = (rows - 60) ** 2 + (cols - 90) ** 2 < 35**2
    image = np.where(truth, 0.65, 0.35) + rng.normal(0, 0.12, truth.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8), truth
