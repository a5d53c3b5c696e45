"""``Kept``: results kept per process for the newest few keys (thread-safe).

Queues, similar-item search and DICOM series reads each keep a few expensive results
(decoded model outputs, item ids, open feature stores, row norms, sorted series
headers) keyed by everything they depend on, so that a changed input is a new key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class Kept(Generic[T]):
    """The results of the newest ``size`` keys; the oldest is dropped first."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The result kept under ``key``, else ``compute()`` (run outside the lock), kept
        unless it is None (nothing to keep: the next call computes again)."""
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
                return found
        result = compute()
        if result is not None:
            with self._lock:
                self._kept[key] = result
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return result

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
