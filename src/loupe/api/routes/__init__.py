"""One router per resource; ``app.py`` only assembles them."""

from fastapi import APIRouter

from loupe.api.routes import (
    admin,
    auth,
    cases,
    exports,
    info,
    items,
    jobs,
    labels,
    map,
    models,
    projects,
    queues,
    reports,
    segment,
    thumbs,
    tiles,
    uploads,
    users,
    volume,
)

ROUTERS: list[APIRouter] = [
    info.router,
    auth.router,
    users.router,
    admin.router,
    projects.router,
    cases.router,
    items.router,
    labels.router,
    uploads.router,
    jobs.router,
    models.router,
    queues.router,
    map.router,
    segment.router,
    tiles.router,
    thumbs.router,
    exports.router,
    reports.router,
    volume.router,
]
