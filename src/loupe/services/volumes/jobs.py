"""Registers the 3-D job kinds (``volume_predict``, ``volume_train``,
``volume_features``); imported by :func:`loupe.plugins.load_plugins`."""

from __future__ import annotations

from loupe.services.volumes import interactive, predict, training

__all__ = ["interactive", "predict", "training"]
