"""Task kinds: everything a project's task decides (see :mod:`loupe.tasks.base`).

``registry`` maps a project's ``task`` to its :class:`~loupe.tasks.base.TaskKind`;
the built-in kinds are ``classify``, ``score``, ``segment`` and ``volume``,
registered by :func:`loupe.plugins.load_plugins`.
"""

from loupe.tasks import registry
from loupe.tasks.base import TaskKind

__all__ = ["TaskKind", "kind_of", "registry"]


def kind_of(task: str) -> TaskKind:
    """The :class:`TaskKind` of a project's ``task`` (INVALID when unknown)."""
    return registry.get(task)
