"""A model version's predictions as arrays, and their per-version sidecar file.

Decoding every Prediction row's JSON output of a version takes seconds at 100,000
items, in every web process that asks for a queue. The job that writes the
predictions therefore also writes ``models/<project>/<version>/queue_arrays.npz``
(numpy arrays, no pickle) with the decoded arrays and the key they were built for:
the version's prediction count, newest prediction id and creation time. A reader
uses the file only when that key matches the database; otherwise it decodes the
rows and writes the file again, so the next process reads it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import ModelVersion, Prediction

if TYPE_CHECKING:
    from loupe.settings import Settings
    from loupe.tasks.types import PredictionRow

log = logging.getLogger(__name__)

SIDECAR_NAME = "queue_arrays.npz"
SIDECAR_FORMAT = 1

# (item id, output JSON, uncertainty, flagged) of one Prediction row
OutputRow = tuple[int, dict[str, Any] | None, float | None, bool | None]


@dataclass(frozen=True)
class VersionOutput:
    """A model version's stored output as arrays, row k = item ``item_ids[k]`` (sorted)."""

    item_ids: NDArray[np.int64]
    class_names: tuple[str, ...]
    probs: NDArray[np.float64] | None
    spread: NDArray[np.float64]
    flagged: NDArray[np.bool_]


@dataclass(frozen=True)
class OutputKey:
    """What a version's arrays were built from: any added prediction changes it."""

    count: int
    newest: int | None
    created: str  # the version's created_at (a recreated database reuses ids)


def version_key(db: Session, version: ModelVersion) -> OutputKey:
    """The version's current :class:`OutputKey` (one aggregate query)."""
    count, newest = db.execute(
        select(func.count(Prediction.id), func.max(Prediction.id)).where(
            Prediction.model_version_id == version.id
        )
    ).one()
    return OutputKey(
        int(count), None if newest is None else int(newest), version.created_at.isoformat()
    )


def output_rows(db: Session, version: ModelVersion) -> tuple[list[OutputRow], OutputKey]:
    """The version's rows for :func:`decode`, by item id (the JSON is decoded here), and
    the key of exactly those rows (the aggregate may be a statement older)."""
    rows = db.execute(
        select(
            Prediction.item_id,
            Prediction.output,
            Prediction.uncertainty,
            Prediction.flagged,
            Prediction.id,
        )
        .where(Prediction.model_version_id == version.id)
        .order_by(Prediction.item_id)
    ).all()
    newest = max((int(r[4]) for r in rows), default=None)
    key = OutputKey(len(rows), newest, version.created_at.isoformat())
    return [(int(i), o, u, f) for i, o, u, f, _ in rows], key


def decode(rows: Sequence[OutputRow], class_names: tuple[str, ...] | None = None) -> VersionOutput:
    """Arrays of rows sorted by item id; the class names are the keys of the first
    non-empty output's ``probs`` unless given."""
    if class_names is None:
        first = next((dict(o.get("probs") or {}) for _, o, _, _ in rows if o), {})
        class_names = tuple(first)
    item_ids = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
    probs = None
    if class_names:
        probs = np.asarray(
            [
                [float(((o or {}).get("probs") or {}).get(c, np.nan)) for c in class_names]
                for _, o, _, _ in rows
            ],
            dtype=np.float64,
        ).reshape(len(rows), len(class_names))
    spread = np.asarray([np.nan if u is None else float(u) for _, _, u, _ in rows], np.float64)
    flagged = np.asarray([bool(f) for _, _, _, f in rows], dtype=bool)
    return VersionOutput(item_ids, class_names, probs, spread, flagged)


# --- the sidecar file ------------------------------------------------------------------------


def sidecar_path(settings: Settings, project_id: int, version_id: int) -> Path:
    return settings.models_dir / str(project_id) / str(version_id) / SIDECAR_NAME


