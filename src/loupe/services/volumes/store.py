"""Where a volume item's voxels, grid and masks live, and the memory budget.

Everything 3-D in the API works on one grid per item: the NIfTI affine of the
file as ingested (DICOM series: the affine built from the slice positions,
LPS turned into RAS+). ``image.nii.gz`` is written once per content hash under
``LOUPE_HOME/volumes/images`` with exactly that grid, so a mask NiiVue saves
from it comes back on the same grid voxel for voxel. Masks live under
``LOUPE_HOME/volumes/p<project>/i<item>/`` as lossless uint8/int16 NIfTI.
"""

from __future__ import annotations

import gzip
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from loupe.db.models import Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.media import MediaError
from loupe.media.budget import check_decode_bytes
from loupe.media.dicom_series import read_series
from loupe.media.masks3d import VolumeGrid, grid_from_dicom, read_grid, read_mask
from loupe.media.nifti import read_volume
from loupe.services.items.files import item_files
from loupe.settings import Settings
from loupe.tasks.volume import require_volume


@dataclass(frozen=True)
class VolumeSource:
    """What reading a volume item needs, copied out of its row (no session needed)."""

    item_id: int
    project_id: int
    sha256: str
    filename: str
    format: str
    files: tuple[Path, ...]
    shape: tuple[int, ...]


def require_volume_project(project: Project) -> None:
    """CONFLICT (409) for the volume routes of a project of another kind."""
    require_volume(project.task, project.id)


def volume_source(item: Item) -> VolumeSource:
    """The item as a volume; INVALID for 2-D images, NOT_FOUND when its files are gone."""
    if item.kind != "volume" or item.format not in ("nifti", "dicom"):
        raise LoupeError(
            ErrorCode.INVALID,
            f"item {item.id} ({item.filename}) is a {item.format} {item.kind}, "
            "not a NIfTI or DICOM volume",
            item_id=item.id,
        )
    return VolumeSource(
        item.id,
        item.project_id,
        item.sha256,
        item.filename,
        item.format,
        tuple(item_files(item)),
        tuple(int(n) for n in item.shape),
    )


def volumes_dir(settings: Settings) -> Path:
    return settings.home / "volumes"


def item_dir(settings: Settings, project_id: int, item_id: int) -> Path:
    return volumes_dir(settings) / f"p{project_id}" / f"i{item_id}"


def check_budget(source: VolumeSource, settings: Settings) -> None:
    """Refuse (413 ``too_large``) a volume whose float32 working copy is over the budget."""
    voxels = math.prod(source.shape[:3]) if source.shape else 0
    try:
        check_decode_bytes(voxels * 4, path=source.filename)
    except MediaError as exc:
        limit = settings.max_decode_bytes
        raise LoupeError(
            ErrorCode.TOO_LARGE,
            f"volume {source.filename} ({'x'.join(map(str, source.shape))} voxels, "
            f"{voxels * 4 / 2**20:.0f} MiB as float32) is over the memory budget of "
            f"{limit / 2**20:.0f} MiB (LOUPE_MAX_DECODE_BYTES)",
            item_id=source.item_id,
            size_bytes=voxels * 4,
            limit_bytes=limit,
        ) from exc


def read_grid_of(source: VolumeSource) -> VolumeGrid:
    """The item's grid (shape (z, y, x) and NIfTI affine); headers only."""
    try:
        if source.format == "dicom":
            return grid_from_dicom(source.files)
        grid = read_grid(source.files[0])
    except (MediaError, ValueError, OSError) as exc:
        raise _unreadable(source, exc) from exc
    return grid


def read_voxels(source: VolumeSource, settings: Settings) -> np.ndarray:
    """The (z, y, x) voxels (the first time point of 4-D files), after the budget check."""
    check_budget(source, settings)
    try:
        if source.format == "dicom":
            volume, _ = read_series(source.files)
        else:
            volume, _ = read_volume(source.files[0], size=source.files[0].stat().st_size)
    except (MediaError, ValueError, OSError) as exc:
        raise _unreadable(source, exc) from exc
    if volume.ndim == 4:
        volume = volume[..., 0]
    return np.ascontiguousarray(volume)


def compact(volume: np.ndarray) -> np.ndarray:
    """uint8 or int16 when every value fits exactly (never float32 when not needed)."""
    if volume.dtype in (np.uint8, np.int16):
        return volume
    if np.issubdtype(volume.dtype, np.floating) and not np.array_equal(volume, np.rint(volume)):
        return volume.astype(np.float32)
    low, high = (float(volume.min()), float(volume.max())) if volume.size else (0.0, 0.0)
    if low >= 0 and high <= 255:
        return volume.astype(np.uint8)
    if low >= -32768 and high <= 32767:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def nifti_bytes(volume: np.ndarray, grid: VolumeGrid, *, descrip: str) -> bytes:
    """gzip'd NIfTI-1 bytes of a (z, y, x) array on ``grid`` (its qform/sform kept)."""
    data = np.ascontiguousarray(volume.transpose(2, 1, 0))
    image = nib.Nifti1Image(data, grid.affine)
    image.header.set_data_dtype(volume.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(grid.affine if grid.qform is None else grid.qform, code=grid.qform_code)
    image.set_sform(grid.affine, code=grid.sform_code)
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    image.header["descrip"] = descrip.encode()[:79]
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)


def image_file(source: VolumeSource, settings: Settings) -> Path:
    """``image.nii.gz`` of the item (made once per content, then served from disk)."""
    path = volumes_dir(settings) / "images" / f"{source.sha256}.nii.gz"
    if path.is_file():
        return path
    volume = compact(read_voxels(source, settings))
    payload = nifti_bytes(volume, read_grid_of(source), descrip="loupe volume")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".img-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(payload)
    os.replace(tmp, path)
    return path


def parse_mask_upload(body: bytes, image: VolumeGrid) -> np.ndarray:
    """The (z, y, x) labels of an uploaded (gzip'd or plain) NIfTI mask.

    INVALID (422) when it is not NIfTI, or its shape or affine differ from the image's.
    """
    from loupe.media.masks3d import check_mask_matches

    if not body:
        raise LoupeError(ErrorCode.INVALID, "the mask body is empty; send gzip'd NIfTI bytes")
    suffix = ".nii.gz" if body[:2] == b"\x1f\x8b" else ".nii"
    with tempfile.TemporaryDirectory(prefix="loupe-mask-") as tmp:
        path = Path(tmp) / f"mask{suffix}"
        path.write_bytes(body)
        try:
            labels, grid = read_mask(path)
        except Exception as exc:  # nibabel raises many types for bad bytes
            raise LoupeError(ErrorCode.INVALID, f"the mask is not a readable NIfTI: {exc}") from exc
    try:
        check_mask_matches(image, grid)
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, str(exc)) from exc
    return labels


def load_mask(path: str | Path) -> np.ndarray:
    """A stored mask's (z, y, x) labels."""
    labels, _ = read_mask(path)
    return labels


def _unreadable(source: VolumeSource, exc: Exception) -> LoupeError:
    reason = exc.reason if isinstance(exc, MediaError) else str(exc)
    return LoupeError(
        ErrorCode.UNSUPPORTED_MEDIA,
        f"cannot read volume item {source.item_id} ({source.filename}): {reason}",
        item_id=source.item_id,
    )


def class_values(project: Project) -> dict[int, str]:
    """Label value -> class name from the project schema (0 is background)."""
    classes = (project.schema or {}).get("classes", [])
    return {int(c["value"]): str(c["name"]) for c in classes if c.get("value") is not None}
