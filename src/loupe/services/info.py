"""What the server can do, read from the plug-in registries (``/api/info``)."""

from __future__ import annotations

from typing import Any

from loupe.db.models import ProjectRole
from loupe.settings import Settings
from loupe.tasks import registry as task_registry


def task_kinds() -> list[dict[str, Any]]:
    """Every registered task kind's :meth:`~loupe.tasks.base.TaskKind.info`."""
    return [kind.info() for kind in task_registry.all_kinds()]


def project_roles() -> list[str]:
    return [r.value for r in ProjectRole]


def plugin_registries(settings: Settings) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """``({registry: [names]}, backbones with their availability)``."""
    from loupe.features import available_backbones
    from loupe.jobs.registry import JOB_KINDS
    from loupe.learn import CLASS_HEADS, SCORE_HEADS
    from loupe.learn.pixel_heads import PIXEL_HEADS
    from loupe.select import registry as select_registry
    from loupe.services.exports import registry as export_registry
    from loupe.services.volumes.predict import SEGMENTER_NAMES

    backbones = available_backbones(weights_dir=settings.weights)
    registries: dict[str, list[str]] = {
        "task_kinds": task_registry.names(),
        "job_kinds": sorted(JOB_KINDS),
        "backbones": [b["name"] for b in backbones],
        "class_heads": sorted(CLASS_HEADS),
        "score_heads": sorted(SCORE_HEADS),
        "strategies": select_registry.names(),
        "exporters": export_registry.names(),
        "pixel_heads": sorted(PIXEL_HEADS),
        "segmenters_3d": sorted(SEGMENTER_NAMES),
    }
    return registries, backbones


def exporters() -> list[dict[str, Any]]:
    """The export formats: ``{name, title, kinds (empty: every kind), media_type}``."""
    from loupe.services.exports import registry as export_registry

    return export_registry.infos()
