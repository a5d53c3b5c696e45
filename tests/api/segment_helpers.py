"""Helpers for the 2-D segmentation API tests: real images from scikit-image."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import skimage.data
from PIL import Image

SCHEMA = {"classes": [{"name": "coin", "color": "#00ff00", "value": 1}]}
FAST = {"pixel_features": "filters", "heatmap_every": 1, "max_epochs": 30}


def coins_crop() -> np.ndarray:
    """A 96 x 128 crop of scikit-image's ``coins`` with two whole coins."""
    return np.ascontiguousarray(skimage.data.coins()[0:96, 0:128])


def coins_truth(image: np.ndarray) -> np.ndarray:
    """A reference mask of the crop (Otsu threshold, holes filled): coins = 1."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    fg = image > threshold_otsu(image)
    fg = ndimage.binary_opening(ndimage.binary_fill_holes(fg), iterations=2)
    return fg.astype(np.uint8)


def add_image_item(settings: Any, project: Any, image: np.ndarray, folder: Path, name: str) -> Any:
    """Insert an item backed by ``image`` saved as a PNG (no ingest pipeline)."""
    from loupe.db.models import Item
    from loupe.db.session import session_scope

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    with session_scope(settings.db_url) as s:
        item = Item(
            project_id=project.id,
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
            uri=str(path),
            filename=path.name,
            format="png",
            shape=list(image.shape),
            axes="YX" if image.ndim == 2 else "YXC",
            size_bytes=path.stat().st_size,
        )
        s.add(item)
        s.flush()
    return item


def png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def clicks_from(truth: np.ndarray, n: int = 12, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` foreground and ``n`` background points well inside each region."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    points = []
    for value in (1, 0):
        inside = ndimage.binary_erosion(truth == value, iterations=4)
        rows, cols = np.nonzero(inside)
        for k in rng.choice(len(rows), n, replace=False):
            points.append({"x": float(cols[k]), "y": float(rows[k]), "value": value})
    return points
