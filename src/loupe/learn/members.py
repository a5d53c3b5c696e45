"""What both ensemble trainers share: member-feature checks, a BLAS thread limit,
novelty and review-budget bookkeeping. Arrays in, arrays out."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.novelty import Novelty, novelty_scores

FeaturePair = tuple[NDArray[np.floating], NDArray[np.floating]]  # (X_labelled, X_all)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS/LAPACK on one thread inside the block.

    Fitting works on small matrices (labelled items x dim), and the selection
    strategies on a few thousand rows or matrix-vector products, where extra BLAS
    threads barely help and, on a busy machine (web server, feature jobs), their
    spin-waiting made our fits 3-8x slower and a 2,000 x 1,280 randomised SVD 20x
    slower (4 s instead of 0.2 s). No-op without threadpoolctl.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def triage_summary(
    novelty: Novelty | None,
    max_flag_fraction: float | None,
    flagged_before_budget: int,
    n_items: int,
) -> dict[str, Any]:
    """The ``triage`` entry of a result's metrics: novelty settings and counts, the budget."""
    return {
        "novelty": None if novelty is None else novelty.describe(),
        "max_flag_fraction": max_flag_fraction,
        "flagged_before_budget": flagged_before_budget,
        "n_items": n_items,
    }


def find_novelty(
    members: Mapping[str, FeaturePair], enabled: bool, timings: dict[str, float]
) -> Novelty | None:
    """:func:`novelty_scores` of the members (``None`` when not ``enabled``), timed."""
    if not enabled:
        return None
    start = time.perf_counter()
    result = novelty_scores(members)
    timings["novelty"] = time.perf_counter() - start
    return result


def check_budget(max_flag_fraction: float | None) -> None:
    """Raise ``ValueError`` unless ``max_flag_fraction`` is ``None`` or in ``[0, 1]``."""
    if max_flag_fraction is not None and not 0.0 <= max_flag_fraction <= 1.0:
        raise ValueError(f"max_flag_fraction must be in [0, 1] or None, got {max_flag_fraction}")


def check_members(
    member_features: Mapping[str, FeaturePair], n_labelled: int
) -> dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """``{name: (X_labelled, X_all)}`` as float32, checked: 2-D, one dim per member,
    ``n_labelled`` labelled rows and the same ``N`` items for every member."""
    if not member_features:
        raise ValueError("member_features is empty: need at least one member")
    out = {}
    n_all = None
    for name, (labelled, every) in member_features.items():
        x_lab = np.asarray(labelled, dtype=np.float32)
        x_all = np.asarray(every, dtype=np.float32)
        if x_lab.ndim != 2 or x_all.ndim != 2 or x_lab.shape[1] != x_all.shape[1]:
            raise ValueError(
                f"member_features[{name!r}] must be ((n, dim), (N, dim)), "
                f"got {x_lab.shape} and {x_all.shape}"
            )
        if len(x_lab) != n_labelled:
            raise ValueError(
                f"member_features[{name!r}] has {len(x_lab)} labelled rows "
                f"but there are {n_labelled} labels"
            )
        if n_all is not None and len(x_all) != n_all:
            raise ValueError(f"member_features[{name!r}] has {len(x_all)} items, others {n_all}")
        n_all = len(x_all)
        out[name] = (x_lab, x_all)
    return out
