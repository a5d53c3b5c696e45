"""Point extraction: a few hundred well-spread labelled points from a probability map.

When a person accepts a model's mask, the segment trainer keeps it as *points* (cheap to
store, easy to edit, and as good as the mask for retraining): up to ``max_points`` per
class, where the model is at least ``confidence_threshold`` sure, at least
``min_distance`` pixels apart. Most of the budget is spread uniformly over the confident
region (a jittered block grid whose block size adapts to the region's area); a share
``gradient_weight`` goes to high-gradient places inside it (block non-maximum
suppression on an edge map). The default share is small (0.2): points bunched at
boundaries generalise worse than points spread over the object.

The function is pure: the caller replaces earlier *extracted* points with its output
and never touches human points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_POINTS = 500
CONFIDENCE_THRESHOLD = 0.8
MIN_DISTANCE = 3.0
GRADIENT_WEIGHT = 0.2


def extract_points(
    proba: np.ndarray,
    *,
    classes: Sequence[int] | np.ndarray | None = None,
    max_points: int = MAX_POINTS,
    confidence_threshold: float = CONFIDENCE_THRESHOLD,
    min_distance: float = MIN_DISTANCE,
    gradient_weight: float = GRADIENT_WEIGHT,
    gradient: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick labelled points from a class-probability map.

    Parameters
    ----------
    proba : (H, W, K) float ndarray
        Class probabilities per pixel (or per grid cell: the returned coordinates are
        in the map's own units).
    classes : sequence of int, optional
        Label value of each of the K columns (default ``0 .. K-1``).
    max_points : int
        Points per class at most.
    confidence_threshold : float
        A pixel is a candidate for class k when ``proba[..., k] >= confidence_threshold``
        and k is its most likely class.
    min_distance : float
        Minimum Euclidean distance in pixels between any two returned points of a
        class (points of different classes are apart anyway: they lie in disjoint
        regions).
    gradient_weight : float
        Share of ``max_points`` (0..1) placed at high-gradient pixels; the rest is
        spread uniformly.
    gradient : (H, W) float ndarray, optional
        Edge map for the gradient share (e.g.
        :func:`loupe.features.pixels.gradient_magnitude` of the image); default: the
        gradient magnitude of the class's probability.
    seed : int
        Seed of the jitter (same inputs and seed: same points).

    Returns
    -------
    classes, rows, cols : (n,) int64 ndarrays
        One entry per point, grouped by class.
    """
    proba = np.asarray(proba)
    if proba.ndim != 3 or proba.shape[2] < 1:
        raise ValueError(f"proba must be (H, W, K), got shape {proba.shape}")
    values = np.arange(proba.shape[2]) if classes is None else np.asarray(classes)
    if len(values) != proba.shape[2]:
        raise ValueError(f"classes has {len(values)} values for {proba.shape[2]} columns")
    if max_points < 0:
        raise ValueError(f"max_points must be >= 0, got {max_points}")
    if not 0 <= gradient_weight <= 1:
        raise ValueError(f"gradient_weight must be in [0, 1], got {gradient_weight}")
    if min_distance < 0:
        raise ValueError(f"min_distance must be >= 0, got {min_distance}")
    if gradient is not None and gradient.shape != proba.shape[:2]:
        raise ValueError(f"gradient shape {gradient.shape} != proba shape {proba.shape[:2]}")
    rng = np.random.default_rng(seed)
    best = proba.argmax(axis=2)
    out_c, out_r, out_k = [], [], []
    for index, value in enumerate(values):
        region = (best == index) & (proba[..., index] >= confidence_threshold)
        if not region.any() or max_points == 0:
            continue
        n_grad = int(round(gradient_weight * max_points))
        picks = []
        if n_grad:
            edges = gradient if gradient is not None else _gradient(proba[..., index])
            picks.append(_edge_points(edges, region, n_grad, max(min_distance, 2.0), rng))
        picks.append(_uniform_points(region, max_points, min_distance, rng))
        points = _thin(np.concatenate(picks), min_distance)[:max_points]
        out_r.append(points[:, 0])
        out_c.append(points[:, 1])
        out_k.append(np.full(len(points), int(value), dtype=np.int64))
    if not out_k:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return np.concatenate(out_k), np.concatenate(out_r), np.concatenate(out_c)


def _gradient(prob: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_gradient_magnitude(prob.astype(np.float32), sigma=1.0)


def _block_argmax(score: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ``block`` x ``block`` block: the (row, col) of the highest score and the score
    (-inf for blocks with no candidate)."""
    rows, cols = score.shape
    padded = np.pad(score, ((0, -rows % block), (0, -cols % block)), constant_values=-np.inf)
    gr, gc = padded.shape[0] // block, padded.shape[1] // block
    blocks = padded.reshape(gr, block, gc, block).transpose(0, 2, 1, 3).reshape(gr, gc, -1)
    flat = blocks.argmax(axis=2)
    top = np.take_along_axis(blocks, flat[..., None], axis=2)[..., 0]
    bi, bj = np.indices((gr, gc))
    return bi * block + flat // block, bj * block + flat % block, top


def _uniform_points(
    region: np.ndarray, budget: int, min_distance: float, rng: np.random.Generator
) -> np.ndarray:
    """About ``budget`` points spread over ``region``: one random candidate per block of
    a grid whose block side makes the number of occupied blocks close to the budget."""
    area = int(region.sum())
    block = max(int(np.ceil(min_distance)), int(np.sqrt(area / max(budget, 1))), 1)
    noise = np.where(region, rng.random(region.shape, dtype=np.float32), -np.inf)
    for _ in range(6):
        rows, cols, top = _block_argmax(noise, block)
        occupied = np.isfinite(top)
        count = int(occupied.sum())
        if count <= budget * 1.15 or block >= max(region.shape):
            break
        block = max(block + 1, int(block * np.sqrt(count / budget)))
    points = np.stack([rows[occupied], cols[occupied]], axis=1)
    rng.shuffle(points)
    return points


def _edge_points(
    edges: np.ndarray,
    region: np.ndarray,
    budget: int,
    spacing: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """The ``budget`` strongest block maxima of ``edges`` inside ``region`` (noise
    breaks ties on flat maps)."""
    jitter = rng.random(edges.shape, dtype=np.float32) * 1e-6
    score = np.where(region, edges.astype(np.float32) + jitter, -np.inf)
    rows, cols, top = _block_argmax(score, max(int(np.ceil(spacing)) * 2, 2))
    keep = np.isfinite(top)
    rows, cols, top = rows[keep], cols[keep], top[keep]
    order = np.argsort(-top, kind="stable")[:budget]
    return np.stack([rows[order], cols[order]], axis=1)


def _thin(points: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy thinning in the given order: drop every point closer than
    ``min_distance`` to an earlier kept one."""
    if len(points) < 2 or min_distance <= 0:
        return points.astype(np.int64)
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    removed = np.zeros(len(points), dtype=bool)
    # Pairs closer than min_distance (strictly): shrink the radius by a hair.
    for i, j in sorted(tree.query_pairs(min_distance - 1e-9)):
        if not removed[i] and not removed[j]:
            removed[j] = True
    # A removed point does not remove others: re-check the survivors once more.
    kept = points[~removed]
    if len(kept) > 1 and cKDTree(kept).query_pairs(min_distance - 1e-9):
        return _thin(kept, min_distance)
    return kept.astype(np.int64)
