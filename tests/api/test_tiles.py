"""DeepZoom tiles over the API: descriptor, pixels, caching headers and access."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from loupe.media import tiles as media_tiles

ROWS, COLS = 2_000, 3_000


@pytest.fixture
def app(app: Any) -> Any:
    """The app with the tiles router, registered here until routes/__init__ lists it
    (inserted before the front end's catch-all route)."""
    from loupe.api.routes import tiles

    if not any(str(getattr(r, "path", "")).endswith("/dzi") for r in app.router.routes):
        before = len(app.router.routes)
        app.include_router(tiles.router, prefix="/api")
        added = app.router.routes[before:]
        del app.router.routes[before:]
        app.router.routes[0:0] = added
    return app


def _image() -> np.ndarray:
    y = np.arange(ROWS, dtype=np.int32)[:, None]
    x = np.arange(COLS, dtype=np.int32)[None, :]
    out = np.empty((ROWS, COLS, 3), np.uint8)
    out[..., 0] = (x // 8) % 256
    out[..., 1] = (y // 8) % 256
    out[..., 2] = ((x // 200 + y // 200) % 2) * 200
    return out


def _add_item(
    settings: Any, project: Any, path: Path, *, kind: str = "image", salt: str = ""
) -> Any:
    from loupe.db.models import Item
    from loupe.db.session import session_scope

    with session_scope(settings.db_url) as s:
        item = Item(
            project_id=project.id,
            sha256=hashlib.sha256(path.read_bytes() + salt.encode()).hexdigest(),
            uri=str(path),
            filename=path.name,
            format="tiff",
            kind=kind,
            shape=[ROWS, COLS, 3],
            axes="YXC",
            size_bytes=path.stat().st_size,
        )
        s.add(item)
        s.flush()
        return item


@pytest.fixture
def slide(tmp_path: Path) -> tuple[Path, np.ndarray]:
    image = _image()
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib", photometric="rgb")
    media_tiles.clear_cache()
    return path, image


def _jpeg(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_descriptor_and_tiles(
    settings: Any, make_user: Any, make_project: Any, login: Any, slide: Any
) -> None:
    path, image = slide
    owner = make_user()
    project = make_project(owner)
    item = _add_item(settings, project, path)
    c = login(owner)
    base = f"/api/projects/{project.id}/items/{item.id}"

    r = c.get(f"{base}/dzi")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/xml")
    assert f'<Size Width="{COLS}" Height="{ROWS}"/>' in r.text
    assert 'TileSize="254" Overlap="1"' in r.text
    assert "max-age" in r.headers["cache-control"]

    top = len(media_tiles.deepzoom_levels(ROWS, COLS)) - 1
    r = c.get(f"{base}/tiles/{top}/3_2.jpeg")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    tile = _jpeg(r.content)
    r0, r1, c0, c1 = media_tiles.tile_region((ROWS, COLS), 3, 2)
    assert tile.shape == (r1 - r0, c1 - c0, 3)
    assert np.abs(tile.astype(int) - image[r0:r1, c0:c1].astype(int)).mean() < 3

    whole = _jpeg(c.get(f"{base}/tiles/{top - 4}/0_0.jpeg").content)  # 1/16: one tile
    assert whole.shape == (125, 188, 3)

    # The browser's cache: the same tile again answers 304 without a body.
    etag = r.headers["etag"]
    again = c.get(f"{base}/tiles/{top}/3_2.jpeg", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.content

    assert c.get(f"{base}/tiles/{top}/99_0.jpeg").status_code == 404
    assert c.get(f"{base}/tiles/{top + 1}/0_0.jpeg").status_code == 404
    assert c.get(f"{base}/tiles/{top}/a_0.jpeg").status_code == 422


def test_access_volumes_and_missing_files(
    settings: Any, make_user: Any, make_project: Any, make_item: Any, login: Any, slide: Any
) -> None:
    path, _ = slide
    owner, stranger = make_user(), make_user()
    project = make_project(owner)
    item = _add_item(settings, project, path)
    base = f"/api/projects/{project.id}/items/{item.id}"
    r = login(stranger).get(f"{base}/dzi")
    assert r.status_code == 404
    assert "not found" in r.json()["detail"]["message"]

    c = login(owner)
    png = make_item(project)  # a small PNG: one level of one tile at full size
    r = c.get(f"/api/projects/{project.id}/items/{png.id}/dzi")
    assert '<Size Width="32" Height="32"/>' in r.text
    r = c.get(f"/api/projects/{project.id}/items/{png.id}/tiles/5/0_0.jpeg")
    assert r.status_code == 200 and _jpeg(r.content).shape == (32, 32, 3)

    volume = _add_item(settings, project, path, kind="volume", salt="volume")
    r = c.get(f"/api/projects/{project.id}/items/{volume.id}/dzi")
    assert r.status_code == 422 and "2-D" in r.json()["detail"]["message"]

    Path(png.uri).unlink()
    r = c.get(f"/api/projects/{project.id}/items/{png.id}/tiles/5/0_0.jpeg")
    assert r.status_code == 404 and "no longer on disk" in r.json()["detail"]["message"]
