"""3-D exports through the project export job (``POST /projects/{id}/exports``).

``format`` values, each written as one ZIP (downloaded like any export):

* ``nifti_masks``: ``masks/<case>.nii.gz`` per corrected volume (on the image grid)
  and ``images/<case>.nii.gz``;
* ``nnunet``: the nnU-Net v2 raw dataset ``Dataset{ID}_{Name}/`` (``imagesTr``,
  ``labelsTr``, ``dataset.json``), ready for ``nnUNetv2_plan_and_preprocess``;
* ``dicom_seg``: ``seg/<case>.dcm``, one DICOM-SEG per corrected volume that came
  from a DICOM series (others are listed as skipped).

``<case>`` is ``item<id>``. Only volumes whose current label is a person's mask
are exported.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.core import export_basename
from loupe.services.exports.registry import Exporter, ExportRequest, register_exporter
from loupe.services.volumes.cases import corrected_cases, get_project
from loupe.services.volumes.dicom_seg import write_dicom_seg
from loupe.services.volumes.nnunet import export_nnunet_dataset
from loupe.services.volumes.store import class_values, image_file, load_mask
from loupe.settings import Settings

VOLUME_EXPORT_FORMATS = ("nifti_masks", "nnunet", "dicom_seg")
Progress = Callable[[int, int], None]


def write_volume_export(
    settings: Settings,
    project_id: int,
    fmt: str,
    out: Path,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the ZIP of ``fmt`` to ``out``; returns ``{cases, skipped}``."""
    if fmt not in VOLUME_EXPORT_FORMATS:
        raise LoupeError(ErrorCode.INVALID, f"format {fmt!r}: use {VOLUME_EXPORT_FORMATS}")
    with session_scope(settings.db_url, write=False) as db:
        project = get_project(db, project_id)
        classes = class_values(project)
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", project.name).strip("-_") or "Loupe"
        cases = corrected_cases(db, project_id)
    if not cases:
        raise LoupeError(ErrorCode.CONFLICT, "no corrected volumes to export yet")
    out.parent.mkdir(parents=True, exist_ok=True)
    skipped: list[int] = []
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".vol-export-") as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        if fmt == "nnunet":
            labels = {"background": 0, **{n: v for v, n in sorted(classes.items())}}
            export_nnunet_dataset(
                [
                    (f"item{c.source.item_id}", image_file(c.source, settings), c.mask)
                    for c in cases
                ],
                root,
                dataset_id=(project_id % 999) + 1,
                name=name[:60],
                labels=labels,
                channel_names={0: "image"},
            )
        for index, case in enumerate(cases):
            label = f"item{case.source.item_id}"
            if fmt == "nifti_masks":
                (root / "masks").mkdir(exist_ok=True)
                (root / "images").mkdir(exist_ok=True)
                shutil.copyfile(case.mask, root / "masks" / f"{label}.nii.gz")
                shutil.copyfile(
                    image_file(case.source, settings), root / "images" / f"{label}.nii.gz"
                )
            elif fmt == "dicom_seg":
                if case.source.format != "dicom":
                    skipped.append(case.source.item_id)
                    continue
                (root / "seg").mkdir(exist_ok=True)
                mask = load_mask(case.mask)
                present = {v: n for v, n in classes.items() if (mask == v).any()}
                if not present:
                    skipped.append(case.source.item_id)
                    continue
                write_dicom_seg(
                    case.source.files, mask, root / "seg" / f"{label}.dcm", segments=present
                )
            if progress is not None:
                progress(index + 1, len(cases))
        partial = out.with_name(f".{out.name}.part")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(root).as_posix())
        os.replace(partial, out)
    return {"cases": len(cases) - len(skipped), "skipped": skipped}


def run_volume_export(
    settings: Settings, job_id: int, params: dict[str, Any], progress: Progress
) -> dict[str, Any]:
    """The export job's result for a 3-D format (the same fields as a dataset ZIP's)."""
    project_id = int(params["project_id"])
    fmt = str(params["format"])
    with session_scope(settings.db_url, write=False) as db:
        project_name = get_project(db, project_id).name
    filename = export_basename(project_name, f"-{fmt}.zip")
    out = settings.exports_dir / str(project_id) / f"job{job_id}-{filename}"
    extra = write_volume_export(settings, project_id, fmt, out, progress=progress)
    return {
        "file": str(out.relative_to(settings.exports_dir)),
        "filename": filename,
        "format": "zip",
        "volume_format": fmt,
        "size_bytes": out.stat().st_size,
        **extra,
    }


def _exporter(fmt: str, title: str) -> Exporter:
    def run(settings: Settings, request: ExportRequest) -> dict[str, Any]:
        params = {**request.params, "format": fmt}
        return run_volume_export(settings, request.job_id, params, request.progress)

    return Exporter(fmt, title, run, kinds=("volume",))


register_exporter(_exporter("nifti_masks", "Masks and images as NIfTI"))
register_exporter(_exporter("nnunet", "nnU-Net v2 raw dataset"))
register_exporter(_exporter("dicom_seg", "DICOM-SEG (volumes that came from DICOM)"))
