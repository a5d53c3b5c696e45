"""The demo: an admin account and two projects of real images.

The images are real microscopy and medical photographs shipped inside the
scikit-image wheel (``skimage/data``: an immunohistochemistry slide, a retinal
fundus photograph, a phase-contrast cell, and texture photographs), cut into
tiles so the grid has a few hundred items. They are chosen because they need
no download (the demo runs offline) and look like what Loupe is for.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from loupe.settings import Settings

log = logging.getLogger(__name__)

DEMO_EMAIL = "admin@loupe.demo"
CLASSIFY_NAME = "Demo: microscopy tiles"
SCORE_NAME = "Demo: IHC scoring"
# File names follow a slide-scanner convention; the project's case pattern
# parses case, magnification, serial and channel out of them.
CASE_PATTERN = r"(?P<case>S-\d+)-(?P<magnification>\d+X)_Image(?P<serial>\d+)_ch(?P<channel>\d+)"
SOURCES = {
    # class -> (skimage.data function, region (r0, r1, c0, c1) or None)
    "IHC tissue": ("immunohistochemistry", None),
    "Retinal fundus": ("retina", (250, 1150, 250, 1150)),
    "Cell (phase contrast)": ("cell", None),
    "Texture": ("gravel", None),
}
TILE = 128


def _tiles(image: np.ndarray, *, tile: int, stride: int) -> list[np.ndarray]:
    out = []
    for r in range(0, image.shape[0] - tile + 1, stride):
        for c in range(0, image.shape[1] - tile + 1, stride):
            out.append(image[r : r + tile, c : c + tile])
    return out


def build_demo_images(root: Path, *, per_class: int = 48) -> Path:
    """Write tiles of real scikit-image data into ``root/S-<case>/...png``; idempotent."""
    from PIL import Image
    from skimage import data

    marker = root / ".complete"
    if marker.exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    serial = 0
    for ci, (cls, (name, region)) in enumerate(SOURCES.items()):
        image = np.asarray(getattr(data, name)())
        if region is not None:
            r0, r1, c0, c1 = region
            image = image[r0:r1, c0:c1]
        tiles = _tiles(image, tile=TILE, stride=TILE // 2)
        picks = rng.choice(len(tiles), size=min(per_class, len(tiles)), replace=False)
        for k, idx in enumerate(sorted(picks)):
            case = f"S-{3600 + (k % 4)}"
            serial += 1
            folder = root / case
            folder.mkdir(exist_ok=True)
            name_ = f"{case}-20X_Image{serial:03d}_ch00.png"
            Image.fromarray(np.ascontiguousarray(tiles[idx])).save(folder / name_)
        log.info("demo: %d tiles of class %s (#%d)", len(picks), cls, ci)
    marker.write_text("ok")
    return root


def prepare_demo(settings: Settings) -> tuple[str, str]:
    """Create (once) the demo admin and projects; return the admin's e-mail and password."""
    from sqlalchemy import select

    from loupe.db.models import Project, User
    from loupe.db.session import session_scope
    from loupe.services import auth, projects
    from loupe.services.ingest import ingest_paths

    cred = settings.home / "demo-admin.txt"
    with session_scope(settings.db_url) as db:
        user = db.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None or not cred.exists():
            password = secrets.token_urlsafe(9)
            if user is None:
                user = auth.create_user(
                    db, email=DEMO_EMAIL, password=password, admin=True, name="Demo admin"
                )
            else:
                user.password_hash = auth.hash_password(password)
            cred.write_text(password)
            cred.chmod(0o600)
        password = cred.read_text().strip()
        uid = user.id
        wanted: dict[str, tuple[str, dict[str, Any], str]] = {
            CLASSIFY_NAME: (
                "classify",
                {"classes": [{"name": n} for n in SOURCES]},
                "Real microscopy tiles from scikit-image's bundled data; cases parsed "
                "from the file names.",
            ),
            SCORE_NAME: (
                "score",
                {
                    "metrics": [
                        {"name": "staining", "min": 0, "max": 4, "step": 1},
                        {"name": "cellularity", "min": 0, "max": 4, "step": 1},
                    ]
                },
                "Score the same tiles on two 0-4 metrics.",
            ),
        }
        ids = {}
        for name, (task, schema, desc) in wanted.items():
            project = db.scalar(select(Project).where(Project.name == name))
            if project is None:
                project = projects.create_project(
                    db,
                    name=name,
                    task=task,
                    schema=schema,
                    owner_id=uid,
                    description=desc,
                    settings={"case_pattern": CASE_PATTERN},
                )
            ids[name] = project.id
    source = build_demo_images(settings.home / "demo-source")
    for pid in ids.values():
        report = ingest_paths(settings, pid, [source], user_id=uid)
        log.info("demo project %d: %s", pid, report.to_json())
    return DEMO_EMAIL, password
