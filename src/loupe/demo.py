"""The demo: an admin account and two projects of real images.

The images are real microscopy and medical photographs shipped inside the
scikit-image wheel (``skimage/data``: an immunohistochemistry slide, a retinal
fundus photograph, a phase-contrast cell, and texture photographs), cut into
tiles so the grid has a few hundred items. They are chosen because they need
no download (the demo runs offline) and look like what Loupe is for.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from loupe.db.models import Project
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
TRUTH_FILE = "truth.json"  # the class each tile was cut from (hidden from the app)
SEED_LABELS_PER_CLASS = 5


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
    truth: dict[str, str] = {}
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
            truth[name_] = cls
        log.info("demo: %d tiles of class %s (#%d)", len(picks), cls, ci)
    (root / TRUTH_FILE).write_text(json.dumps(truth, indent=1))
    marker.write_text("ok")
    return root


def image_folders(root: Path) -> list[Path]:
    """The case folders of :func:`build_demo_images` (what the demo imports): never
    the answer key ``truth.json`` beside them."""
    return sorted(p for p in root.iterdir() if p.is_dir())


def prepare_demo(settings: Settings) -> tuple[str, str]:
    """Create (once) the demo admin and projects; return the admin's e-mail and password."""
    from sqlalchemy import select

    from loupe.db.models import User
    from loupe.db.session import session_scope
    from loupe.services.auth import core as auth
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.projects import core as projects

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
        report = ingest_paths(settings, pid, image_folders(source), user_id=uid)
        log.info("demo project %d: %s", pid, report.to_json())
    _seed_first_model(settings, ids[CLASSIFY_NAME], uid, source)
    return DEMO_EMAIL, password


def _seed_first_model(settings: Settings, project_id: int, user_id: int, source: Path) -> None:
    """Label a few tiles per class (as the demo admin) and train once, so the grid
    opens with drafts and flags. Skipped when the project already has a model."""
    from sqlalchemy import select

    from loupe.db.models import Item, ModelVersion
    from loupe.db.session import session_scope
    from loupe.services.labels.core import LabelValue, set_label
    from loupe.services.training.train import train_project

    truth = json.loads((source / TRUTH_FILE).read_text())
    with session_scope(settings.db_url) as db:
        if db.scalar(select(ModelVersion.id).where(ModelVersion.project_id == project_id)):
            return
        project = db.get_one(Project, project_id)
        done: dict[str, int] = {}
        for item in db.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id)):
            cls = truth.get(item.filename)
            if cls is None or done.get(cls, 0) >= SEED_LABELS_PER_CLASS:
                continue
            set_label(
                db,
                project,
                item.id,
                LabelValue(kind="class", label=cls),
                user_id=user_id,
                source="demo",
            )
            done[cls] = done.get(cls, 0) + 1
    log.info("demo: training the first model (features are computed once, then cached)")
    train_project(
        settings,
        project_id,
        progress=lambda f, m: log.info("demo training %3.0f%% %s", 100 * f, m),
    )
