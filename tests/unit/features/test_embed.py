"""Embeddings of real images: shapes, unit norms, determinism, any input kind, and proof
that the ImageNet weights are really loaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from loupe.features import (
    Backbone,
    build_imagenet_classifier,
    fit_square,
    preprocessing_of,
    read_rgb,
)
from loupe.media import read_image, to_display_uint8

BackboneFor = Callable[[str], Backbone]
EMBEDDERS = ["classic", "effnet-lite0", "mobilenet_v2"]
CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embed_gives_unit_float32_rows(
    name: str, backbone_for: BackboneFor, photos: dict[str, np.ndarray]
) -> None:
    backbone = backbone_for(name)
    images = list(photos.values())
    matrix = backbone.embed(images, batch_size=3)
    assert matrix.shape == (len(images), backbone.dim)
    assert matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(matrix).all()
    # Different pictures give different vectors; the same pictures the same ones.
    assert cosine(matrix[0], matrix[1]) < 0.99
    again = backbone.embed(images[::-1], batch_size=2)[::-1]
    np.testing.assert_allclose(again, matrix, atol=1e-5)


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embed_paths_handles_every_kind_of_file(
    name: str, backbone_for: BackboneFor, image_files: dict[str, Path]
) -> None:
    backbone = backbone_for(name)
    names = [
        "astronaut.png",
        "astronaut16.tif",
        "astronaut_rgba.png",
        "corrupt.jpg",
        "camera.png",
        "coffee.fits",
        "empty.png",
        "chelsea.jpg",
    ]
    seen: list[tuple[int, int]] = []
    matrix, errors = backbone.embed_paths(
        [image_files[n] for n in names],
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert matrix.shape == (len(names), backbone.dim)
    assert set(errors) == {3, 6}
    assert "JPEG" in errors[3] or "corrupt" in errors[3]
    assert "empty" in errors[6]
    assert not matrix[[3, 6]].any()
    good = [k for k in range(len(names)) if k not in errors]
    np.testing.assert_allclose(np.linalg.norm(matrix[good], axis=1), 1.0, atol=1e-5)
    assert seen[-1] == (len(names), len(names))
    # 16-bit and RGBA (opaque) versions of one picture embed like the uint8 RGB one; the
    # 16-bit one is contrast-stretched to its 0.5..99.5 percentiles, hence "nearly".
    assert cosine(matrix[0], matrix[1]) > 0.99
    assert cosine(matrix[0], matrix[2]) > 0.999


@pytest.mark.parametrize("name", ["effnet-lite0", "mobilenet_v2"])
def test_imagenet_weights_are_loaded_chelsea_is_a_cat(
    name: str, photos: dict[str, np.ndarray]
) -> None:
    import torch

    classifier = build_imagenet_classifier(name)
    preprocessing = preprocessing_of(name)
    batch = fit_square(photos["chelsea"], size=preprocessing.size)[None]
    with torch.inference_mode():
        logits = classifier(torch.from_numpy(preprocessing.normalise(batch)))
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(logits.softmax(dim=1)[0, CAT_CLASSES.start : CAT_CLASSES.stop].sum()) > 0.5


def test_onnx_and_torch_eager_agree(
    onnx_cache: Path, backbone_for: BackboneFor, photos: dict[str, np.ndarray]
) -> None:
    from loupe.features import get_backbone

    fast = backbone_for("effnet-lite0")
    eager = get_backbone("effnet-lite0", runtime="torch", device="cpu", cache_dir=onnx_cache)
    images = [photos["astronaut"], photos["chelsea"]]
    onnx_rows, eager_rows = fast.embed(images), eager.embed(images)
    assert getattr(fast, "runtime_used", None) == "onnx"
    assert getattr(eager, "runtime_used", None) == "torch-cpu"
    np.testing.assert_allclose(onnx_rows, eager_rows, atol=1e-4)
    assert list(onnx_cache.glob("effnet-lite0-*.onnx"))


def test_embed_rejects_images_that_are_not_uint8_rgb(backbone_for: BackboneFor) -> None:
    backbone = backbone_for("classic")
    with pytest.raises(ValueError, match=r"images\[1\] must be uint8"):
        backbone.embed([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)])
    with pytest.raises(ValueError, match="batch_size"):
        backbone.embed([], batch_size=0)
    assert backbone.embed([]).shape == (0, backbone.dim)


def test_fit_square_resizes_the_shorter_side_and_crops_the_centre() -> None:
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, 100:200] = 255  # the centre third is white
    square = fit_square(wide, size=50)
    assert square.shape == (50, 50, 3)
    assert square[:, 2:-2].min() == 255  # the antialiased resize blurs the edges only
    tiny = fit_square(np.full((3, 5, 3), 7, np.uint8), size=64)
    assert tiny.shape == (64, 64, 3)
    assert (tiny == 7).all()


def test_read_rgb_decodes_small_and_keeps_thin_images_sharp(tmp_path: Path) -> None:
    from PIL import Image

    thin = np.tile(np.arange(2000, dtype=np.uint16)[None, :] % 256, (150, 1)).astype(np.uint8)
    Image.fromarray(thin).save(tmp_path / "thin.png")
    square = read_rgb(tmp_path / "thin.png", size=224)
    assert square.shape == (224, 224, 3)
    # The shorter side (150 rows) is upsampled to 224, never read at under 150 rows.
    assert read_image(tmp_path / "thin.png", max_side=448).shape[0] < 224
    expected = fit_square(to_display_uint8(thin, channel_axis=None), size=224)
    np.testing.assert_array_equal(square, expected)
