"""The built-in strategies, registered by :mod:`loupe.plugins`."""

from __future__ import annotations

from loupe.select import registry
from loupe.select.band import Band
from loupe.select.diverse import Diverse
from loupe.select.hybrid import Hybrid
from loupe.select.mistakes import Mistakes
from loupe.select.oddities import Oddities
from loupe.select.simple import Flagged, Random
from loupe.select.uncertain import Uncertain

BUILTIN = (Uncertain, Diverse, Hybrid, Oddities, Band, Flagged, Random, Mistakes)


def register_builtin() -> None:
    """Register every built-in strategy (idempotent)."""
    for cls in BUILTIN:
        registry.register(cls())
