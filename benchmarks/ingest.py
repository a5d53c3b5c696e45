"""Ingest throughput: ``ingest_paths`` end to end vs. a bare loop that only reads the files.

Generates (once, cached in ``benchmarks/.cache/ingest-<n>/``) ``n`` real images:
512x512 crops of the photos shipped with scikit-image, flipped, rotated and
lightly changed so that every file's bytes (and hash) differ; 3 in 4 are
JPEG, 1 in 4 PNG. Then it times

(a) a bare loop that reads every file's bytes, and
(b) ``ingest_paths`` into a fresh SQLite LOUPE_HOME: hash, probe, thumbnail
    and item rows, with the page cache warm for both.

Run: ``.venv/bin/python benchmarks/ingest.py [--n 2000]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "immunohistochemistry",
    "retina",
    "rocket",
    "hubble_deep_field",
    "cell",
)
SIDE = 512


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def make_images(folder: Path, n: int, *, first: int = 0) -> list[Path]:
    """``n`` distinct real images in ``folder`` (reused when already there); ``first``
    starts the numbering elsewhere, for a set that shares no image with the default."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = [f"img_{i:05d}.{'png' if i % 4 == 3 else 'jpg'}" for i in range(first, first + n)]
    paths = [folder / name for name in names]
    if all(p.is_file() for p in paths):
        return paths
    rng = np.random.default_rng(first)
    photos = _photos()
    for i, path in enumerate(paths, start=first):
        if path.is_file():
            continue
        photo = photos[i % len(photos)]
        rows, cols = photo.shape[:2]
        side = min(SIDE, rows, cols)
        r = int(rng.integers(0, rows - side + 1))
        c = int(rng.integers(0, cols - side + 1))
        crop = np.rot90(photo[r : r + side, c : c + side], k=int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = np.ascontiguousarray(crop)
        # A 16x16 corner patch carries the index (coarse enough to survive JPEG):
        # every file differs even where two crops coincide.
        crop[:8, :16] = i % 256
        crop[8:16, :16] = i // 256
        image = Image.fromarray(crop)
        if side < SIDE:
            image = image.resize((SIDE, SIDE))
        tmp = path.with_suffix(".tmp")
        if path.suffix == ".png":
            image.save(tmp, format="PNG")
        else:
            image.save(tmp, format="JPEG", quality=90)
        os.replace(tmp, path)
    return paths


def bare_read(paths: list[Path]) -> float:
    start = time.perf_counter()
    total = 0
    for path in paths:
        total += len(path.read_bytes())
    elapsed = time.perf_counter() - start
    assert total > 0
    return elapsed


def run_ingest(folder: Path, n: int) -> tuple[float, dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as home:
        os.environ.update(LOUPE_HOME=home, LOUPE_TESTING="1", LOUPE_SECRET_KEY="bench-" + "x" * 40)
        os.environ.pop("LOUPE_DATABASE_URL", None)
        from loupe.db.migrate import upgrade
        from loupe.db.session import session_scope
        from loupe.services.auth.core import create_user
        from loupe.services.items.ingest import ingest_paths
        from loupe.services.projects.core import create_project
        from loupe.settings import Settings

        settings = Settings()
        settings.ensure_dirs()
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as db:
            owner = create_user(db, email="bench@example.org", password="bench-password-1")
            project = create_project(
                db,
                name="bench",
                task="classify",
                schema={"classes": [{"name": "a"}, {"name": "b"}]},
                owner_id=owner.id,
                settings={},
            )
            project_id = project.id
        start = time.perf_counter()
        report = ingest_paths(settings, project_id, [folder])
        elapsed = time.perf_counter() - start
        summary: dict[str, object] = report.to_json()
        thumbs = sum(1 for _ in settings.thumbs_dir.rglob("*.jpg"))
        summary["thumbnails"] = thumbs
        if report.imported != n or report.failed:
            raise SystemExit(f"ingest did not import all {n} images: {summary}")
        return elapsed, summary


def main(argv: list[str] | None = None) -> int:
    from loupe.plugins import load_plugins

    load_plugins()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    args = parser.parse_args(argv)
    folder = CACHE / f"ingest-{args.n}"
    print(f"preparing {args.n} images in {folder} ...", flush=True)
    paths = make_images(folder, args.n)
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    bare_read(paths)  # warm the page cache so both runs read from memory
    bare = bare_read(paths)
    print(f"bare read:  {args.n / bare:10.1f} images/s  ({size_mb:.0f} MB in {bare:.2f} s)")
    elapsed, summary = run_ingest(folder, args.n)
    print(f"ingest:     {args.n / elapsed:10.1f} images/s  ({elapsed:.2f} s; {summary})")
    print(
        f"ratio ingest/bare-read throughput: {bare / elapsed:.4f} "
        f"(ingest is {elapsed / bare:.0f}x slower than only reading the bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    raise SystemExit(main())