def write_sidecar(path: Path, out: VersionOutput, key: OutputKey) -> None:
    """Write ``out`` and its key to ``path`` atomically (temp file + rename), readable
    by every web process (mode 0644; a bare temp file would be 0600)."""
    n = len(out.item_ids)
    arrays: dict[str, NDArray[Any]] = {
        "format": np.asarray(SIDECAR_FORMAT, dtype=np.int64),
        "key": np.asarray([key.count, -1 if key.newest is None else key.newest], np.int64),
        "created": np.asarray(key.created),
        "item_ids": out.item_ids,
        "class_names": np.asarray(out.class_names, dtype=np.str_).reshape(len(out.class_names)),
        "has_probs": np.asarray(out.probs is not None),
        "probs": out.probs if out.probs is not None else np.zeros((n, 0), dtype=np.float64),
        "spread": out.spread,
        "flagged": out.flagged,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SidecarError(ValueError):
    """The file is not a sidecar this code wrote (truncated, foreign, inconsistent)."""


def read_sidecar(path: Path, key: OutputKey) -> VersionOutput | None:
    """The arrays in ``path`` if it was built for ``key``; None when missing or stale.

    Raises :class:`SidecarError` (or ``OSError``) when the file cannot be read.
    """
    try:
        handle = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return None
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise SidecarError(f"{path}: {exc}") from exc
    try:
        with handle as z:
            if int(z["format"]) != SIDECAR_FORMAT:
                return None
            stored = z["key"]
            newest = int(stored[1])
            found = OutputKey(int(stored[0]), None if newest < 0 else newest, str(z["created"]))
            if found != key:
                return None
            out = VersionOutput(
                item_ids=np.asarray(z["item_ids"], dtype=np.int64),
                class_names=tuple(str(c) for c in z["class_names"].tolist()),
                probs=np.asarray(z["probs"], dtype=np.float64) if bool(z["has_probs"]) else None,
                spread=np.asarray(z["spread"], dtype=np.float64),
                flagged=np.asarray(z["flagged"], dtype=bool),
            )
    except (KeyError, ValueError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        raise SidecarError(f"{path}: {exc}") from exc
    _check(out, key, path)
    return out


def _check(out: VersionOutput, key: OutputKey, path: Path) -> None:
    n = key.count
    shapes_ok = (
        out.item_ids.shape == (n,)
        and out.spread.shape == (n,)
        and out.flagged.shape == (n,)
        and (out.probs is None or out.probs.shape == (n, len(out.class_names)))
        and (out.probs is None) == (not out.class_names)
    )
    if not shapes_ok or (n > 1 and not bool(np.all(np.diff(out.item_ids) > 0))):
        raise SidecarError(f"{path}: arrays do not fit {n} predictions")


def load_or_decode(
    db: Session, settings: Settings, version: ModelVersion, key: OutputKey | None = None
) -> VersionOutput:
    """The version's arrays: from its sidecar when built for ``key`` (default: the
    version's current key), else decoded from the rows (and the sidecar written for
    the next process). A broken file is logged and rebuilt, never raised."""
    key = key if key is not None else version_key(db, version)
    path = sidecar_path(settings, version.project_id, version.id)
    if key.count:
        try:
            found = read_sidecar(path, key)
        except (SidecarError, OSError) as exc:
            log.warning("ignoring an unreadable queue-arrays file (rebuilt): %s", exc)
            found = None
        if found is not None:
            return found
    rows, read_key = output_rows(db, version)
    out = decode(rows)
    if read_key.count:
        _try_write(path, out, read_key)
    return out


def _try_write(path: Path, out: VersionOutput, key: OutputKey) -> None:
    try:
        write_sidecar(path, out, key)
    except OSError as exc:  # a read-only or full disk: the queue still works, slower
        log.warning("could not write the queue-arrays file %s: %s", path, exc)


def write_after_insert(
    settings: Settings, project_id: int, version_id: int, rows: Iterable[PredictionRow]
) -> None:
    """Write the version's sidecar once its predictions are committed (by the job that
    inserted ``rows``). When they are all its rows, the arrays come from ``rows`` (no
    JSON decoded); the class names' order is read back from the database, which may
    reorder an output's keys (PostgreSQL's JSONB)."""
    from loupe.db.session import session_scope

    with session_scope(settings.db_url, write=False) as db:
        version = db.get(ModelVersion, version_id)
        if version is None:
            return
        key = version_key(db, version)
        if not key.count:
            return
        mine: list[OutputRow] = sorted(
            ((int(r.item_id), r.output, r.uncertainty, r.flagged) for r in rows),
            key=lambda row: row[0],
        )
        if len(mine) == key.count:  # (item, version) is unique: the rows are exactly ours
            first = next((item for item, o, _, _ in mine if o), None)
            names: tuple[str, ...] = ()
            if first is not None:
                stored = db.scalar(
                    select(Prediction.output).where(
                        Prediction.model_version_id == version_id, Prediction.item_id == first
                    )
                )
                names = tuple(dict((stored or {}).get("probs") or {}))
            out = decode(mine, names)
        else:  # the version had rows before these (or lost some): decode them all
            all_rows, key = output_rows(db, version)
            out = decode(all_rows)
    _try_write(sidecar_path(settings, project_id, version_id), out, key)
