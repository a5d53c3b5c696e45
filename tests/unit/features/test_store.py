"""FeatureStore: append, read back in any order, reopen, survive a crash; and
compute_missing, which embeds only what is not stored yet."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from loupe.features import Backbone, FeatureStore, compute_missing, get_backbone

DIM = 8


def rows(ids: list[int]) -> np.ndarray:
    """A recognisable vector per id: its id in every column."""
    return np.repeat(np.asarray(ids, np.float32)[:, None], DIM, axis=1)


def test_add_get_missing_and_reopen(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, 7, "classic", DIM)
    assert store.missing([1, 2, 3]) == [1, 2, 3]
    store.add([3, 1], rows([3, 1]))
    store.add([2], rows([2]))
    assert store.missing([1, 2, 3, 4]) == [4]
    np.testing.assert_array_equal(store.get([2, 3, 1]), rows([2, 3, 1]))
    ids, matrix = store.all()
    assert ids.tolist() == [3, 1, 2]
    assert matrix.dtype == np.float32

    reopened = FeatureStore(tmp_path, 7, "classic", DIM)
    assert len(reopened) == 3
    np.testing.assert_array_equal(reopened.get([1, 2]), rows([1, 2]))
    assert (tmp_path / "7" / "classic" / "vectors.f32").stat().st_size == 3 * DIM * 4


def test_replace_and_remove(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, 1, "effnet-lite0", DIM)
    store.add([1, 2, 3], rows([1, 2, 3]))
    store.add([2], rows([20]))
    np.testing.assert_array_equal(store.get([2]), rows([20]))
    assert store.remove([1, 99]) == 1
    assert store.missing([1, 2, 3]) == [1]
    ids, matrix = store.all()
    assert ids.tolist() == [3, 2]
    np.testing.assert_array_equal(matrix, rows([3, 20]))
    reopened = FeatureStore(tmp_path, 1, "effnet-lite0", DIM)
    assert reopened.all()[0].tolist() == [3, 2]
    with pytest.raises(KeyError, match="1"):
        reopened.get([1])


def test_a_crash_between_rows_and_index_is_recovered(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, 1, "classic", DIM)
    store.add([1, 2], rows([1, 2]))
    # Simulate a crash inside add(): the rows of ids 3 and 4 reached the file, the index
    # was never replaced (and a temporary index file was left behind).
    with open(store.directory / "vectors.f32", "ab") as handle:
        handle.write(rows([3, 4]).tobytes())
    (store.directory / ".ids.npy.dead.tmp").write_bytes(b"garbage")

    reopened = FeatureStore(tmp_path, 1, "classic", DIM)
    assert reopened.missing([1, 2, 3, 4]) == [3, 4]
    reopened.add([5], rows([5]))  # overwrites the orphaned rows
    np.testing.assert_array_equal(reopened.get([5, 1, 2]), rows([5, 1, 2]))
    assert (store.directory / "vectors.f32").stat().st_size == 3 * DIM * 4


def test_the_store_checks_shapes_and_its_own_identity(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, 1, "classic", DIM)
    with pytest.raises(ValueError, match="shape"):
        store.add([1, 2], rows([1]))
    with pytest.raises(ValueError, match="repeat"):
        store.add([1, 1], rows([1, 1]))
    with pytest.raises(ValueError, match="dim"):
        FeatureStore(tmp_path, 1, "classic", DIM + 1)
    with pytest.raises(ValueError, match="backbone"):
        FeatureStore(tmp_path, 1, "../x", DIM)


def test_concurrent_appends_from_threads(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path, 1, "classic", DIM)

    def append(first: int) -> None:
        for k in range(first, first + 20):
            store.add([k], rows([k]))

    threads = [threading.Thread(target=append, args=(100 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [100 * t + k for t in range(4) for k in range(20)]
    np.testing.assert_array_equal(store.get(ids), rows(ids))


def test_a_second_reader_sees_new_rows(tmp_path: Path) -> None:
    writer = FeatureStore(tmp_path, 1, "classic", DIM)
    reader = FeatureStore(tmp_path, 1, "classic", DIM)
    writer.add([1], rows([1]))
    assert reader.missing([1]) == []
    np.testing.assert_array_equal(reader.get([1]), rows([1]))


class CountingBackbone:
    """Wraps a backbone and counts the paths it is asked to embed."""

    def __init__(self, inner: Backbone) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.embedded = 0

    def embed_paths(self, paths, **kwargs):  # type: ignore[no-untyped-def]
        self.embedded += len(paths)
        return self.inner.embed_paths(paths, **kwargs)


def test_compute_missing_embeds_only_new_items(
    tmp_path: Path, image_files: dict[str, Path]
) -> None:
    backbone = CountingBackbone(get_backbone("classic"))
    store = FeatureStore(tmp_path, 3, "classic", backbone.dim)
    items = [
        (10, image_files["astronaut.png"]),
        (11, image_files["corrupt.jpg"]),
        (12, [image_files["camera.png"]]),
    ]
    progress: list[tuple[int, int]] = []
    errors = compute_missing(
        store, backbone, items, progress=lambda d, t: progress.append((d, t)), chunk=2
    )  # type: ignore[arg-type]
    assert set(errors) == {11}
    assert backbone.embedded == 3
    assert progress[-1] == (3, 3)
    assert store.missing([10, 11, 12]) == [11]

    # After a restart only the failed item is tried again; nothing is recomputed.
    restarted = FeatureStore(tmp_path, 3, "classic", backbone.dim)
    items.append((13, image_files["chelsea.jpg"]))
    errors = compute_missing(restarted, backbone, items)  # type: ignore[arg-type]
    assert set(errors) == {11}
    assert backbone.embedded == 3 + 2
    norms = np.linalg.norm(restarted.get([10, 12, 13]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)
