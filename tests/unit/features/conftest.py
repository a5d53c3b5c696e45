"""Real images for the feature tests (scikit-image's photos, written in several formats)
and backbones whose ONNX exports are cached once per test session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data

from loupe.features import Backbone, get_backbone


def gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """uint8 RGB photos: astronaut, coffee, chelsea (a cat) and camera (grayscale)."""
    return {
        "astronaut": skimage.data.astronaut(),
        "coffee": skimage.data.coffee(),
        "chelsea": skimage.data.chelsea(),
        "camera": gray_to_rgb(skimage.data.camera()),
    }


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="session")
def backbone_for(onnx_cache: Path) -> Callable[[str], Backbone]:
    def make(name: str) -> Backbone:
        return get_backbone(name, cache_dir=onnx_cache, allow_download=False)

    return make


@pytest.fixture(scope="session")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same pictures as files of several kinds, plus a corrupt one.

    ``astronaut.png`` (uint8 RGB), ``astronaut16.tif`` (the same scaled to 16 bits),
    ``astronaut_rgba.png`` (opaque alpha), ``camera.png`` (grayscale), ``coffee.fits``
    (float32, one channel of coffee), ``chelsea.jpg``, ``corrupt.jpg`` (a JPEG header
    and garbage) and ``empty.png`` (0 bytes).
    """
    import tifffile
    from astropy.io import fits
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    astronaut = skimage.data.astronaut()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    tifffile.imwrite(folder / "astronaut16.tif", astronaut.astype(np.uint16) * 257)
    rgba = np.concatenate([astronaut, np.full(astronaut.shape[:2] + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(folder / "astronaut_rgba.png")
    Image.fromarray(skimage.data.camera()).save(folder / "camera.png")
    fits.PrimaryHDU(skimage.data.coffee()[..., 1].astype(np.float32)).writeto(
        folder / "coffee.fits"
    )
    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.jpg", quality=90)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    (folder / "empty.png").write_bytes(b"")
    return {path.name: path for path in folder.iterdir()}
