"""The 3-D editor in a real browser at 256^3: fetch + decode, open, draw -> submit.

Data: nilearn's MNI152 2009a T1 template (shipped in the nilearn wheel), 197 x 233 x 189
at 1 mm, centred in a 256^3 int16 volume and scaled to a CT-like range (-1000..2000, so
that it opens in the soft-tissue window; ``--low 0`` for an MR-like 0..3000), so that the
server keeps it int16 (a 256^3 volume is 32 MiB raw, about 9 MiB gzip'd).

A real ``loupe serve`` (SQLite, embedded worker) on a fresh LOUPE_HOME; headless Debian
Chromium (software WebGL: no GPU here); a fresh browser context per run (empty HTTP
cache), median of ``--runs``:

1. JS side fetch + gunzip (``DecompressionStream``) + typed-array view of the served
   ``image.nii.gz`` (target < 1 s);
2. the editor page opened to NiiVue's multiplanar view with the volume and its mask
   drawn: the editor's own ``data-open-ms`` (from the canvas to ready) and, around it,
   navigation start -> ready (target < 20 s);
3. one pen stroke in the axial view, then "Submit correction": NiiVue's drawing
   exported, gzip'd in the browser, PUT and stored (the editor's ``data-save-ms``,
   target < 1.5 s).

Run: ``.venv/bin/python benchmarks/volume_browser.py [--size 256] [--runs 3]``
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_grid import CHROMIUM, CHROMIUM_ARGS, OWNER, PASSWORD, client, server  # noqa: E402

MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"

FETCH_DECODE = """async (url) => {
  const t0 = performance.now();
  const res = await fetch(url);
  const gz = await res.arrayBuffer();
  const stream = new Blob([gz]).stream().pipeThrough(new DecompressionStream('gzip'));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const offset = new DataView(raw.buffer).getFloat32(108, true);
  const voxels = new Int16Array(raw.buffer, offset, (raw.length - offset) / 2);
  let sum = 0;
  for (let i = 0; i < voxels.length; i += 4096) sum += voxels[i];
  return { ms: performance.now() - t0, bytes: gz.byteLength, voxels: voxels.length, sum };
}"""


def volume(folder: Path, size: int, low: int = -1000) -> Path:
    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("nilearn (the MNI152 template) is not installed: run `make setup`")
    src = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / MNI_T1
    t1 = nib.load(src)
    data = np.asarray(t1.dataobj, dtype=np.float32)
    out = np.full((size, size, size), low, dtype=np.int16)
    crop = [
        slice(max(0, (s - size) // 2), max(0, (s - size) // 2) + min(s, size)) for s in data.shape
    ]
    part = data[tuple(crop)]
    lo = [(size - s) // 2 for s in part.shape]
    scaled = low + 3000 * (part - part.min()) / max(float(np.ptp(part)), 1e-6)
    out[tuple(slice(a, a + s) for a, s in zip(lo, part.shape, strict=True))] = scaled.astype(
        np.int16
    )
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -size / 2
    img = nib.Nifti1Image(out, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = folder / f"ct_like_{size}.nii.gz"
    nib.save(img, path)
    return path


def build(home: Path) -> None:
    from loupe.db.migrate import upgrade
    from loupe.db.session import session_scope
    from loupe.plugins import load_plugins
    from loupe.services.auth import core as auth

    load_plugins()
    (home / "thumbs").mkdir(parents=True)
    db_url = f"sqlite:///{(home / 'loupe.db').resolve()}"
    upgrade(db_url)
    with session_scope(db_url) as db:
        auth.create_user(db, email=OWNER, password=PASSWORD, name="Owner")
    with sqlite3.connect(home / "loupe.db") as con:  # the server gets a copy of the file
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(name: str, value: float, target: float) -> str:
    verdict = "meets" if value <= target else "misses"
    return f"{name}: {value:.2f} s (target {target} s: {value / target:.2f}x of it, {verdict})"


def measure(url: str, pid: int, item_id: int, runs: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    out: dict[str, list[float]] = {"fetch": [], "open": [], "page": [], "save": []}
    image = f"/api/projects/{pid}/volume/items/{item_id}/image.nii.gz"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        login = browser.new_context(base_url=url)
        r = login.new_page().request.post(
            "/api/auth/login", data={"email": OWNER, "password": PASSWORD}
        )
        assert r.ok, r.text()
        state = login.storage_state()
        login.close()
        for k in range(runs + 1):  # the first run warms the server's caches
            ctx = browser.new_context(
                base_url=url, viewport={"width": 1600, "height": 1000}, storage_state=state
            )
            page = ctx.new_page()
            page.goto("/api/health")
            fetched = page.evaluate(FETCH_DECODE, image)
            started = time.perf_counter()
            page.goto(f"/projects/{pid}/items/{item_id}/view")
            editor = page.locator(".volume-editor[data-ready=yes]")
            editor.wait_for(timeout=180_000)
            whole = time.perf_counter() - started
            opened = int(editor.get_attribute("data-open-ms") or 0) / 1000
            page.get_by_role("button", name="Axial", exact=True).click()
            box = page.locator(".volume-editor canvas").bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            span = min(box["width"], box["height"])
            page.mouse.move(cx - span * 0.2, cy)
            page.mouse.down()
            page.mouse.move(cx + span * 0.2, cy, steps=16)
            page.mouse.up()
            page.get_by_role("button", name="Submit correction").click()
            page.get_by_role("status").filter(has_text="saved (v").first.wait_for(timeout=60_000)
            saved = int(editor.get_attribute("data-save-ms") or 0) / 1000
            print(
                f"  run {k}: fetch+decode {fetched['ms'] / 1000:.2f} s "
                f"({fetched['bytes'] / 2**20:.1f} MiB gzip, {fetched['voxels']:,} voxels); "
                f"open {opened:.2f} s (navigation to ready {whole:.2f} s); submit {saved:.2f} s",
                flush=True,
            )
            if k:
                out["fetch"].append(fetched["ms"] / 1000)
                out["open"].append(opened)
                out["page"].append(whole)
                out["save"].append(saved)
            ctx.close()
        browser.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--low",
        type=int,
        default=-1000,
        help="background value: -1000 (CT-like: opens in the soft-tissue window) or 0 (MR-like)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loupe-vol-bench-") as tmp:
        folder = Path(tmp)
        path = volume(folder, args.size, args.low)
        print(f"volume {args.size}^3 int16: {path.stat().st_size / 2**20:.1f} MiB gzip", flush=True)
        build(folder / "home")
        with server(folder / "home") as url:
            api = client(url, OWNER)
            r = api.post(
                "/api/projects",
                json={
                    "name": "Volume browser benchmark",
                    "task": "volume",
                    "schema": {"classes": [{"name": "lesion", "color": "#e69f00", "value": 1}]},
                },
            )
            r.raise_for_status()
            pid = int(r.json()["id"])
            with path.open("rb") as fh:
                r = api.post(
                    f"/api/projects/{pid}/uploads",
                    files=[("files", (path.name, fh, "application/gzip"))],
                    timeout=300,
                )
            r.raise_for_status()
            (item_id,) = (int(i) for i in r.json()["item_ids"])
            got = measure(url, pid, item_id, args.runs)
    print(f"\n{args.size}^3, median of {args.runs} (fresh browser context each):")
    print(ratio("  fetch + gunzip + view (JS)", median(got["fetch"]), 1.0))
    print(ratio("  open to multiplanar view (editor)", median(got["open"]), 20.0))
    print(f"  navigation start -> ready: {median(got['page']):.2f} s")
    print(ratio("  draw -> save -> gzip -> PUT", median(got["save"]), 1.5))
    return 0


if __name__ == "__main__":
    sys.exit(main())
