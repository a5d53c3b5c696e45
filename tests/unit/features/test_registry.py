"""The backbone registry: names, metadata for /api/info, lazy torch import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from loupe.features import (
    BACKBONES,
    DEFAULT_BACKBONE,
    Backbone,
    FeatureError,
    available_backbones,
    get_backbone,
    preprocessing_of,
    register_backbone,
)

NAMES = {"effnet-lite0", "mobilenet_v2", "classic", "resnet18", "dinov2-s"}


def test_registry_lists_the_five_backbones() -> None:
    assert NAMES <= set(BACKBONES)
    assert DEFAULT_BACKBONE == "effnet-lite0"
    dims = {name: BACKBONES[name].dim for name in NAMES}
    assert dims == {
        "effnet-lite0": 1280,
        "mobilenet_v2": 1280,
        "classic": 480,
        "resnet18": 512,
        "dinov2-s": 384,
    }


def test_available_backbones_describes_each_one() -> None:
    rows = {row["name"]: row for row in available_backbones()}
    assert NAMES <= set(rows)
    for row in rows.values():
        assert set(row) >= {"name", "dim", "requires_torch", "available", "reason", "default"}
    assert rows["classic"]["requires_torch"] is False
    assert rows["effnet-lite0"]["available"] is True  # shipped in a PyPI package
    assert rows["mobilenet_v2"]["available"] is True
    assert rows["effnet-lite0"]["default"] is True


def test_unknown_backbone_names_the_known_ones() -> None:
    with pytest.raises(FeatureError, match="unknown backbone 'vgg'.*effnet-lite0"):
        get_backbone("vgg")


def test_get_backbone_caches_one_instance_per_options() -> None:
    assert get_backbone("classic") is get_backbone("classic")


def test_register_backbone_refuses_a_second_class_under_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_backbone("classic")
        class Other(Backbone):
            dim = 1

            def _embed_batch(self, batch):  # type: ignore[no-untyped-def]
                return batch


def test_bad_options_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="device"):
        get_backbone("classic", device="tpu")
    with pytest.raises(ValueError, match="runtime"):
        get_backbone("classic", runtime="tensorrt")


def test_preprocessing_is_data() -> None:
    effnet = preprocessing_of("effnet-lite0")
    assert effnet.size == 224
    assert effnet.mean == pytest.approx((127 / 255,) * 3)
    mobilenet = preprocessing_of("mobilenet_v2")
    assert mobilenet.mean == (0.485, 0.456, 0.406)
    assert mobilenet.std == (0.229, 0.224, 0.225)


def test_importing_features_does_not_import_torch() -> None:
    code = (
        "import sys, loupe.features as f; f.available_backbones(); "
        "f.get_backbone('effnet-lite0'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
