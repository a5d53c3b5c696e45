"""Export masks as an nnU-Net v2 raw dataset.

Layout (nnU-Net v2 ``dataset_format.md``)::

    Dataset{ID:03d}_{Name}/
        imagesTr/<case>_0000.nii.gz   the image (channel 0), its header kept
        labelsTr/<case>.nii.gz        the mask on the image grid, uint8
        dataset.json                  channel_names, labels, numTraining, file_ending

Masks that are not on their image's grid are resampled (nearest neighbour) when
``resample`` is true, else the export stops with INVALID naming the case.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from loupe.errors import ErrorCode, LoupeError
from loupe.media.masks3d import check_mask_matches, grid_of, read_mask, resample_to_grid, write_mask

FILE_ENDING = ".nii.gz"
_CASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

Case = tuple[str, str | Path, str | Path]  # (case name, image path, mask path)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{ID:03d}_{name}`` as nnU-Net names raw dataset folders."""
    if not 1 <= dataset_id <= 999:
        raise LoupeError(ErrorCode.INVALID, f"dataset_id must be 1..999, got {dataset_id}")
    if not _DATASET_NAME.match(name):
        raise LoupeError(ErrorCode.INVALID, f"dataset name {name!r}: use letters, digits, _ and -")
    return f"Dataset{dataset_id:03d}_{name}"


def dataset_json(
    *, channel_names: Mapping[int, str], labels: Mapping[str, int], n_training: int
) -> dict[str, object]:
    """nnU-Net v2's ``dataset.json``: ``labels`` maps names to consecutive values from 0."""
    values = sorted(labels.values())
    if values != list(range(len(values))) or labels.get("background") != 0:
        raise LoupeError(
            ErrorCode.INVALID,
            f"nnU-Net needs consecutive label values 0..n with 'background': 0, got {dict(labels)}",
        )
    return {
        "channel_names": {str(k): v for k, v in sorted(channel_names.items())},
        "labels": dict(sorted(labels.items(), key=lambda item: item[1])),
        "numTraining": n_training,
        "file_ending": FILE_ENDING,
    }


def _write_image(source: Path, target: Path) -> Any:
    """Copy a .nii.gz as is (its header is the grid); convert other NIfTI files."""
    image: Any = nib.load(source)
    if len(image.shape) != 3:
        raise LoupeError(
            ErrorCode.INVALID, f"{source.name}: nnU-Net export takes 3-D images, got {image.shape}"
        )
    if str(source).lower().endswith(FILE_ENDING):
        shutil.copyfile(source, target)
    else:
        nib.save(image, target)
    return image


def export_nnunet_dataset(
    cases: Sequence[Case],
    out_dir: str | Path,
    *,
    dataset_id: int,
    name: str,
    labels: Mapping[str, int],
    channel_names: Mapping[int, str] | None = None,
    resample: bool = True,
) -> Path:
    """Write the nnU-Net v2 raw dataset of ``cases`` under ``out_dir``; return its folder.

    ``labels`` maps label names to mask values (``{"background": 0, "tumour": 1}``);
    a mask value outside it stops the export (INVALID). ``channel_names`` defaults to
    ``{0: "image"}``; nnU-Net normalises "CT" channels with global statistics and every
    other name by z-score per image.
    """
    if not cases:
        raise LoupeError(ErrorCode.INVALID, "nnU-Net export needs at least one case")
    names = [case[0] for case in cases]
    bad = [n for n in names if not _CASE_NAME.match(n)]
    if bad:
        raise LoupeError(ErrorCode.INVALID, f"case names must be file-safe, got {bad[:3]}")
    if len(set(names)) != len(names):
        raise LoupeError(ErrorCode.INVALID, "case names must be unique")
    meta = dataset_json(
        channel_names=channel_names or {0: "image"}, labels=labels, n_training=len(cases)
    )
    folder = Path(out_dir) / dataset_folder_name(dataset_id, name)
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    images_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    allowed = set(labels.values())
    for case, image_path, mask_path in cases:
        image = _write_image(Path(image_path), images_dir / f"{case}_0000{FILE_ENDING}")
        grid = grid_of(image)
        mask, mask_grid = read_mask(mask_path)
        try:
            check_mask_matches(grid, mask_grid)
        except ValueError as exc:
            if not resample:
                raise LoupeError(ErrorCode.INVALID, f"case {case}: {exc}") from exc
            mask = resample_to_grid(mask, mask_grid, grid)
        unknown = sorted(set(np.unique(mask).tolist()) - allowed)
        if unknown:
            raise LoupeError(
                ErrorCode.INVALID, f"case {case}: mask values {unknown} are not in the labels"
            )
        write_mask(labels_dir / f"{case}{FILE_ENDING}", mask, grid)
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def plan_and_preprocess(
    dataset_id: int,
    *,
    raw: str | Path,
    preprocessed: str | Path,
    results: str | Path,
    configurations: Sequence[str] = ("3d_fullres",),
    processes: int = 1,
    timeout: float = 3600,
) -> subprocess.CompletedProcess[str]:
    """Run ``nnUNetv2_plan_and_preprocess -d ID --verify_dataset_integrity`` on an export.

    Raises UNAVAILABLE when nnunetv2 is not installed and INVALID (with nnU-Net's
    message) when it rejects the dataset.
    """
    command = Path(sys.executable).with_name("nnUNetv2_plan_and_preprocess")
    program = str(command) if command.exists() else shutil.which("nnUNetv2_plan_and_preprocess")
    if program is None:
        raise LoupeError(
            ErrorCode.UNAVAILABLE, "nnU-Net v2 is not installed (pip install nnunetv2)"
        )
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(preprocessed),
        "nnUNet_results": str(results),
        # nnU-Net's pools default to 8 workers, each importing torch: far too many here
        "nnUNet_def_n_proc": str(processes),
    }
    args = [program, "-d", str(dataset_id), "--verify_dataset_integrity"]
    args += ["-npfp", str(processes), "-c", *configurations, "-np", str(processes)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise LoupeError(ErrorCode.INVALID, f"nnU-Net rejected the dataset: {tail}")
    return done
