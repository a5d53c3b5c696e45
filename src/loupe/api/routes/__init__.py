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
    models,
    projects,
    queues,
    reports,
    thumbs,
    tiles,
    uploads,
    users,
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
    tiles.router,
    thumbs.router,
    exports.router,
    reports.router,
]
