"""``band``: items whose probability of one class lies in a range (e.g. 0.3-0.8).

Items nearest the middle of the band come first.
"""

from __future__ import annotations

import numpy as np

from loupe.select.base import Ranked, SelectionRequest, Strategy, make_ranked, param_float, top_rows


def band_class_index(req: SelectionRequest) -> int:
    """The column of ``params['band_class']`` (a class name or a column index)."""
    assert req.probs is not None
    k = req.probs.shape[1]
    value = req.params.get("band_class")
    if value is None or value == "":
        if k == 2 and req.class_names:
            return 1  # binary: the second class (the 'positive' one by convention)
        raise ValueError(f"band_class is required; one of {list(req.class_names)}")
    if isinstance(value, str) and value in req.class_names:
        return req.class_names.index(value)
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        index = int(value)
        if 0 <= index < k:
            return index
    raise ValueError(f"band_class {value!r} is not one of {list(req.class_names)}")


class Band(Strategy):
    name = "band"
    title = "Probability band"
    description = (
        "Unlabelled items whose probability of a chosen class (band_class) lies "
        "in [band_lo, band_hi], nearest the middle first."
    )
    needs = frozenset({"probs"})
    needs_model = True

    def __call__(self, req: SelectionRequest) -> Ranked:
        assert req.probs is not None
        lo = param_float(req, "band_lo", 0.3)
        hi = param_float(req, "band_hi", 0.8)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"band_lo and band_hi must satisfy 0 <= lo <= hi <= 1, got {lo}, {hi}")
        p = np.asarray(req.probs, dtype=np.float64)[:, band_class_index(req)]
        inside = (p >= lo) & (p <= hi)
        half = max((hi - lo) / 2.0, 1e-9)
        closeness = 1.0 - np.abs(p - (lo + hi) / 2.0) / half
        rows, values = top_rows(req.pool() & inside, closeness, req.n)
        return make_ranked(req, rows, values)
