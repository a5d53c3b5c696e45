"""Head states to bytes and back without pickle: NumPy arrays in an ``.npz``, the rest as JSON.

A state is a (nested) dict of JSON values and NumPy arrays, as returned by
``ClassifierHead.to_state()`` / ``ScoreHead.to_state()``.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

_META = "__meta__"
_REF = "__ndarray__"


def state_to_bytes(state: dict[str, Any]) -> bytes:
    """Serialise ``state`` (nested dicts/lists of JSON values and arrays) to ``.npz`` bytes."""
    arrays: dict[str, np.ndarray] = {}

    def strip(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            key = f"a{len(arrays)}"
            arrays[key] = value
            return {_REF: key}
        if isinstance(value, dict):
            return {str(k): strip(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [strip(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    meta = json.dumps(strip(state), allow_nan=False).encode()
    buffer = io.BytesIO()
    arrays[_META] = np.frombuffer(meta, dtype=np.uint8)
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def state_from_bytes(data: bytes) -> dict[str, Any]:
    """Inverse of :func:`state_to_bytes` (``allow_pickle=False``)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode())

    def restore(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_REF}:
                return arrays[value[_REF]]
            return {k: restore(v) for k, v in value.items()}
        if isinstance(value, list):
            return [restore(v) for v in value]
        return value

    restored = restore(meta)
    if not isinstance(restored, dict):
        raise ValueError("state bytes do not hold a dict")
    return restored
