"""Embeddings cached on disk per project and backbone, as a memory-mapped matrix.

Layout under ``root/<project_id>/<backbone>/``:

* ``vectors.f32``: raw float32 rows of length ``dim``, appended, never rewritten;
* ``ids.npy``: int64 item id of each row (``-1``: a removed or replaced row), replaced
  atomically (temporary file, fsync, rename);
* ``meta.json``: backbone name and ``dim``, checked on reopening.

Crash safety: rows are written and fsynced *before* the index that points at them, so a
crash leaves at worst unreferenced rows past the end of the index; they are overwritten
by the next ``add``. Nothing is ever recomputed on restart.

Concurrency: appends within one process are serialised by a lock; only one process
writes a given store at a time (the job worker). Readers in other processes see a
consistent index and reload it when it changes.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loupe.features.base import Backbone, ProgressCallback
from loupe.features.imaging import ImageSource

_VECTORS = "vectors.f32"
_IDS = "ids.npy"
_META = "meta.json"
_REMOVED = -1


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    # Every index write is a rename, so the inode changes even when size and mtime don't.
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform/filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FeatureStore:
    """The embeddings of one project under one backbone (see the module docstring)."""

    def __init__(self, root: Path, project_id: int, backbone: str, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not backbone or "/" in backbone or backbone.startswith("."):
            raise ValueError(f"backbone must be a plain name, got {backbone!r}")
        self.directory = Path(root) / str(int(project_id)) / backbone
        self.backbone = backbone
        self.dim = dim
        self._lock = threading.RLock()
        self._ids = np.zeros(0, dtype=np.int64)
        self._rows: dict[int, int] = {}
        self._index_stamp: tuple[int, int, int] | None = None
        self._matrix: np.ndarray | None = None
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_meta()
        self._reload_if_changed()

    # -- files ----------------------------------------------------------------------------

    @property
    def _vectors_path(self) -> Path:
        return self.directory / _VECTORS

    @property
    def _ids_path(self) -> Path:
        return self.directory / _IDS

    def _check_meta(self) -> None:
        path = self.directory / _META
        meta = {"backbone": self.backbone, "dim": self.dim, "dtype": "float32"}
        if path.exists():
            stored = json.loads(path.read_text())
            if stored.get("dim") != self.dim or stored.get("backbone") != self.backbone:
                raise ValueError(
                    f"{self.directory} holds {stored.get('backbone')!r} vectors of dim "
                    f"{stored.get('dim')}, not {self.backbone!r} of dim {self.dim}"
                )
            return
        self._write_atomic(path, json.dumps(meta).encode())

    def _write_atomic(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _write_ids(self, ids: np.ndarray) -> None:
        tmp = self._ids_path.with_name(f".{_IDS}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(ids, dtype=np.int64))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._ids_path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.directory)
        self._set_ids(ids)

    def _set_ids(self, ids: np.ndarray) -> None:
        self._ids = ids
        self._rows = {int(item): row for row, item in enumerate(ids.tolist()) if item >= 0}
        self._matrix = None
        stat = self._ids_path.stat() if self._ids_path.exists() else None
        self._index_stamp = _stamp(stat) if stat else None

    def _reload_if_changed(self) -> None:
        """Re-read ``ids.npy`` if another process (or a restart) changed it."""
        if not self._ids_path.exists():
            if self._index_stamp is not None or len(self._ids):
                self._set_ids(np.zeros(0, dtype=np.int64))
            return
        stat = self._ids_path.stat()
        if _stamp(stat) != self._index_stamp:
            self._set_ids(np.load(self._ids_path).astype(np.int64, copy=False))

    def _vectors(self) -> np.ndarray:
        """The referenced rows as a read-only memory map ``(len(ids), dim)``."""
        if self._matrix is None:
            count = len(self._ids)
            if count == 0:
                self._matrix = np.zeros((0, self.dim), dtype=np.float32)
            else:
                self._matrix = np.memmap(
                    self._vectors_path, dtype=np.float32, mode="r", shape=(count, self.dim)
                )
        return self._matrix

    # -- public API -----------------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._reload_if_changed()
            return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            self._reload_if_changed()
            return isinstance(item_id, int | np.integer) and int(item_id) in self._rows

    def missing(self, item_ids: Sequence[int]) -> list[int]:
        """The ids of ``item_ids`` that have no stored vector, in the given order."""
        with self._lock:
            self._reload_if_changed()
            return [int(i) for i in item_ids if int(i) not in self._rows]

    def add(self, item_ids: Sequence[int], matrix: np.ndarray) -> None:
        """Store ``matrix[k]`` (float32 ``(n, dim)``) for ``item_ids[k]``.

        An id already stored gets its new vector (the old row is dropped from the index).
        Rows are appended and fsynced before the index is replaced.
        """
        ids = np.asarray([int(i) for i in item_ids], dtype=np.int64)
        data = np.ascontiguousarray(matrix, dtype=np.float32)
        if data.ndim != 2 or data.shape != (len(ids), self.dim):
            raise ValueError(
                f"matrix must have shape {(len(ids), self.dim)} for {len(ids)} ids, "
                f"got {data.shape}"
            )
        if len(ids) == 0:
            return
        if (ids < 0).any():
            raise ValueError("item_ids must be >= 0")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("item_ids must not repeat within one add")
        with self._lock:
            self._reload_if_changed()
            start = len(self._ids)
            mode = "r+b" if self._vectors_path.exists() else "w+b"
            with open(self._vectors_path, mode) as handle:
                # Rows past the index are leftovers of a crash: overwrite them.
                handle.seek(start * self.dim * 4)
                handle.write(data.tobytes())
                handle.truncate()
                handle.flush()
                os.fsync(handle.fileno())
            old = self._ids.copy()
            for item in ids.tolist():
                row = self._rows.get(item)
                if row is not None:
                    old[row] = _REMOVED
            self._write_ids(np.concatenate([old, ids]))

    def get(self, item_ids: Sequence[int]) -> np.ndarray:
        """float32 ``(len(item_ids), dim)``, rows in the requested order (a copy).
        ``KeyError`` names the ids that are not stored."""
        with self._lock:
            self._reload_if_changed()
            absent = [int(i) for i in item_ids if int(i) not in self._rows]
            if absent:
                raise KeyError(f"no stored vectors for item ids {absent[:10]}")
            rows = np.asarray([self._rows[int(i)] for i in item_ids], dtype=np.int64)
            return np.array(self._vectors()[rows], dtype=np.float32)

    def all(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids int64 (n,), matrix float32 (n, dim))`` of every stored item, in the
        order they were added. The matrix is a read-only memory map when no row was ever
        removed or replaced, else a copy."""
        with self._lock:
            self._reload_if_changed()
            live = self._ids >= 0
            vectors = self._vectors()
            if live.all():
                return self._ids.copy(), vectors
            return self._ids[live].copy(), np.array(vectors[live], dtype=np.float32)

    def remove(self, item_ids: Sequence[int]) -> int:
        """Forget the vectors of ``item_ids`` (absent ids are ignored); returns how many
        were removed. The rows stay in the file, unreferenced."""
        with self._lock:
            self._reload_if_changed()
            ids = self._ids.copy()
            removed = 0
            for item in item_ids:
                row = self._rows.get(int(item))
                if row is not None:
                    ids[row] = _REMOVED
                    removed += 1
            if removed:
                self._write_ids(ids)
            return removed


