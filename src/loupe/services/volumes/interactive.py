"""Interactive 3-D segmentation: clicks and scribbles -> a voxel random forest -> a mask.

The float32 filter bank of a volume is computed once (on the first interactive
request, or by the ``volume_features`` job) and cached as a memory-mapped ``.npy``
per content hash; every later request only refits the forest (well under a
second) and predicts the region the user looks at, or the whole volume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loupe.db.models import Item
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.features.voxels import DEFAULT_SIGMAS, cached_voxel_features
from loupe.jobs.context import JobContext
from loupe.jobs.core import submit
from loupe.jobs.registry import register_job_kind
from loupe.learn.voxel_classifier import VoxelClassifier, ball_points, click_ball
from loupe.services.volumes.store import (
    VolumeSource,
    nifti_bytes,
    read_grid_of,
    read_voxels,
    volume_source,
    volumes_dir,
)
from loupe.settings import Settings

FEATURES_KIND = "volume_features"
CLICK_RADIUS = 2
FOCUS_HALF_DEPTH = 4  # slices on each side of the focused one predicted at full resolution
_AXES = {"x": 2, "y": 1, "z": 0}  # NIfTI axis name -> (z, y, x) array axis


@dataclass(frozen=True)
class Click:
    x: int
    y: int
    z: int
    value: int


@dataclass(frozen=True)
class Scribble:
    value: int
    voxels: list[tuple[int, int, int]]  # (x, y, z) NIfTI indices


@dataclass(frozen=True)
class InteractiveResult:
    payload: bytes  # gzip'd NIfTI uint8 mask on the image grid
    refit_ms: float
    predict_ms: float


def features_path(settings: Settings, sha256: str) -> Path:
    sigmas = "-".join(f"{s:g}" for s in DEFAULT_SIGMAS)
    return volumes_dir(settings) / "features" / f"{sha256}-s{sigmas}.npy"


def volume_features(source: VolumeSource, settings: Settings) -> np.ndarray:
    """The cached (z, y, x, F) float32 filter bank of the volume (computed on first use)."""
    path = features_path(settings, source.sha256)
    if path.is_file():
        cached = np.load(path, mmap_mode="r")
        if tuple(cached.shape[:3]) == tuple(source.shape[:3]):
            return cached
    volume = read_voxels(source, settings)
    return cached_voxel_features(volume, path, workers=2)


def prefetch_features(settings: Settings, source: VolumeSource, *, user_id: int | None) -> None:
    """Start the ``volume_features`` job when the volume's filter bank is not cached, so
    the first click finds it ready (a job already running for the project is left alone)."""
    if features_path(settings, source.sha256).is_file():
        return
    try:
        submit(
            settings,
            kind=FEATURES_KIND,
            project_id=source.project_id,
            params={"project_id": source.project_id, "item_id": source.item_id},
            user_id=user_id,
            exclusive=True,
        )
    except LoupeError as exc:
        if exc.code not in (ErrorCode.BUSY, ErrorCode.CONFLICT):
            raise


@register_job_kind(FEATURES_KIND, exclusive=True)
def run_volume_features(
    settings: Settings, ctx: JobContext, params: dict[str, Any]
) -> dict[str, Any]:
    """The ``volume_features`` job: compute and cache one volume's filter bank."""
    with session_scope(settings.db_url, write=False) as db:
        item = db.get(Item, int(params["item_id"]))
        if item is None or item.project_id != int(params["project_id"]):
            raise LoupeError(ErrorCode.NOT_FOUND, f"item {params['item_id']} not found")
        source = volume_source(item)
    features = volume_features(source, settings)
    return {"item_id": source.item_id, "shape": list(features.shape)}


