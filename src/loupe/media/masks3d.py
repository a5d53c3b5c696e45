"""Label masks of 3-D volumes, always on the image grid (NIfTI ``.nii.gz``).

Arrays are (z, y, x), as :func:`loupe.media.nifti.read_volume` returns them; the affine
is the NIfTI one, mapping the file's voxel index (x, y, z) to world (RAS+, mm). Nothing
is reoriented, so a mask written here lines up voxel for voxel with its image, whatever
the image's orientation (RAS, LAS, LPS, oblique ...).

Masks are stored as uint8 (labels up to 255) or int16, never as floats: smaller files,
and no rounding question when a viewer reads them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from loupe.media._core import PathLike

# Two grids are the same when their affines agree to this many mm (float32 headers).
AFFINE_ATOL_MM = 1e-3
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class VolumeGrid:
    """Where a volume's voxels are: its (z, y, x) shape and its NIfTI affine.

    ``affine`` maps the index (x, y, z) (the NIfTI order, i.e. the array index reversed)
    to world RAS+ millimetres. ``qform_code`` / ``sform_code`` are kept so that a mask
    written on this grid has the same header codes as its image.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray = field(repr=False)
    qform_code: int = 1
    sform_code: int = 1
    # The image's own qform when it differs from ``affine`` (ITK readers prefer the qform,
    # nibabel the sform): a mask copies both so that every reader puts it where its image is.
    qform: np.ndarray | None = field(default=None, repr=False)

    @property
    def orientation(self) -> str:
        """Axis codes of the (x, y, z) index, e.g. ``'RAS'`` or ``'LAS'``."""
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (z, y, x)."""
        x, y, z = (float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return z, y, x


def grid_of(image: Any) -> VolumeGrid:
    """The grid of a loaded nibabel NIfTI image (3-D; a 4-D image's first three axes)."""
    if len(image.shape) < 3:
        raise ValueError(f"image must be 3-D, got shape {tuple(image.shape)}")
    x, y, z = (int(n) for n in image.shape[:3])
    header = image.header
    qcode = int(header["qform_code"]) if "qform_code" in header else 1
    scode = int(header["sform_code"]) if "sform_code" in header else 1
    affine = np.array(image.affine, dtype=np.float64)
    qform = np.array(image.get_qform(), dtype=np.float64) if qcode > 0 else None
    if qform is not None and np.allclose(qform, affine, atol=1e-6):
        qform = None
    return VolumeGrid((z, y, x), affine, qcode, scode, qform)


def read_grid(path: PathLike) -> VolumeGrid:
    """The grid of a NIfTI file (header only; no voxels are read)."""
    return grid_of(nib.load(path))


def grid_from_dicom(paths: Iterable[PathLike]) -> VolumeGrid:
    """The grid of a DICOM series as :func:`loupe.media.dicom_series.read_series` stacks it.

    Rows are y, columns x, and slices z in spatial order; the affine converts the
    patient LPS coordinates of DICOM to RAS+.
    """
    from loupe.media.dicom_series import sort_series

    series = sort_series(paths)
    first = series.slices[0].ds
    try:
        cosines = np.array([float(v) for v in first.ImageOrientationPatient], dtype=np.float64)
        origin = np.array([float(v) for v in first.ImagePositionPatient], dtype=np.float64)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError("the DICOM series has no ImageOrientation/PositionPatient") from exc
    dz, dy, dx = series.spacing
    row_dir, col_dir = cosines[:3], cosines[3:]
    if len(series.slices) > 1:
        last = np.array([float(v) for v in series.slices[-1].ds.ImagePositionPatient])
        step = (last - origin) / (len(series.slices) - 1)
    else:
        step = np.cross(row_dir, col_dir) * dz
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dx, col_dir * dy, step, origin
    depth = len(series.slices) if series.slices[0].frames == 1 else series.slices[0].frames
    shape = (depth, series.slices[0].rows, series.slices[0].cols)
    return VolumeGrid(shape, _LPS_TO_RAS @ lps)


def check_mask_matches(
    image: VolumeGrid, mask: VolumeGrid, *, atol: float = AFFINE_ATOL_MM
) -> None:
    """Raise ``ValueError`` naming the difference when ``mask`` is not on ``image``'s grid.

    Both the (z, y, x) shape and the affine must agree (to ``atol`` mm).
    """
    if tuple(mask.shape) != tuple(image.shape):
        raise ValueError(
            f"mask shape (z, y, x) {tuple(mask.shape)} differs from the image's "
            f"{tuple(image.shape)}; resample the mask onto the image grid"
        )
    difference = float(np.max(np.abs(np.asarray(mask.affine) - np.asarray(image.affine))))
    if not difference <= atol:
        raise ValueError(
            f"mask affine differs from the image's by up to {difference:.4g} mm "
            f"(mask {mask.orientation}, image {image.orientation}); "
            "resample the mask onto the image grid"
        )


def _as_label_array(mask: np.ndarray) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"mask must be 3-D (z, y, x), got shape {array.shape}")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array)):
            raise ValueError("mask must hold integer label values, got fractional floats")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"mask must be an integer array, got dtype {array.dtype}")
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if 0 <= low and high <= 255:
        return array.astype(np.uint8, copy=False)
    if -32768 <= low and high <= 32767:
        return array.astype(np.int16, copy=False)
    raise ValueError(f"mask labels must fit in int16, got range [{low}, {high}]")


