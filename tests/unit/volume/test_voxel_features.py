"""The voxel filter bank: shape, dtype, names, slab independence, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loupe.features.voxels import (
    cached_voxel_features,
    feature_bytes,
    feature_names,
    voxel_features,
)

from .conftest import Mni


def test_shape_dtype_and_names(mni: Mni) -> None:
    volume = mni.t1[60:92, 90:130, 70:110]
    features = voxel_features(volume)
    names = feature_names()
    assert features.shape == (*volume.shape, len(names)) and features.dtype == np.float32
    assert names[0] == "intensity" and len(names) == 10
    assert np.isfinite(features).all()
    assert features.nbytes == feature_bytes(volume.shape)
    # the intensity channel is the normalised volume; smoothing lowers the variance
    assert np.corrcoef(features[..., 0].ravel(), volume.ravel())[0, 1] > 0.999
    assert features[..., 7].std() < features[..., 0].std()


def test_slabs_and_workers_do_not_change_the_result(mni: Mni, tmp_path: Path) -> None:
    volume = mni.t1[50:90, 100:132, 80:112].astype(np.int16)
    whole = voxel_features(volume, slab=1000)
    out = np.lib.format.open_memmap(
        tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=whole.shape
    )
    fractions: list[float] = []
    sliced = voxel_features(volume, slab=5, workers=2, out=out, progress=fractions.append)
    assert sliced is out
    np.testing.assert_array_equal(np.asarray(sliced), whole)
    assert fractions[-1] == 1.0 and len(fractions) == 8


def test_spacing_scales_the_filters_per_axis(mni: Mni) -> None:
    volume = mni.t1[60:80, 90:120, 70:100]
    iso = voxel_features(volume, sigmas=(2.0,))
    aniso = voxel_features(volume, sigmas=(2.0,), spacing=(3.0, 1.0, 1.0))
    assert aniso.shape == iso.shape and not np.allclose(aniso, iso)


@pytest.mark.parametrize(
    ("volume", "options", "message"),
    [
        (np.zeros((4, 4)), {}, "3-D"),
        (np.zeros((4, 4, 4), np.complex64), {}, "real-valued"),
        (np.zeros((4, 4, 4)), {"sigmas": ()}, "sigmas"),
        (np.zeros((4, 4, 4)), {"slab": 0}, "slab"),
        (np.zeros((4, 4, 4)), {"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        (np.zeros((4, 4, 4)), {"out": np.zeros((4, 4, 4, 10))}, "out"),
    ],
)
def test_bad_arguments_name_the_parameter(
    volume: np.ndarray, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        voxel_features(volume, **options)  # type: ignore[arg-type]


def test_the_cache_is_reused_and_read_only(mni: Mni, tmp_path: Path) -> None:
    volume = mni.t1[70:86, 100:120, 80:100]
    path = tmp_path / "cache" / "features.npy"
    first = cached_voxel_features(volume, path)
    np.testing.assert_array_equal(first, voxel_features(volume))
    assert isinstance(first, np.memmap) and not first.flags.writeable
    stamp = path.stat().st_mtime_ns
    again = cached_voxel_features(volume, path)
    assert path.stat().st_mtime_ns == stamp and again.shape == first.shape
    assert sorted(p.name for p in path.parent.iterdir()) == ["features.npy"]
