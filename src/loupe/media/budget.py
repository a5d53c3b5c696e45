"""A process-wide memory budget for decoding pixels.

The pixel-count limit (``max_pixels``) does not bound memory: a 600 kB PNG of
14,000 x 14,000 16-bit RGBA pixels is under 200 Mpx yet needs 1.5 GB decoded
and as much again converted. :func:`decode_slot` refuses a decode whose
arrays would exceed the budget, and lets at most a few *big* decodes (over
:data:`BIG_DECODE_BYTES`) run at once in the process, so parallel requests
or ingest threads cannot add up to more than ``concurrent x budget``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from loupe.media._core import MediaError, ParameterError, PathLike

DEFAULT_MAX_DECODE_BYTES = 1 << 30
DEFAULT_CONCURRENT_BIG_DECODES = 2
BIG_DECODE_BYTES = 64 << 20

_limits = {"max_bytes": DEFAULT_MAX_DECODE_BYTES}
_slots = threading.BoundedSemaphore(DEFAULT_CONCURRENT_BIG_DECODES)


def set_decode_limits(
    *, max_bytes: int = DEFAULT_MAX_DECODE_BYTES, concurrent: int = DEFAULT_CONCURRENT_BIG_DECODES
) -> None:
    """Set the per-decode budget and how many big decodes may run at once (call at start-up)."""
    global _slots
    if max_bytes < 1 or concurrent < 1:
        raise ParameterError(
            f"max_bytes and concurrent must be >= 1, got {max_bytes}, {concurrent}"
        )
    _limits["max_bytes"] = max_bytes
    _slots = threading.BoundedSemaphore(concurrent)


def check_decode_bytes(nbytes: int, *, path: PathLike) -> None:
    """Raise MediaError when decoding needs more than the budget."""
    limit = _limits["max_bytes"]
    if nbytes > limit:
        raise MediaError(
            f"decoding needs {nbytes / 2**20:.0f} MiB, over the memory budget of "
            f"{limit / 2**20:.0f} MiB",
            path=path,
        )


@contextmanager
def decode_slot(nbytes: int, *, path: PathLike) -> Iterator[None]:
    """Hold the budget for a decode of ``nbytes``: refuse it, or wait for a big-decode slot."""
    check_decode_bytes(nbytes, path=path)
    if nbytes < BIG_DECODE_BYTES:
        yield
        return
    slots = _slots
    with slots:
        yield
