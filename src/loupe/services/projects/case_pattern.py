"""File-name patterns from users (``case_pattern``), compiled with RE2.

Python's ``re`` backtracks: ``(?P<case>(a+)+)$`` on a 40-character name runs
for hours and holds a worker thread meanwhile. RE2 matches in time linear in
the name, at the price of no backreferences (``\\1``) and no lookarounds
(``(?=``, ``(?!``, ``(?<=``, ``(?<!``); such patterns are refused with a
message that says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import re2

from loupe.errors import ErrorCode, LoupeError

MAX_PATTERN_LENGTH = 1000
_MAX_PROGRAM_BYTES = 8 << 20  # RE2 refuses patterns whose automaton needs more


class CasePattern(Protocol):
    """The part of a compiled pattern that Loupe uses (``re`` and RE2 alike)."""

    @property
    def groupindex(self) -> Mapping[str, int]: ...

    def search(self, text: str) -> Any: ...


def _options() -> Any:
    options = re2.Options()
    options.max_mem = _MAX_PROGRAM_BYTES
    options.log_errors = False
    return options


def compile_case_pattern(pattern: str) -> CasePattern:
    """Compile ``pattern`` with RE2; ``LoupeError(INVALID)`` unless it has a group ``case``."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise LoupeError(
            ErrorCode.INVALID, f"case_pattern is longer than {MAX_PATTERN_LENGTH} characters"
        )
    try:
        compiled = re2.compile(pattern, options=_options())
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise LoupeError(
            ErrorCode.INVALID,
            f"case_pattern {pattern!r} is not a supported regular expression ({reason}); "
            "patterns use RE2 syntax: backreferences and lookarounds are not supported",
        ) from exc
    if "case" not in compiled.groupindex:
        raise LoupeError(
            ErrorCode.INVALID, f"case_pattern {pattern!r} needs a named group (?P<case>...)"
        )
    return compiled  # type: ignore[no-any-return,unused-ignore]
