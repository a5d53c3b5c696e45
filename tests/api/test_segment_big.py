"""A big tiled TIFF in a 2-D segmentation project: uploaded, clicked, trained, predicted,
accepted and exported without the image ever being held whole as floats."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from typing import Any

import numpy as np
import tifffile
from PIL import Image

ROWS, COLS = 6_000, 5_000
PITCH, RADIUS = 1_000, 260  # discs on a grid: centres at (500 + k * 1000, ...)
SCHEMA = {"classes": [{"name": "disc", "color": "#00ff00", "value": 1}]}
SETTINGS = {"pixel_features": "filters", "max_epochs": 30, "heatmap_every": 10, "patience": 30}
FULL_FLOAT_BYTES = ROWS * COLS * 3 * 4
"""The image as float32 RGB: what loading it whole for features would allocate."""


def _truth() -> np.ndarray:
    """Discs (1) on background (0), ``(ROWS, COLS)`` bool."""
    y = (np.arange(ROWS) % PITCH - PITCH / 2)[:, None]
    x = (np.arange(COLS) % PITCH - PITCH / 2)[None, :]
    return (y * y + x * x) <= RADIUS * RADIUS


def _slide_bytes() -> bytes:
    """A 6000 x 5000 RGB pyramidal TIFF (256 px tiles, zlib, two sub-resolutions):
    bright reddish discs on a darker, textured background."""
    truth = _truth()
    image = np.empty((ROWS, COLS, 3), np.uint8)
    x = np.arange(COLS)[None, :]
    for r0 in range(0, ROWS, 500):  # in bands, to keep the test's own memory small
        band = truth[r0 : r0 + 500]
        y = np.arange(r0, r0 + len(band))[:, None]
        noise = ((x // 3 * 7 + y // 5 * 11) % 31).astype(np.uint8)  # a texture zlib packs
        image[r0 : r0 + 500, :, 0] = np.where(band, 200, 60) + noise
        image[r0 : r0 + 500, :, 1] = np.where(band, 120, 70) + noise
        image[r0 : r0 + 500, :, 2] = np.where(band, 90, 80) + noise
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tif:
        options = {"tile": (256, 256), "compression": "zlib", "photometric": "rgb"}
        tif.write(image, subifds=2, **options)
        tif.write(image[::2, ::2], subfiletype=1, **options)
        tif.write(image[::4, ::4], subfiletype=1, **options)
    return buf.getvalue()


def _clicks() -> list[dict[str, Any]]:
    """Foreground clicks inside discs and background clicks around and between them,
    spread over the whole slide (every labelling tile gets some)."""
    points = []
    for cy in range(500, ROWS, 2 * PITCH):
        for cx in range(500, COLS, 2 * PITCH):
            points.append({"x": float(cx), "y": float(cy), "value": 1})
            for angle in np.linspace(0, 2 * np.pi, 6, endpoint=False):
                dy, dx = np.sin(angle), np.cos(angle)
                for radius, value in ((120, 1), (210, 1), (320, 0), (440, 0)):
                    y, x = round(cy + radius * dy), round(cx + radius * dx)
                    points.append({"x": float(x), "y": float(y), "value": value})
    return points


def test_big_tiff_is_segmented_tile_by_tile(
    make_user: Any, make_project: Any, login: Any, settings: Any
) -> None:
    owner = make_user()
    project = make_project(owner, task="segment", schema=SCHEMA, settings_=SETTINGS)
    client = login(owner)
    data = _slide_bytes()
    # Modules imported on first use (30 MB of scipy, skimage, matplotlib) would count
    # in the peak; load them first.
    from scipy import ndimage, stats  # noqa: F401
    from skimage.draw import line  # noqa: F401
    from skimage.feature import multiscale_basic_features  # noqa: F401

    import loupe.services.segments.train  # noqa: F401

    tracemalloc.start()
    try:
        r = client.post(
            f"/api/projects/{project.id}/uploads",
            files=[("files", ("slide.tif", data, "image/tiff"))],
        )
        assert r.status_code == 200, r.text
        (item_id,) = r.json()["item_ids"]
        base = f"/api/projects/{project.id}/segment"
        ann = client.get(f"{base}/items/{item_id}/annotation").json()
        assert (ann["height"], ann["width"]) == (ROWS, COLS)

        preview = client.get(f"{base}/items/{item_id}/preview.jpg", params={"max_size": 1024})
        assert preview.status_code == 200, preview.text
        assert Image.open(io.BytesIO(preview.content)).size == (853, 1024)

        points = _clicks()
        r = client.put(
            f"{base}/items/{item_id}/annotation", json={"version": ann["version"], "points": points}
        )
        assert r.status_code == 200, r.text
        r = client.post(f"{base}/train", json={"item_id": item_id})
        assert r.status_code == 202, r.text
        job = client.get(f"/api/jobs/{r.json()['id']}").json()
        assert job["status"] == "done", job
        assert job["result"]["predicted"] == 1 and job["result"]["epoch"] == 30

        heat = client.get(f"{base}/items/{item_id}/heatmap.png", params={"max_size": 600})
        assert heat.status_code == 200, heat.text
        heatmap = np.asarray(Image.open(io.BytesIO(heat.content)))
        assert heatmap.shape == (600, 500, 4)

        r = client.post(f"{base}/items/{item_id}/accept-mask", json={"threshold": 0.5})
        assert r.status_code == 200, r.text
        assert r.json()["has_mask"] is True

        r = client.get(f"{base}/export.zip")
        assert r.status_code == 200, r.text
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # The whole image as float32 RGB is 360 MB; the features read it tile by tile and
    # the prediction, heatmap, mask and export work band by band or on uint8.
    assert peak < FULL_FLOAT_BYTES / 2, f"peak {peak / 1e6:.0f} MB"

    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        names = zf.namelist()
        assert "masks/slide.tif" in names, names
        with tifffile.TiffFile(io.BytesIO(zf.read("masks/slide.tif"))) as tif:
            page = tif.pages[0]
            assert page.compression != tifffile.COMPRESSION.NONE
            mask = page.asarray()
    assert mask.shape == (ROWS, COLS) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) <= {0, 1}
    truth = _truth()
    sub = (slice(None, None, 7), slice(None, None, 7))
    dice = (
        2
        * np.sum(mask[sub].astype(bool) & truth[sub])
        / (np.sum(mask[sub] > 0) + np.sum(truth[sub]))
    )
    assert dice > 0.9, dice
    for p in points:  # every click agrees with the accepted mask
        assert mask[int(p["y"]), int(p["x"])] == p["value"], p

    png = client.get(f"{base}/items/{item_id}/mask.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))), mask)