def write_mask(path: PathLike, mask: np.ndarray, grid: VolumeGrid) -> Path:
    """Write ``mask`` (z, y, x) on ``grid`` as NIfTI (``.nii.gz`` compresses).

    The dtype is uint8 when the labels fit in 0..255, else int16; the affine and the
    qform/sform codes are the grid's. Returns the path.
    """
    labels = _as_label_array(mask)
    if labels.shape != tuple(grid.shape):
        raise ValueError(f"mask shape {labels.shape} differs from the grid's {tuple(grid.shape)}")
    data = np.ascontiguousarray(labels.transpose(2, 1, 0))  # (x, y, z) as NIfTI stores it
    image = nib.Nifti1Image(data, grid.affine)
    image.header.set_data_dtype(labels.dtype)
    image.header.set_xyzt_units("mm")
    image.set_qform(grid.affine if grid.qform is None else grid.qform, code=grid.qform_code)
    image.set_sform(grid.affine, code=grid.sform_code)
    image.header["scl_slope"], image.header["scl_inter"] = 1.0, 0.0
    image.header["descrip"] = b"loupe label mask"
    out = Path(path)
    nib.save(image, out)
    return out


def read_mask(path: PathLike) -> tuple[np.ndarray, VolumeGrid]:
    """A label mask file as ((z, y, x) uint8/int16 array, its grid).

    Float files are accepted when every value is an integer label (some viewers save
    float32); anything else raises ``ValueError``.
    """
    image: Any = nib.load(path)
    if len(image.shape) == 4 and image.shape[3] == 1:
        image = image.slicer[..., 0]
    if len(image.shape) != 3:
        raise ValueError(f"mask must be 3-D, got shape {tuple(image.shape)}")
    data = np.asanyarray(image.dataobj)
    labels = _as_label_array(np.ascontiguousarray(data.transpose(2, 1, 0)))
    return labels.astype(labels.dtype.newbyteorder("="), copy=False), grid_of(image)


def resample_to_grid(mask: np.ndarray, source: VolumeGrid, target: VolumeGrid) -> np.ndarray:
    """Nearest-neighbour resampling of a (z, y, x) label mask from ``source`` onto ``target``.

    Each target voxel takes the label of the source voxel whose centre is nearest to
    its own centre in world space; voxels outside the source are 0. The dtype is kept.
    """
    from scipy import ndimage

    labels = np.asarray(mask)
    if labels.shape != tuple(source.shape):
        raise ValueError(f"mask shape {labels.shape} differs from its grid's {source.shape}")
    # target index (x, y, z) -> world -> source index (x, y, z); then in (z, y, x) order
    xyz = np.linalg.inv(source.affine) @ target.affine
    flip = np.eye(4)[[2, 1, 0, 3]]
    zyx = flip @ xyz @ flip
    if np.allclose(zyx, np.eye(4), atol=1e-6) and labels.shape == tuple(target.shape):
        return labels.copy()
    # order=0 rounds to the nearest voxel but treats coordinates outside [0, n-1] as
    # outside; a one-voxel border of background with mode="nearest" makes the source
    # extend to its voxels' edges (n - 0.5) and gives 0 beyond them. The 1e-6 nudge
    # settles exact half-way ties the same way on every platform.
    padded = np.pad(labels, 1, mode="constant", constant_values=0)
    return ndimage.affine_transform(
        padded,
        zyx[:3, :3],
        offset=zyx[:3, 3] + 1.0 + 1e-6,
        output_shape=tuple(target.shape),
        order=0,
        mode="nearest",
        prefilter=False,
    )


def mask_on_image_grid(
    mask_path: PathLike, image_grid: VolumeGrid, *, resample: bool = True
) -> np.ndarray:
    """Read a mask file and return it on ``image_grid``.

    A mask already on the grid is returned as stored; one on another grid is resampled
    (nearest neighbour) when ``resample`` is true, else ``ValueError`` says why it does
    not fit (the API answers 422).
    """
    labels, grid = read_mask(mask_path)
    try:
        check_mask_matches(image_grid, grid)
    except ValueError:
        if not resample:
            raise
        return resample_to_grid(labels, grid, image_grid)
    return labels
