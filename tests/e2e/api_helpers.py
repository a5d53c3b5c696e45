"""Arranging and checking the end-to-end tests' projects through the API (an
``httpx.Client`` from ``live_server.client(who)``): create a project, label items,
read an item's annotation and a project's cases."""

from __future__ import annotations

from typing import Any

TWO_CLASSES: dict[str, Any] = {"classes": [{"name": "tumour"}, {"name": "stroma"}]}


def create_project(
    api: Any, name: str, *, task: str = "classify", schema: dict[str, Any] | None = None
) -> int:
    """Create a project (by default classify with tumour / stroma); returns its id."""
    r = api.post(
        "/api/projects",
        json={"name": name, "task": task, "schema": TWO_CLASSES if schema is None else schema},
    )
    r.raise_for_status()
    return int(r.json()["id"])


def put_label(api: Any, project_id: int, item_id: int, annotation: dict[str, Any]) -> None:
    """Save an item's annotation, e.g. ``{"kind": "class", "label": "tumour"}``
    (with ``"version"`` for an optimistic-concurrency check)."""
    api.put(f"/api/projects/{project_id}/items/{item_id}/label", json=annotation).raise_for_status()


def annotation_of(api: Any, project_id: int, item_id: int) -> dict[str, Any] | None:
    """The item's current annotation (None when it has none)."""
    item: dict[str, Any] = api.get(f"/api/projects/{project_id}/items/{item_id}").json()
    return item["annotation"]


def cases_by_name(api: Any, project_id: int) -> dict[str, dict[str, Any]]:
    """The project's cases by name (each with its id, status and item count)."""
    return {c["name"]: c for c in api.get(f"/api/projects/{project_id}/cases").json()["data"]}
