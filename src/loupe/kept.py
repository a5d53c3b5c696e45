"""``Kept``: results kept per process for the newest few keys (thread-safe);
``Recent``: a value per key that is recomputed once it is older than a given age.

Queues, similar-item search and DICOM series reads each keep a few expensive results
(decoded model outputs, item ids, open feature stores, row norms, sorted series
headers) keyed by everything they depend on, so that a changed input is a new key.
"""

from __future__ import annotations

import threading
import time
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


class Recent(Generic[T]):
    """A value per key, recomputed when it is older than the caller's ``max_age``
    seconds (0: every time). For checks whose answer may lag by that much, e.g. the
    fingerprint of a project's items that says whether kept arrays are still current:
    20 annotators' queue requests then cost one aggregate query per second and
    process, not one each. Thread-safe; at most ``size`` keys (oldest dropped)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._values: OrderedDict[Hashable, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], max_age: float) -> T:
        now = time.monotonic()
        if max_age > 0:
            with self._lock:
                found = self._values.get(key)
                if found is not None and now - found[0] < max_age:
                    return found[1]
        value = compute()
        with self._lock:
            self._values[key] = (now, value)
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