def open_existing(root: Path, project_id: int, backbone: str) -> FeatureStore | None:
    """The store of ``backbone`` if vectors were ever written for the project, else None
    (nothing is created). Reads the dimension from ``meta.json``."""
    if not backbone or "/" in backbone or backbone.startswith("."):
        return None
    meta = Path(root) / str(int(project_id)) / backbone / _META
    if not meta.is_file():
        return None
    try:
        dim = int(json.loads(meta.read_text()).get("dim", 0))
    except (ValueError, TypeError, OSError):
        return None
    return FeatureStore(root, project_id, backbone, dim) if dim > 0 else None


def _offset_progress(progress: ProgressCallback, offset: int, total: int) -> ProgressCallback:
    def report(done: int, _chunk_total: int) -> None:
        progress(offset + done, total)

    return report


def compute_missing(
    store: FeatureStore,
    backbone: Backbone,
    items: Sequence[tuple[int, ImageSource]],
    *,
    progress: ProgressCallback | None = None,
    batch_size: int = 32,
    chunk: int = 512,
) -> dict[int, str]:
    """Embed the items of ``items`` (``(item_id, path or DICOM series paths)``) that
    ``store`` lacks, add them in chunks of ``chunk`` (so an interrupted run keeps its
    progress) and return ``{item_id: reason}`` for unreadable files (not stored)."""
    if backbone.dim != store.dim:
        raise ValueError(f"backbone dim {backbone.dim} differs from the store's {store.dim}")
    todo_ids = set(store.missing([item_id for item_id, _ in items]))
    todo: list[tuple[int, ImageSource]] = []
    for item_id, source in items:
        if item_id in todo_ids:
            todo.append((item_id, source))
            todo_ids.discard(item_id)  # an id listed twice is embedded once
    errors: dict[int, str] = {}
    total = len(todo)
    for start in range(0, total, chunk):
        part = todo[start : start + chunk]
        report = _offset_progress(progress, start, total) if progress is not None else None
        matrix, failed = backbone.embed_paths(
            [source for _, source in part], batch_size=batch_size, progress=report
        )
        good = [k for k in range(len(part)) if k not in failed]
        store.add([part[k][0] for k in good], matrix[good])
        errors.update({part[k][0]: reason for k, reason in failed.items()})
    return errors