def labelled_points(
    clicks: list[Click],
    scribbles: list[Scribble],
    shape: tuple[int, ...],
    allowed: set[int],
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) (z, y, x) voxels and their labels; a click labels a small ball (with
    ``features``: only the ball's voxels that look like the clicked one, see
    :func:`~loupe.learn.voxel_classifier.click_ball`)."""
    points: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for value in {c.value for c in clicks} | {s.value for s in scribbles}:
        if value not in allowed:
            raise LoupeError(
                ErrorCode.INVALID,
                f"label value {value} is not a class of the project (known: {sorted(allowed)})",
            )
    for click in clicks:
        centre = (click.z, click.y, click.x)
        _inside(centre, shape)
        ball = (
            ball_points(centre, CLICK_RADIUS, shape)
            if features is None
            else click_ball(features, centre, CLICK_RADIUS)
        )
        points.append(ball)
        values.append(np.full(len(ball), click.value))
    for scribble in scribbles:
        if not scribble.voxels:
            continue
        zyx = np.asarray([(z, y, x) for x, y, z in scribble.voxels], dtype=np.int64)
        for row in zyx:
            _inside(tuple(int(v) for v in row), shape)
        points.append(zyx)
        values.append(np.full(len(zyx), scribble.value))
    if not points:
        raise LoupeError(ErrorCode.INVALID, "give at least one click or scribble")
    return np.concatenate(points), np.concatenate(values)


def _inside(zyx: tuple[int, ...], shape: tuple[int, ...]) -> None:
    if not all(0 <= v < n for v, n in zip(zyx, shape, strict=False)):
        z, y, x = zyx
        raise LoupeError(
            ErrorCode.INVALID,
            f"voxel (x={x}, y={y}, z={z}) lies outside the volume "
            f"(x < {shape[2]}, y < {shape[1]}, z < {shape[0]})",
        )


def segment(
    source: VolumeSource,
    settings: Settings,
    *,
    clicks: list[Click],
    scribbles: list[Scribble],
    focus: dict[str, Any] | None,
    full: bool,
    allowed: set[int],
) -> InteractiveResult:
    """Refit the voxel classifier on the clicks and predict (see module doc).

    ``full`` predicts every voxel; otherwise only a slab of slices around ``focus``
    (``{"axis": "x"|"y"|"z", "index": k}``), or, without a focus, the whole volume
    coarse-to-fine (half resolution, refined only near boundaries). Voxels not
    predicted are 0.
    """
    grid = read_grid_of(source)
    shape = tuple(grid.shape)
    points, values = labelled_points(clicks, scribbles, shape, allowed | {0})
    if np.unique(values).size < 2:
        raise LoupeError(
            ErrorCode.INVALID,
            "label at least two values (background 0 and a class) before segmenting",
        )
    features = volume_features(source, settings)
    points, values = labelled_points(clicks, scribbles, shape, allowed | {0}, features)
    started = time.perf_counter()
    # extra trees: steadier than a classic forest on a few clicks (see VoxelClassifier)
    classifier = VoxelClassifier(n_jobs=2, extra_trees=True).fit(features, points, values)
    fitted = time.perf_counter()
    if full:
        labels = classifier.predict_volume(features, coarse=1)
    elif focus is not None:
        axis = _AXES.get(str(focus.get("axis", "z")))
        if axis is None:
            raise LoupeError(ErrorCode.INVALID, f"focus axis {focus.get('axis')!r}: use x, y or z")
        index = int(focus.get("index", 0))
        if not 0 <= index < shape[axis]:
            raise LoupeError(ErrorCode.INVALID, f"focus index {index} outside 0..{shape[axis] - 1}")
        box = [slice(None)] * 3
        box[axis] = slice(max(0, index - FOCUS_HALF_DEPTH), index + FOCUS_HALF_DEPTH + 1)
        region = (box[0], box[1], box[2])
        labels = np.zeros(shape, dtype=np.uint8)
        labels[region] = classifier.predict_box(features, region)
    else:
        labels = classifier.predict_volume(features, coarse=2)
    done = time.perf_counter()
    payload = nifti_bytes(labels.astype(np.uint8), grid, descrip="loupe interactive mask")
    return InteractiveResult(payload, (fitted - started) * 1000, (done - fitted) * 1000)
