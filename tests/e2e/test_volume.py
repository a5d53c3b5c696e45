"""The 3-D editor (NiiVue in headless Chromium): open a real volume, draw one
stroke with the mouse in the axial view, submit the correction, and check with
nibabel that exactly the stroke's voxels are stored, where they were drawn.

The volume is a 48^3 crop of the MNI152 T1 template shipped in the nilearn wheel
(``nilearn/datasets/data``), written once as RAS and once as LAS (the same
physical image with its first axis stored mirrored). The same stroke on the
screen must land on the same physical voxels in both files.
"""

from __future__ import annotations

import gzip
import importlib.util
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.e2e

nib = pytest.importorskip("nibabel")

MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
SIZE = 48
CLASSES = [{"name": "tissue", "color": "#e69f00", "value": 1}]


def _mni_crop(folder: Path, orientation: str) -> Path:
    """A SIZE^3 uint8 crop of the MNI T1 around the brain's centre, as RAS or LAS."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn (test data: the MNI152 template) is not installed")
    src = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / MNI_T1
    t1 = nib.load(src)
    data = np.asanyarray(t1.dataobj)
    c = [s // 2 for s in data.shape]
    h = SIZE // 2
    crop = np.ascontiguousarray(data[c[0] - h : c[0] + h, c[1] - h : c[1] + h, c[2] - h : c[2] + h])
    crop = crop.astype(np.uint8)
    affine = np.array(t1.affine, dtype=float)
    # The crop starts at voxel c - h of the template.
    affine[:3, 3] = affine[:3, :3] @ np.array([c[0] - h, c[1] - h, c[2] - h]) + affine[:3, 3]
    if orientation == "LAS":
        # Store x mirrored: voxel i holds what RAS voxel SIZE-1-i held; the affine follows.
        crop = np.ascontiguousarray(crop[::-1])
        flip = np.eye(4)
        flip[0, 0] = -1
        flip[0, 3] = SIZE - 1
        affine = affine @ flip
    img = nib.Nifti1Image(crop, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = folder / f"mni_{orientation.lower()}.nii.gz"
    nib.save(img, path)
    assert "".join(nib.aff2axcodes(affine)) == orientation
    return path


def _read_mask(raw: bytes) -> Any:
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return nib.Nifti1Image.from_bytes(data)


def _world(mask: Any, voxels: np.ndarray) -> set[tuple[float, float, float]]:
    pts = nib.affines.apply_affine(mask.affine, voxels)
    return {tuple(np.round(p, 3)) for p in pts}


def _project_with(api: Any, paths: list[Path]) -> tuple[int, list[int]]:
    r = api.post(
        "/api/projects",
        json={
            "name": f"MNI {uuid.uuid4().hex[:6]}",
            "task": "volume",
            "schema": {"classes": CLASSES},
        },
    )
    r.raise_for_status()
    pid = int(r.json()["id"])
    r = api.post(
        f"/api/projects/{pid}/uploads",
        files=[("files", (p.name, p.read_bytes(), "application/gzip")) for p in paths],
    )
    r.raise_for_status()
    return pid, [int(i) for i in r.json()["item_ids"]]


def _draw_and_submit(page: Any, api: Any, pid: int, item_id: int) -> dict[str, Any]:
    """Open the item in the editor, draw one stroke in the axial view, submit; the PUT's answer."""
    page.goto(f"/projects/{pid}/items/{item_id}/view")
    page.locator(".volume-editor[data-ready=yes]").wait_for(timeout=60_000)
    page.get_by_role("button", name="Axial", exact=True).click()
    box = page.locator(".volume-editor canvas").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    span = min(box["width"], box["height"])
    # A horizontal stroke on the screen's right half (the patient's right in
    # NiiVue's default neurological display), pen of class 1, size 1.
    page.mouse.move(cx + span * 0.05, cy)
    page.mouse.down()
    page.mouse.move(cx + span * 0.3, cy, steps=12)
    page.mouse.up()
    with page.expect_response(
        lambda res: f"/volume/items/{item_id}/mask" in res.url and res.request.method == "PUT"
    ) as put:
        page.get_by_role("button", name="Submit correction").click()
    assert put.value.status == 200, put.value.text()
    page.get_by_role("status").filter(has_text="Saved v").wait_for()
    return dict(put.value.json())


def test_draw_stroke_submit_voxel_exact_ras_and_las(
    page: Any, live_server: Any, ui_login: Any, tmp_path: Path
) -> None:
    paths = {o: _mni_crop(tmp_path, o) for o in ("RAS", "LAS")}
    api = live_server.client("alice")
    pid, item_ids = _project_with(api, list(paths.values()))
    ui_login(page, "alice")
    landed: dict[str, set[tuple[float, float, float]]] = {}
    for (orientation, path), item_id in zip(paths.items(), item_ids, strict=True):
        served = api.get(f"/api/projects/{pid}/volume/items/{item_id}/image.nii.gz")
        assert served.status_code == 200, served.text
        image = _read_mask(served.content)
        # Orientation and grid are served exactly as ingested, not as float32.
        assert image.shape == (SIZE, SIZE, SIZE)
        assert np.allclose(image.affine, nib.load(path).affine, atol=1e-4)
        assert image.get_data_dtype() in (np.uint8, np.int16)

        saved = _draw_and_submit(page, api, pid, item_id)

        stored = api.get(
            f"/api/projects/{pid}/volume/items/{item_id}/mask.nii.gz", params={"source": "human"}
        )
        assert stored.status_code == 200, stored.text
        mask = _read_mask(stored.content)
        # The mask lives on the image grid, uint8, with the image's affine.
        assert mask.shape == image.shape
        assert np.allclose(mask.affine, image.affine, atol=1e-4)
        data = np.asanyarray(mask.dataobj)
        assert data.dtype == np.uint8
        drawn = np.argwhere(data > 0)
        # Exactly the stroke changed (from an empty mask): class 1 only, one
        # contiguous row of one axial slice (pen size 1), counted as such by the server.
        assert set(np.unique(data[data > 0]).tolist()) == {1}
        assert len(drawn) >= 5, f"{orientation}: only {len(drawn)} voxels drawn"
        assert saved["voxels_changed"] == len(drawn)
        assert len(set(drawn[:, 2].tolist())) == 1, "the stroke left its axial slice"
        assert len(set(drawn[:, 1].tolist())) == 1, "a horizontal stroke should stay on one row"
        xs = sorted(drawn[:, 0].tolist())
        assert xs == list(range(xs[0], xs[-1] + 1)), f"the stroke has gaps: {xs}"
        # Where it landed: the screen's right half is the patient's right (world
        # x above the volume's centre), whatever the storage order.
        centre = nib.affines.apply_affine(image.affine, [(SIZE - 1) / 2] * 3)
        world = nib.affines.apply_affine(mask.affine, drawn)
        assert (world[:, 0] > centre[0]).all(), f"{orientation}: world x {world[:, 0]}"
        if orientation == "RAS":
            assert (drawn[:, 0] >= SIZE // 2).all()
        else:  # LAS stores x mirrored: the same physical place has small indices
            assert (drawn[:, 0] < SIZE // 2).all()
        landed[orientation] = _world(mask, drawn)
    # The same stroke on the same physical image marks the same physical voxels.
    assert landed["RAS"] == landed["LAS"]
    api.close()
