"""Backbones by name: ``register_backbone``, ``get_backbone``, ``available_backbones``.

This module imports no backbone (the backbone modules import it to register
themselves). Importing the ``loupe.features`` package registers the built-in
ones, and :func:`loupe.plugins.load_plugins` imports them explicitly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from loupe.features.base import Backbone, FeatureError

DEFAULT_BACKBONE = "effnet-lite0"

BACKBONES: dict[str, type[Backbone]] = {}
"""Name -> backbone class. A class is its own factory: ``BACKBONES[name](**options)``;
its class attributes (``dim``, ``requires_torch`` ...) are readable without building it."""

B = TypeVar("B", bound=type[Backbone])

_instances: dict[tuple[Any, ...], Backbone] = {}
_instances_lock = threading.Lock()


def register_backbone(name: str) -> Callable[[B], B]:
    """Class decorator: register a :class:`Backbone` subclass under ``name`` (which
    becomes its ``name`` attribute)."""

    def decorate(cls: B) -> B:
        existing = BACKBONES.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"a backbone named {name!r} is already registered ({existing})")
        cls.name = name
        BACKBONES[name] = cls
        return cls

    return decorate


def backbone_class(name: str) -> type[Backbone]:
    """The registered class for ``name``; ``FeatureError`` listing the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise FeatureError(f"unknown backbone {name!r}; known: {known}") from None


def get_backbone(
    name: str,
    *,
    weights_dir: Path | None = None,
    device: str = "auto",
    runtime: str = "auto",
    cache_dir: Path | None = None,
    allow_download: bool | None = None,
) -> Backbone:
    """The process-wide instance of backbone ``name`` for these options.

    Building is cheap; weights load and the ONNX export happen on the first ``embed``.
    See :class:`Backbone` for the options.
    """
    cls = backbone_class(name)
    key = (name, weights_dir, device, runtime, cache_dir, allow_download)
    with _instances_lock:
        instance = _instances.get(key)
        if instance is None:
            instance = cls(
                weights_dir=weights_dir,
                device=device,
                runtime=runtime,
                cache_dir=cache_dir,
                allow_download=allow_download,
            )
            _instances[key] = instance
        return instance


def available_backbones(*, weights_dir: Path | None = None) -> list[dict[str, Any]]:
    """One dict per registered backbone for ``/api/info``: ``name``, ``dim``,
    ``input_size``, ``requires_torch``, ``default``, ``description``, ``available`` and
    ``reason`` (why not available, or how the weights will be obtained). Never imports
    torch nor touches the network."""
    rows = []
    for name, cls in BACKBONES.items():
        status = cls.weights_status(weights_dir)
        rows.append(
            {
                "name": name,
                "dim": cls.dim,
                "input_size": cls.input_size,
                "requires_torch": cls.requires_torch,
                "default": name == DEFAULT_BACKBONE,
                "description": cls.description,
                "available": status.available,
                "reason": status.reason,
            }
        )
    return rows
