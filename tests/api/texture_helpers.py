"""Projects of real texture tiles, for the queue, map and drafting tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.api.test_queues import SOURCES, _tiles


def texture_project(
    settings: Any,
    make_user: Any,
    make_project: Any,
    login: Any,
    tmp_path: Path,
    *,
    task: str = "classify",
) -> dict[str, Any]:
    """26 skimage tiles of three textures ingested into a new ``task`` project with
    'classic' features: the owner, their client, the project id and ids by file name."""
    from loupe.services.items.ingest import ingest_paths

    owner = make_user()
    project = make_project(owner, task=task, settings_={"ensemble": ["classic"]})
    root = tmp_path / "tiles"
    _tiles(root)
    assert ingest_paths(settings, project.id, [root]).imported == 26
    c = login(owner)
    pid = project.id
    items = c.get(f"/api/projects/{pid}/items?limit=100").json()["data"]
    by_name = {Path(i["filename"]).name: i["id"] for i in items}
    return {"c": c, "pid": pid, "by_name": by_name, "owner": owner}


def train_inline(c: Any, pid: int) -> dict[str, Any]:
    """Train through the API (LOUPE_JOBS_IMMEDIATE: it runs inline); the finished job."""
    r = c.post(f"/api/projects/{pid}/train", json={})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    return dict(job)


def trained_texture_project(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> dict[str, Any]:
    """:func:`texture_project` with 3 labels per class and a model trained inline: the
    owner's client, ids and the job."""
    p = texture_project(settings, make_user, make_project, login, tmp_path)
    c, pid, by_name = p["c"], p["pid"], p["by_name"]
    for cls in SOURCES:
        for k in range(3):
            r = c.put(
                f"/api/projects/{pid}/items/{by_name[f'{cls}_{k:02d}.png']}/label",
                json={"kind": "class", "label": cls},
            )
            assert r.status_code == 200, r.text
    return {**p, "job": train_inline(c, pid)}
