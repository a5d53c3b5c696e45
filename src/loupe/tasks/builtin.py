"""Registers the built-in task kinds (called by :func:`loupe.plugins.load_plugins`)."""

from __future__ import annotations

from loupe.tasks import registry
from loupe.tasks.classify import ClassifyKind
from loupe.tasks.score import ScoreKind
from loupe.tasks.segment import SegmentKind
from loupe.tasks.volume import VolumeKind


def register_builtin() -> None:
    """Register classify, score, segment and volume (idempotent)."""
    for kind in (ClassifyKind(), ScoreKind(), SegmentKind(), VolumeKind()):
        registry.register(kind)
