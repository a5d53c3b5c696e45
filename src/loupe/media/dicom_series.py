"""A DICOM series (one file per slice) as a volume: ordering, spacing, pixels."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from loupe.kept import Kept
from loupe.media._core import DEFAULT_MAX_PIXELS, MediaError, MediaInfo, PathLike
from loupe.media.dicom import (
    DicomHeader,
    header_extra,
    pixel_spacing,
    read_file_volume,
    read_frame,
    read_header,
    rescaled_stack,
    slice_step,
)


@dataclass(frozen=True)
class SortedSeries:
    """Slice headers in spatial order plus the spacing derived from them."""

    slices: list[DicomHeader]
    spacing: tuple[float, float, float]
    spacing_assumed: bool
    ordered_by: str


# Parsing the headers of a 189-slice series takes ~1 s, and a request reads a series'
# grid and its voxels one after the other: the last few sorted series are kept, keyed
# by every file's path, size and modification time (a changed file is read again).
_SORTED: Kept[SortedSeries] = Kept(4)


def sort_series(paths: Iterable[PathLike], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> SortedSeries:
    """Read every header; order slices along the slice normal (ImagePositionPatient
    projected on the ImageOrientationPatient normal), else by InstanceNumber, else by path.
    """
    names = sorted(map(str, paths))
    try:
        key = (max_pixels, *((n, *_stamp(n)) for n in names))
    except OSError:
        return _sort_series(names, max_pixels)  # a missing file: read_header says which
    return _SORTED.get(key, lambda: _sort_series(names, max_pixels))


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _sort_series(names: list[str], max_pixels: int) -> SortedSeries:
    headers = [read_header(path, max_pixels=max_pixels) for path in names]
    if not headers:
        raise ValueError("paths must name at least one DICOM file")
    uids = {str(h.ds.get("SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise MediaError(f"files belong to {len(uids)} different DICOM series")
    sizes = {(h.rows, h.cols, h.channels) for h in headers}
    if len(sizes) > 1:
        raise MediaError(f"slices of the series differ in size: {sorted(sizes)}")
    if len(headers) > 1 and any(h.frames > 1 for h in headers):
        raise MediaError("multi-frame files inside a multi-file series are not supported")

    positions = _positions(headers)
    if positions is not None:
        order = sorted(range(len(headers)), key=lambda i: (positions[i], _instance(headers[i])))
        ordered_by = "position"
    elif all(h.ds.get("InstanceNumber") is not None for h in headers):
        order = sorted(range(len(headers)), key=lambda i: _instance(headers[i]))
        ordered_by = "instance_number"
    else:
        order = list(range(len(headers)))
        ordered_by = "path"
    slices = [headers[i] for i in order]

    z_step = None
    if positions is not None and len(headers) > 1:
        _check_orientations(headers)
        z_step = check_uniform_spacing(sorted(positions))
    if z_step is None:
        z_step = slice_step(slices[0].ds)
    pixel = pixel_spacing(slices[0].ds)
    spacing = (z_step or 1.0, *(pixel or (1.0, 1.0)))
    assumed = z_step is None or pixel is None
    return SortedSeries(slices, (spacing[0], spacing[1], spacing[2]), assumed, ordered_by)


# Slice steps may differ by this fraction of the median step (rounding in IPP values).
SPACING_TOLERANCE = 0.01


def check_uniform_spacing(positions: list[float]) -> float:
    """The slice step (mm) of sorted slice positions; MediaError for two slices at one
    position, missing slices (a gap of about a multiple of the step) or otherwise
    non-uniform spacing. A volume needs one spacing: ITK readers silently use the mean
    and put every slice after a gap in the wrong place."""
    steps = np.diff(np.asarray(positions, dtype=np.float64))
    if steps.size == 0:
        raise ValueError("positions must hold at least two slices")
    step = float(np.median(steps))
    duplicates = int(np.count_nonzero(steps < max(1e-4, step * 0.05)))
    if duplicates:
        raise MediaError(
            f"{duplicates} slice(s) share a position with another slice: the files mix "
            "series, time points or echoes; import one series at a time"
        )
    tolerance = max(SPACING_TOLERANCE * step, 1e-3)
    off = np.flatnonzero(np.abs(steps - step) > tolerance)
    if off.size == 0:
        return step
    first = int(off[0])
    ratio = float(steps[first] / step)
    where = f"between slices {first + 1} and {first + 2} (of {len(positions)})"
    if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1:
        missing = int(sum(round(float(s / step)) - 1 for s in steps[off] if s > 1.5 * step))
        raise MediaError(
            f"missing slices: a gap of {steps[first]:.3g} mm {where} where the spacing is "
            f"{step:.3g} mm (about {missing} slice(s) missing)"
        )
    raise MediaError(
        f"non-uniform slice spacing: {steps[first]:.3g} mm {where}, "
        f"{step:.3g} mm elsewhere ({off.size} irregular step(s))"
    )


def _check_orientations(headers: list[DicomHeader]) -> None:
    orientations = set()
    for header in headers:
        value = header.ds.get("ImageOrientationPatient")
        if value is not None:
            orientations.add(tuple(round(float(v), 3) for v in value))
    if len(orientations) > 1:
        raise MediaError(
            f"slices of the series have {len(orientations)} different orientations "
            "(mixed series, e.g. a localizer); import one series at a time"
        )


def _instance(header: DicomHeader) -> int:
    try:
        return int(header.ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


def _positions(headers: list[DicomHeader]) -> list[float] | None:
    """Each slice's position along the slice normal, or None if any slice lacks it."""
    try:
        orientation = np.array([float(v) for v in headers[0].ds.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        if not np.linalg.norm(normal) > 0:
            return None
        return [
            float(np.dot(normal, [float(v) for v in h.ds.ImagePositionPatient])) for h in headers
        ]
    except (AttributeError, TypeError, ValueError, IndexError):
        return None


def probe_series(paths: Iterable[PathLike], *, max_pixels: int) -> MediaInfo:
    series = sort_series(paths, max_pixels=max_pixels)
    first = series.slices[0]
    if len(series.slices) == 1 and first.frames > 1:
        depth = first.frames
    else:
        depth = len(series.slices)
    shape: tuple[int, ...] = (depth, first.rows, first.cols)
    if first.channels > 1:
        shape += (first.channels,)
    extra: dict[str, Any] = {
        **header_extra(first),
        "files": len(series.slices),
        "ordered_by": series.ordered_by,
    }
    if series.spacing_assumed:
        extra["spacing_assumed"] = True
    return MediaInfo(
        format="dicom",
        kind="volume",
        shape=shape,
        dtype=first.dtype,
        pages=len(series.slices),
        spacing=series.spacing,
        axes="ZYXC" if first.channels > 1 else "ZYX",
        extra=extra,
    )


def read_series(paths: Iterable[PathLike]) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(z, y, x[, C]) volume in slice order; rescaled to float32 modality units (e.g. HU)
    when any slice declares a RescaleSlope/Intercept other than 1/0."""
    series = sort_series(paths)
    if len(series.slices) == 1 and series.slices[0].frames > 1:
        return read_file_volume(series.slices[0].path)
    blocks = []
    for header in series.slices:
        frame = read_frame(header.path, max_side=None, max_pixels=DEFAULT_MAX_PIXELS, header=header)
        blocks.append(frame[None])
    volume = rescaled_stack(blocks, [h.ds for h in series.slices])
    return np.ascontiguousarray(volume), series.spacing


def middle_slice(paths: Iterable[PathLike], *, max_side: int | None) -> np.ndarray:
    series = sort_series(paths)
    middle = series.slices[len(series.slices) // 2]
    return read_frame(middle.path, max_side=max_side, max_pixels=DEFAULT_MAX_PIXELS, header=middle)
