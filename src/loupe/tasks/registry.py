"""The task-kind registry: project ``task`` name -> :class:`TaskKind`.

It imports no plug-in: :mod:`loupe.plugins` registers the built-in kinds, a
test may register its own.
"""

from __future__ import annotations

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.base import TaskKind

_KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Add ``kind`` under ``kind.name``; a second kind of the same name is an error."""
    old = _KINDS.get(kind.name)
    if old is not None and not replace and type(old) is not type(kind):
        raise ValueError(f"task kind {kind.name!r} is already registered ({type(old).__name__})")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (tests that register their own)."""
    _KINDS.pop(name, None)


def get(name: str) -> TaskKind:
    """The kind named ``name``; INVALID listing the known ones otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise LoupeError(
            ErrorCode.INVALID, f"unknown task {name!r}; use one of {sorted(_KINDS)}"
        ) from None


def names() -> list[str]:
    return sorted(_KINDS)


def all_kinds() -> list[TaskKind]:
    return [_KINDS[n] for n in sorted(_KINDS)]
