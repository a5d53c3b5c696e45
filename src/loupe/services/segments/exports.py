"""Export a 2-D segmentation project: masks per item, COCO JSON with RLE, points CSV.

One ZIP: ``masks/<item stem>.png`` (8-bit label values; ``.tif`` for images over
:data:`TIFF_ABOVE` pixels, where PNG encoders get slow and some readers refuse),
``coco.json`` (one annotation per item and class, compressed RLE as pycocotools
writes it, ``iscrowd`` 0) and ``points.csv`` (item_id, filename, x, y, value, class,
source). Items without a mask contribute their points only.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, Project
from loupe.db.session import session_scope
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.core import export_basename
from loupe.services.exports.registry import (
    Exporter,
    ExportRequest,
    output_path,
    register_exporter,
)
from loupe.services.labels.core import NONE_KIND
from loupe.services.segments import files
from loupe.services.segments.payload import class_values
from loupe.settings import Settings
from loupe.tasks.segment import require_segment

TIFF_ABOVE = 4096 * 4096
BLOCK_PIXELS = 4_000_000
"""Mask pixels per block when a big mask is run-length encoded."""


def rle_counts(mask: np.ndarray) -> list[int]:
    """Run lengths of a binary mask in column-major order, starting with zeros (COCO)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return [int(c) for c in counts]


def rle_string(counts: list[int]) -> str:
    """pycocotools' compressed RLE string of ``counts`` (``rleToString``)."""
    out = []
    for i, value in enumerate(counts):
        x = value - counts[i - 2] if i > 2 else value
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_decode(counts_text: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rle_string` + :func:`rle_counts` (``rleFrString``)."""
    counts: list[int] = []
    p = 0
    while p < len(counts_text):
        x, k, more = 0, 0, True
        while more:
            c = ord(counts_text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    flat = np.zeros(shape[0] * shape[1], dtype=bool)
    pos, value = 0, False
    for c in counts:
        flat[pos : pos + c] = value
        pos += c
        value = not value
    return flat.reshape(shape, order="F")


def class_rle(
    mask: np.ndarray, value: int, *, block_pixels: int = BLOCK_PIXELS
) -> tuple[list[int], list[int]]:
    """COCO run lengths (:func:`rle_counts`) and ``[x, y, w, h]`` box of ``mask == value``,
    computed over blocks of whole columns, so a big mask is never copied whole."""
    rows, cols = mask.shape
    step = max(1, block_pixels // max(rows, 1))
    counts: list[int] = []
    current, run = False, 0
    any_row = np.zeros(rows, dtype=bool)
    any_col = np.zeros(cols, dtype=bool)
    for c0 in range(0, cols, step):
        block = mask[:, c0 : c0 + step] == value
        any_row |= block.any(axis=1)
        any_col[c0 : c0 + step] = block.any(axis=0)
        flat = block.ravel(order="F")
        change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        for length, on in zip(np.diff(bounds).tolist(), flat[bounds[:-1]].tolist(), strict=True):
            if on == current:
                run += length
            else:
                counts.append(run)
                current, run = on, length
    counts.append(run)
    return [int(c) for c in counts], _box(any_row, any_col)


def _box(any_row: np.ndarray, any_col: np.ndarray) -> list[int]:
    r, c = np.flatnonzero(any_row), np.flatnonzero(any_col)
    if not len(r):
        return [0, 0, 0, 0]
    return [int(c[0]), int(r[0]), int(c[-1] - c[0] + 1), int(r[-1] - r[0] + 1)]


def _mask_bytes(mask: np.ndarray) -> tuple[str, bytes]:
    if mask.size > TIFF_ABOVE:
        return ".tif", files.encode_tiff(mask)
    return ".png", files.encode_png(mask)


def export_path(settings: Settings, project: Project) -> Path:
    """A fresh file name under the exports folder for the project's segment ZIP."""
    require_segment(project.task, project.id)
    stamp = utcnow().strftime("%Y%m%dT%H%M%S")
    return settings.exports_dir / f"segment-{project.id}-{stamp}-{uuid.uuid4().hex[:6]}.zip"


def write_export(db: Session, settings: Settings, project: Project, path: Path) -> dict[str, int]:
    """Write the project's masks, COCO JSON and points CSV to the ZIP ``path``."""
    names = class_values(project)
    coco: dict[str, Any] = {
        "info": {"description": f"Loupe project {project.name}", "version": "1"},
        "images": [],
        "annotations": [],
        "categories": [{"id": v, "name": n} for v, n in sorted(names.items()) if v != 0],
    }
    points = io.StringIO()
    writer = csv.writer(points)
    writer.writerow(["item_id", "filename", "x", "y", "value", "class", "source"])
    n_masks = n_points = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = db.execute(
        select(Item, Annotation.data)
        .join(Annotation, Annotation.item_id == Item.id)
        .where(Annotation.project_id == project.id, Annotation.kind != NONE_KIND)
        .order_by(Item.id)
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for item, data in rows:
            data = data or {}
            height, width = int(data.get("height", 0)), int(data.get("width", 0))
            coco["images"].append(
                {"id": item.id, "file_name": item.filename, "width": width, "height": height}
            )
            for p in data.get("points", []):
                value = int(p["value"])
                writer.writerow(
                    [
                        item.id,
                        item.filename,
                        p["x"],
                        p["y"],
                        value,
                        names.get(value, ""),
                        p.get("source", "human"),
                    ]
                )
                n_points += 1
            if not data.get("mask"):
                continue
            mask = files.read_mask(settings, project.id, str(data["mask"]))
            suffix, blob = _mask_bytes(mask)
            zf.writestr(f"masks/{Path(item.filename).stem}{suffix}", blob)
            n_masks += 1
            for value in sorted(set(files.label_values(mask)) - {0}):
                counts, bbox = class_rle(mask, value)
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": item.id,
                        "category_id": int(value),
                        "segmentation": {
                            "size": [int(mask.shape[0]), int(mask.shape[1])],
                            "counts": rle_string(counts),
                        },
                        "area": int(sum(counts[1::2])),
                        "bbox": bbox,
                        "iscrowd": 0,
                    }
                )
        zf.writestr("coco.json", json.dumps(coco))
        zf.writestr("points.csv", points.getvalue())
    return {"masks": n_masks, "points": n_points, "annotations": len(coco["annotations"])}


def _run_export(settings: Settings, request: ExportRequest) -> dict[str, Any]:
    """The ``segment_masks`` format of the project export job."""
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, request.project_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {request.project_id} not found")
        filename = export_basename(project.name, "-masks.zip")
        out = output_path(settings, request, filename)
        counts = write_export(db, settings, project, out)
    return {
        "file": str(out.relative_to(settings.exports_dir)),
        "filename": filename,
        "format": "zip",
        "size_bytes": out.stat().st_size,
        **counts,
    }


register_exporter(
    Exporter(
        "segment_masks",
        "Masks (PNG, TIFF when big), COCO JSON with RLE, points CSV",
        _run_export,
        kinds=("segment",),
    )
)
