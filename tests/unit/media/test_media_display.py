"""to_display_uint8: one deterministic normalisation for every dtype and channel count."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.media import to_display_uint8


def test_uint8_gray_is_kept_and_repeated() -> None:
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = to_display_uint8(gray, channel_axis=None)
    assert rgb.shape == (16, 16, 3)
    assert rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], gray)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert np.array_equal(to_display_uint8(gray), rgb)  # 2-D ignores channel_axis


def test_uint16_uses_robust_percentile_window() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 2000, size=(200, 200)).astype(np.uint16)
    image[0, 0] = 65535  # a hot pixel must not squash the contrast
    rgb = to_display_uint8(image, channel_axis=None)
    low, high = np.percentile(image, [0.5, 99.5])
    assert rgb[0, 0, 0] == 255
    middle = image == np.uint16(round((low + high) / 2))
    assert middle.any()
    assert np.all(np.abs(rgb[middle][:, 0].astype(int) - 128) <= 1)
    assert rgb.min() == 0 and rgb.max() == 255
    assert np.mean(rgb[..., 0]) == pytest.approx(127.5, abs=8)


def test_float_with_nan_and_constant() -> None:
    image = np.linspace(-1.0, 1.0, 100 * 100, dtype=np.float32).reshape(100, 100)
    image[5, 5] = np.nan
    rgb = to_display_uint8(image, channel_axis=None)
    assert rgb[5, 5].tolist() == [0, 0, 0]
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert np.all(np.diff(rgb[50, :, 0].astype(int)) >= 0)  # monotone mapping
    constant = np.full((4, 4), 3.5)
    assert not to_display_uint8(constant, channel_axis=None).any()


def test_rgba_is_composited_on_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [255, 0, 0, 255]  # opaque red
    rgba[0, 1] = [255, 0, 0, 0]  # fully transparent -> white
    rgba[1, 0] = [0, 0, 0, 128]  # half black
    rgb = to_display_uint8(rgba)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [127, 127, 127]


def test_channel_axis_and_many_channels() -> None:
    planes = np.stack([np.full((3, 5), v, dtype=np.uint8) for v in (10, 20, 30, 40, 50)])
    rgb = to_display_uint8(planes, channel_axis=0)
    assert rgb.shape == (3, 5, 3)
    assert rgb[0, 0].tolist() == [10, 20, 30]  # >4 channels: the first three
    two = np.stack([np.full((3, 5), 7, np.uint8), np.full((3, 5), 9, np.uint8)], axis=-1)
    assert to_display_uint8(two)[0, 0].tolist() == [7, 9, 0]


def test_16bit_rgb_window_is_shared_across_channels() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint16)
    image[..., 0] = 4000
    image[..., 1] = 2000
    image[:5, :, 2] = 4000  # blue spans the range, so both ends exist
    rgb = to_display_uint8(image)
    assert rgb[0, 0].tolist() == [255, 128, 255]
    assert rgb[9, 9].tolist() == [255, 128, 0]


def test_bool_and_determinism() -> None:
    mask = np.eye(4, dtype=bool)
    assert to_display_uint8(mask, channel_axis=None)[..., 0].tolist() == (np.eye(4) * 255).tolist()
    data = np.random.default_rng(5).normal(size=(3000, 1000)).astype(np.float64)
    assert np.array_equal(to_display_uint8(data, channel_axis=None), to_display_uint8(data.copy()))


def test_invalid_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="channel_axis"):
        to_display_uint8(np.zeros((4, 4, 3)), channel_axis=None)
    with pytest.raises(ValueError, match="channel_axis"):
        to_display_uint8(np.zeros((4, 4, 3)), channel_axis=3)
    with pytest.raises(ValueError, match="array"):
        to_display_uint8(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="array"):
        to_display_uint8(np.zeros((0, 4)))
