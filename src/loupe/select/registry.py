"""The strategy registry: name -> :class:`~loupe.select.base.Strategy`.

It imports no plug-in: :mod:`loupe.plugins` registers the built-in strategies
(:func:`loupe.select.builtin.register_builtin`), a test may register its own.
"""

from __future__ import annotations

from loupe.errors import ErrorCode, LoupeError
from loupe.select.base import Strategy

_STRATEGIES: dict[str, Strategy] = {}


def register(strategy: Strategy, *, replace: bool = False) -> Strategy:
    """Add ``strategy`` under its name; another class under the same name is an error."""
    old = _STRATEGIES.get(strategy.name)
    if old is not None and not replace and type(old) is not type(strategy):
        raise ValueError(f"strategy {strategy.name!r} is already registered ({type(old).__name__})")
    _STRATEGIES[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    """Remove a strategy (tests that register their own)."""
    _STRATEGIES.pop(name, None)


def get(name: str) -> Strategy:
    """The strategy ``name``; INVALID (422) listing the known ones otherwise."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        known = names()
        raise LoupeError(
            ErrorCode.INVALID, f"unknown strategy {name!r}; use one of {known}", known=known
        ) from None


def names() -> list[str]:
    return sorted(_STRATEGIES)


def all_strategies() -> list[Strategy]:
    return [_STRATEGIES[n] for n in sorted(_STRATEGIES)]
