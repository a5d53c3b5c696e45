"""Pixel features: filter bank and ONNX hypercolumns on real images, grids, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.features.base import WeightsNotFound
from loupe.features.grids import block_mean, resample_grid, upsample_to_pixels
from loupe.features.hypercolumns import (
    BAND_CONTEXT,
    HYPERCOLUMN_DIMS,
    cnn_hypercolumn,
    dino_hypercolumn,
)
from loupe.features.pixels import (
    FILTER_BANK_DIM,
    filter_bank,
    grid_shape,
    parse_feature_set,
    pixel_features,
    tile_margin,
)


def test_filter_bank_shape_and_dtype(coins: np.ndarray) -> None:
    for stride in (1, 2, 4):
        bank = filter_bank(coins, stride=stride)
        assert bank.shape == (*grid_shape(coins.shape, stride), FILTER_BANK_DIM)
        assert bank.dtype == np.float32
        assert np.isfinite(bank).all()
    # Coins are brighter than the background: the smoothed intensity features say so.
    bank = filter_bank(coins, stride=2)
    bright = coins[::2, ::2][: bank.shape[0], : bank.shape[1]] > 120
    assert bank[bright, 0].mean() > bank[~bright, 0].mean()


def test_filter_bank_equals_scikit_image(coins: np.ndarray) -> None:
    # The float32 separable implementation computes multiscale_basic_features' values.
    from skimage.feature import multiscale_basic_features

    gray = coins.astype(np.float32)
    gray = (gray - gray.min()) / (gray.max() - gray.min())
    expected = multiscale_basic_features(gray, sigma_min=0.5, sigma_max=16, num_sigma=6)
    got = filter_bank(coins, stride=1, sigma_min=0.5, sigma_max=16)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # Stride 2: the same bank on the 2 x 2 block means, scales halved.
    half = block_mean(gray, 2)
    expected = multiscale_basic_features(half, sigma_min=0.5, sigma_max=16, num_sigma=6)
    np.testing.assert_allclose(filter_bank(coins, stride=2), expected, rtol=0, atol=1e-6)
    # Stride 4: those, block-averaged once more.
    np.testing.assert_allclose(
        filter_bank(coins, stride=4), block_mean(expected, 2), rtol=0, atol=1e-6
    )


def test_filter_bank_checks_its_arguments(coins: np.ndarray) -> None:
    with pytest.raises(ValueError, match="stride"):
        filter_bank(coins, stride=3)
    with pytest.raises(ValueError, match="sigma"):
        filter_bank(coins, sigma_min=4, sigma_max=2)
    with pytest.raises(ValueError, match="channel_axis"):
        filter_bank(np.zeros((8, 8, 3)))


@pytest.mark.parametrize("name", ["effnet-lite0", "mobilenet_v2"])
def test_cnn_hypercolumns_through_onnx(
    name: str, astronaut_small: np.ndarray, onnx_cache: Path
) -> None:
    features = pixel_features(astronaut_small, name, channel_axis=-1, cache_dir=onnx_cache)
    (part,) = features.parts
    assert part.stride == 4
    assert part.data.shape == (40, 48, HYPERCOLUMN_DIMS[name])
    assert part.data.dtype == np.float32
    assert np.isfinite(part.data).all()
    assert list(onnx_cache.glob(f"pixels-{name}-*.onnx"))
    # ImageNet features separate the astronaut's white suit from the black background.
    suit = part.data[30:40, 20:30].mean(axis=(0, 1))
    sky = part.data[2:8, 2:8].mean(axis=(0, 1))
    assert np.linalg.norm(suit - sky) > 0.1 * np.linalg.norm(sky)


def test_concurrent_row_bands_equal_one_pass(onnx_cache: Path) -> None:
    import skimage.data

    # Tall enough for two bands: the 512 x 512 astronaut stacked twice (1024 rows).
    image = np.ascontiguousarray(np.concatenate([skimage.data.astronaut()[:, :160]] * 2))
    assert image.shape[0] >= 2 * 4 * BAND_CONTEXT
    whole = cnn_hypercolumn(image, "effnet-lite0", stride=4, cache_dir=onnx_cache, threads=1)
    bands = cnn_hypercolumn(image, "effnet-lite0", stride=4, cache_dir=onnx_cache, threads=2)
    assert bands.shape == whole.shape == (256, 40, HYPERCOLUMN_DIMS["effnet-lite0"])
    # Taps up to stride 8 see less than the band context: identical.
    np.testing.assert_allclose(bands[..., :80], whole[..., :80], rtol=1e-5, atol=1e-5)
    # The stride-16 tap reaches a little further: equal up to a small error at the seam.
    relative = np.abs(bands[..., 80:] - whole[..., 80:]).mean() / whole[..., 80:].std()
    assert relative < 1e-3, relative
    with pytest.raises(ValueError, match="threads"):
        cnn_hypercolumn(image, "effnet-lite0", stride=4, cache_dir=onnx_cache, threads=0)


def test_default_set_has_parts_on_their_grids(coins: np.ndarray, onnx_cache: Path) -> None:
    features = pixel_features(coins, cache_dir=onnx_cache)
    assert [(p.name, p.stride) for p in features.parts] == [("effnet-lite0", 4), ("filters", 2)]
    assert features.stride == 2 and features.dim == 192 + FILTER_BANK_DIM
    assert features.sample(np.array([0, 302]), np.array([0, 383])).shape == (2, features.dim)


def test_tiles_equal_the_whole_image(coins: np.ndarray, onnx_cache: Path) -> None:
    image = np.ascontiguousarray(coins[:, :352])
    whole = pixel_features(image, "filters+effnet-lite0", cache_dir=onnx_cache)
    tiled = pixel_features(image, "filters+effnet-lite0", cache_dir=onnx_cache, tile=64)
    # The filter bank sees its full support in every tile: equal everywhere.
    np.testing.assert_allclose(tiled.parts[0].data, whole.parts[0].data, rtol=1e-4, atol=1e-4)
    # The CNN's deepest tap sees further than the margin: equal up to a small error in
    # the interior (away from the image edges, where the padding differs).
    inner = slice(8, -8)
    a = tiled.parts[1].data[inner, inner]
    b = whole.parts[1].data[inner, inner]
    relative = np.abs(a - b).mean() / b.std()
    assert relative < 0.05, relative
    assert tile_margin() % 32 == 0


def test_resampling_matches_bilinear_interpolation() -> None:
    import torch
    import torch.nn.functional as F  # noqa: N812

    rng = np.random.default_rng(0)
    grid = rng.random((9, 13, 3), dtype=np.float32)
    for factor in (2, 4, 8):
        expected = F.interpolate(
            torch.from_numpy(grid.transpose(2, 0, 1))[None],
            scale_factor=factor,
            mode="bilinear",
            align_corners=False,
        )[0].numpy()
        got = resample_grid(grid, 4 * factor, 4, (9 * factor, 13 * factor))
        np.testing.assert_allclose(got, expected.transpose(1, 2, 0), atol=1e-5)
    assert upsample_to_pixels(grid[..., 0], 4, (35, 50)).shape == (35, 50)
    down = resample_grid(grid, 2, 4, (5, 7))
    np.testing.assert_allclose(down[0, 0], grid[:2, :2].mean(axis=(0, 1)), rtol=1e-6)


def test_feature_sets_are_checked() -> None:
    assert parse_feature_set("mobilenet_v2+filters") == ("mobilenet_v2", "filters")
    for bad in ("", "filters+filters", "resnet50", "filters+"):
        if bad == "filters+":
            assert parse_feature_set(bad) == ("filters",)
            continue
        with pytest.raises(ValueError, match="feature_set"):
            parse_feature_set(bad)


def test_dinov2_without_weights_says_where_to_put_them(
    astronaut_small: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOUPE_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFound, match="LOUPE_WEIGHTS") as caught:
        dino_hypercolumn(astronaut_small, stride=8)
    assert "dinov2_vits14_pretrain.pth" in str(caught.value)


def test_dinov2_patch_features_from_a_weights_file(
    astronaut_small: np.ndarray, tmp_path: Path
) -> None:
    # The real checkpoint is not shipped in any package: a randomly initialised ViT-S/14
    # saved under the official file name exercises the same loading and resampling path.
    import timm
    import torch

    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "dinov2_vits14_pretrain.pth")
    features = pixel_features(
        astronaut_small, "dinov2-s+filters", channel_axis=-1, weights_dir=tmp_path
    )
    assert [(p.name, p.stride, p.data.shape) for p in features.parts] == [
        ("dinov2-s", 8, (20, 24, HYPERCOLUMN_DIMS["dinov2-s"])),
        ("filters", 2, (80, 96, FILTER_BANK_DIM)),
    ]
    assert np.isfinite(features.parts[0].data).all()
