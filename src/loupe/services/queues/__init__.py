"""Active-learning queues, item leases and similar items.

:func:`next_items` loads a project's arrays, runs a strategy of
:mod:`loupe.select` and leases what it picked to the caller; :func:`similar`
finds an item's nearest neighbours on the active backbone's features.
"""

from loupe.services.queues.core import QueueResult, next_items
from loupe.services.queues.leases import release
from loupe.services.queues.similar import SimilarResult, similar

__all__ = ["QueueResult", "SimilarResult", "next_items", "release", "similar"]
