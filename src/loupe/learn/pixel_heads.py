"""Pixel heads: fast classifiers over per-pixel features, trained on sparse labels.

The shape follows scikit-image's ``future.trainable_segmentation`` (fit on the
features of the labelled pixels only, predict everywhere), with two differences:

* Loupe masks use 0 for background, so a sparse *label image* marks unlabelled pixels
  with :data:`UNLABELLED` (-1), not 0;
* features come as :class:`~loupe.features.pixels.PixelFeatures` (parts on grids of
  different strides; any object with its ``shape`` / ``sample`` / ``project`` will do,
  :class:`GridFeatures`). Every head here is linear up to its first layer, so
  prediction asks the features to project themselves (each part on its own grid, the
  projections bilinearly upsampled and added): the same numbers as upsampling the
  features first, without allocating them.

Heads (registry :data:`PIXEL_HEADS`):

``logistic``  multinomial logistic regression (lbfgs, ``C=0.3``, z-scored features,
              class-balanced): the synchronous update after each click.
``mlp``       one hidden layer (D -> 32 -> K, ReLU, AdamW with weight decay 1e-2,
              class-balanced cross-entropy, early stopping on a 20 % hold-out once
              there are 40 labels, single-threaded torch, optional warm start): the
              background refinement, better once labels are scribbles.

Labels come from :func:`rasterize_clicks` (points as small disks), :func:`rasterize_strokes`
(scribbles) and accepted masks (a mask is a fully labelled label image); a project's
training set is the concatenation of :func:`training_set` over its items.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

UNLABELLED = -1
"""Value of unlabelled pixels in a sparse label image (0 is the background class)."""
CLICK_RADIUS = 3
"""Radius in pixels of the disk a click labels."""


class GridFeatures(Protocol):
    """What a head needs of an image's features; :class:`loupe.features.pixels.PixelFeatures`
    provides it (``learn/`` does not import ``features/``: the caller passes them in)."""

    @property
    def shape(self) -> tuple[int, int]:
        """Image rows and columns."""
        ...

    def sample(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Features at pixels: float32 ``(n, dim)``."""
        ...

    def project(self, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """``features @ weights + bias`` on the prediction grid: ``(gh, gw, m)``."""
        ...


# --- sparse labels ------------------------------------------------------------------------


def empty_labels(shape: tuple[int, int]) -> np.ndarray:
    """An all-unlabelled int16 label image."""
    return np.full(shape, UNLABELLED, dtype=np.int16)


def rasterize_clicks(
    labels: np.ndarray,
    rows: Sequence[float] | np.ndarray,
    cols: Sequence[float] | np.ndarray,
    classes: Sequence[int] | np.ndarray,
    *,
    radius: float = CLICK_RADIUS,
) -> np.ndarray:
    """Paint each click ``(rows[k], cols[k])`` as a disk of class ``classes[k]`` into
    ``labels`` (in place, clipped to the image; later clicks win) and return it.

    Parameters
    ----------
    labels : (H, W) int ndarray
        Sparse label image (:func:`empty_labels`).
    rows, cols : sequences of float
        Click positions in pixels.
    classes : sequence of int
        Label value of each click (0 = background).
    radius : float
        Disk radius in pixels (0: the single pixel).
    """
    if not len(rows) == len(cols) == len(classes):
        raise ValueError("rows, cols and classes must have the same length")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    reach = int(np.floor(radius))
    dr, dc = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    inside = dr**2 + dc**2 <= radius**2 + 1e-9
    dr, dc = dr[inside], dc[inside]
    height, width = labels.shape
    for row, col, value in zip(rows, cols, classes, strict=True):
        rr = int(round(float(row))) + dr
        cc = int(round(float(col))) + dc
        keep = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        labels[rr[keep], cc[keep]] = int(value)
    return labels


def rasterize_strokes(
    labels: np.ndarray,
    strokes: Sequence[tuple[int, np.ndarray]],
    *,
    width: float = 2 * CLICK_RADIUS,
) -> np.ndarray:
    """Paint scribbles into ``labels`` (in place): each stroke is ``(class, points)``
    with ``points`` an ``(n, 2)`` array of (row, col) vertices, drawn as a polyline of
    disks of diameter ``width``. Returns ``labels``."""
    from skimage.draw import line

    for value, points in strokes:
        vertices = np.round(np.asarray(points, dtype=np.float64)).astype(np.intp)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) == 0:
            raise ValueError(f"stroke points must be (n, 2) (row, col), got {vertices.shape}")
        rows, cols = [vertices[:1, 0]], [vertices[:1, 1]]
        for (r0, c0), (r1, c1) in zip(vertices[:-1], vertices[1:], strict=True):
            rr, cc = line(int(r0), int(c0), int(r1), int(c1))
            rows.append(rr)
            cols.append(cc)
        path_r, path_c = np.concatenate(rows), np.concatenate(cols)
        rasterize_clicks(labels, path_r, path_c, np.full(len(path_r), value), radius=width / 2)
    return labels


def training_pixels(
    labels: np.ndarray, *, max_per_class: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, classes)`` of the labelled pixels of a sparse label image,
    at most ``max_per_class`` of each class (a random subset; e.g. for accepted masks)."""
    rows, cols = np.nonzero(labels != UNLABELLED)
    values = labels[rows, cols].astype(np.int64)
    if max_per_class is not None:
        rng = np.random.default_rng(seed)
        keep = []
        for value in np.unique(values):
            where = np.flatnonzero(values == value)
            if len(where) > max_per_class:
                where = np.sort(rng.choice(where, max_per_class, replace=False))
            keep.append(where)
        order = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.intp)
        rows, cols, values = rows[order], cols[order], values[order]
    return rows, cols, values


def training_set(
    features: GridFeatures,
    labels: np.ndarray,
    *,
    max_per_class: int | None = 20_000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of one item: features sampled at its labelled pixels.

    Returns
    -------
    X : (n, dim) float32 ndarray
    y : (n,) int64 ndarray
    """
    if labels.shape != features.shape:
        raise ValueError(f"labels shape {labels.shape} != image shape {features.shape}")
    rows, cols, values = training_pixels(labels, max_per_class=max_per_class, seed=seed)
    return features.sample(rows, cols), values


def balanced_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, weight per sample)``: each class weighs as much in total,
    ``n / (k * n_class)`` per sample (scikit-learn's ``'balanced'``)."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    per_class = len(y) / (len(classes) * counts)
    return classes, per_class[inverse].astype(np.float32)


# --- the head interface -------------------------------------------------------------------


class PixelHead(ABC):
    """A classifier of feature vectors whose first layer is linear.

    Subclasses implement :meth:`fit` and set ``first_weights`` ``(dim, m)`` and
    ``first_bias`` ``(m,)`` in *raw* feature units (standardisation folded in), and
    :meth:`_finish` (first-layer outputs -> class logits).
    """

    name: ClassVar[str]
    classes_: np.ndarray
    first_weights: np.ndarray
    first_bias: np.ndarray

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray) -> PixelHead:
        """Fit on ``X`` (n, dim) and class values ``y`` (n,); return self."""

    @abstractmethod
    def _finish(self, first: np.ndarray) -> np.ndarray:
        """``(n, m)`` first-layer outputs -> ``(n, k)`` logits."""

    @property
    def fitted(self) -> bool:
        return hasattr(self, "first_weights")

    def predict_proba_vectors(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, k)`` of feature vectors."""
        first = np.asarray(X, dtype=np.float32) @ self.first_weights + self.first_bias
        return softmax(self._finish(first))

    def predict_proba(self, features: GridFeatures) -> np.ndarray:
        """Class probabilities on the finest grid of ``features``.

        Returns
        -------
        proba : (ceil(H / s), ceil(W / s), k) float32 ndarray
            ``s`` = the finest grid's stride; columns follow ``classes_``. Upsample with
            :func:`loupe.features.grids.upsample_to_pixels` for display.
        """
        first = features.project(self.first_weights, self.first_bias)
        shape = first.shape[:2]
        logits = self._finish(first.reshape(-1, first.shape[2]))
        return softmax(logits).reshape(*shape, -1)

    def predict(self, features: GridFeatures) -> np.ndarray:
        """The most likely class value per cell of the finest grid (int64)."""
        return np.asarray(self.classes_[self.predict_proba(features).argmax(axis=2)])


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted.astype(np.float32, copy=False)


def _standardise(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-6] = 1.0
    return (X - mean) / scale, mean, scale


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (n, dim) and y (n,), got {X.shape} and {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("y must hold at least two classes (label some background too)")
    return X, y


# --- logistic regression ------------------------------------------------------------------


class LogisticPixelHead(PixelHead):
    """Multinomial logistic regression, class-balanced, on z-scored features.

    Parameters
    ----------
    C : float
        Inverse L2 strength (scikit-learn's).
    max_iter : int
        lbfgs iterations.
    """

    name = "logistic"

    def __init__(self, *, C: float = 0.3, max_iter: int = 300) -> None:  # noqa: N803
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = C
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogisticPixelHead:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        X, y = _check_xy(X, y)
        Z, mean, scale = _standardise(X)
        model = LogisticRegression(C=self.C, max_iter=self.max_iter, class_weight="balanced")
        with warnings.catch_warnings():
            # A few hundred separable pixels rarely converge to 1e-4; the fit is good.
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Z, y)
        coef = model.coef_.astype(np.float32)
        intercept = model.intercept_.astype(np.float32)
        if coef.shape[0] == 1:  # binary: logits (0, z)
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]], dtype=np.float32)
        self.classes_ = model.classes_.astype(np.int64)
        weights = (coef / scale.astype(np.float32)).T
        self.first_weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.first_bias = (intercept - mean.astype(np.float32) @ weights).astype(np.float32)
        return self

    def _finish(self, first: np.ndarray) -> np.ndarray:
        return first


# --- small MLP ----------------------------------------------------------------------------


class MlpPixelHead(PixelHead):
    """One hidden layer (ReLU), class-balanced cross-entropy, early stopping.

    Parameters
    ----------
    hidden : int
        Hidden units.
    weight_decay : float
        AdamW weight decay.
    lr : float
        Learning rate.
    max_steps : int
        Optimiser steps at most (full batch up to ``batch_size`` samples).
    batch_size : int
        Mini-batch size for bigger training sets.
    holdout : float
        Share held out for early stopping once there are ``min_holdout_n`` labels.
    patience : int
        Evaluations (every 10 steps) without improvement before stopping.
    warm_start : bool
        Start from the previous fit's weights when the features and classes match.
    threads : int
        torch intra-op threads during the fit (1: the interactive loop owns the cores).
    seed : int
        Initialisation and hold-out seed.
    """

    name = "mlp"
    min_holdout_n = 40

    def __init__(
        self,
        *,
        hidden: int = 32,
        weight_decay: float = 1e-2,
        lr: float = 1e-2,
        max_steps: int = 300,
        batch_size: int = 4096,
        holdout: float = 0.2,
        patience: int = 5,
        warm_start: bool = True,
        threads: int = 1,
        seed: int = 0,
    ) -> None:
        if hidden < 1 or max_steps < 1 or not 0 <= holdout < 1:
            raise ValueError("hidden and max_steps must be >= 1 and 0 <= holdout < 1")
        self.hidden = hidden
        self.weight_decay = weight_decay
        self.lr = lr
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.holdout = holdout
        self.patience = patience
        self.warm_start = warm_start
        self.threads = threads
        self.seed = seed
        self.steps_: int = 0
        self._state: dict[str, Any] | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> MlpPixelHead:
        import torch

        X, y = _check_xy(X, y)
        Z, mean, scale = _standardise(X)
        classes, weights = balanced_weights(y)
        targets = np.searchsorted(classes, y)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_hold = int(len(y) * self.holdout) if len(y) >= self.min_holdout_n else 0
        hold, train = order[:n_hold], order[n_hold:]
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            torch.manual_seed(self.seed)
            model = torch.nn.Sequential(
                torch.nn.Linear(X.shape[1], self.hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(self.hidden, len(classes)),
            )
            state = self._state
            if (
                self.warm_start
                and state is not None
                and state["dim"] == X.shape[1]
                and np.array_equal(state["classes"], classes)
            ):
                model.load_state_dict(state["weights"])
            self.steps_ = _train(
                model,
                torch.from_numpy(Z.astype(np.float32)),
                torch.from_numpy(targets),
                torch.from_numpy(weights),
                train,
                hold,
                lr=self.lr,
                weight_decay=self.weight_decay,
                max_steps=self.max_steps,
                batch_size=self.batch_size,
                patience=self.patience,
                rng=rng,
            )
            self._state = {
                "dim": X.shape[1],
                "classes": classes,
                "weights": {k: v.clone() for k, v in model.state_dict().items()},
            }
            first, last = model[0], model[2]
            assert isinstance(first, torch.nn.Linear) and isinstance(last, torch.nn.Linear)
            w1 = first.weight.detach().numpy().T.astype(np.float32)  # (dim, hidden)
            b1 = first.bias.detach().numpy().astype(np.float32)
            self.w2 = last.weight.detach().numpy().T.astype(np.float32).copy()
            self.b2 = last.bias.detach().numpy().astype(np.float32).copy()
        finally:
            torch.set_num_threads(previous)
        self.classes_ = classes.astype(np.int64)
        folded = w1 / scale.astype(np.float32)[:, None]
        self.first_weights = np.ascontiguousarray(folded)
        self.first_bias = (b1 - mean.astype(np.float32) @ folded).astype(np.float32)
        return self

    def _finish(self, first: np.ndarray) -> np.ndarray:
        hidden = np.maximum(first, 0, out=first)
        return np.asarray(hidden @ self.w2 + self.b2, dtype=np.float32)


def _train(
    model: Any,
    Z: Any,  # noqa: N803
    targets: Any,
    weights: Any,
    train: np.ndarray,
    hold: np.ndarray,
    *,
    lr: float,
    weight_decay: float,
    max_steps: int,
    batch_size: int,
    patience: int,
    rng: np.random.Generator,
) -> int:
    """AdamW on sample-weighted cross-entropy; keeps the best hold-out weights."""
    import torch

    def loss_of(index: np.ndarray) -> Any:
        idx = torch.from_numpy(index)
        losses = torch.nn.functional.cross_entropy(model(Z[idx]), targets[idx], reduction="none")
        w = weights[idx]
        return (losses * w).sum() / w.sum()

    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, stale, step = float("inf"), None, 0, 0
    for step in range(1, max_steps + 1):
        batch = train if len(train) <= batch_size else rng.choice(train, batch_size, False)
        optimiser.zero_grad()
        loss = loss_of(batch)
        loss.backward()
        optimiser.step()
        if len(hold) and step % 10 == 0:
            with torch.no_grad():
                held = float(loss_of(hold))
            if held < best - 1e-4:
                best, stale = held, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return step


PIXEL_HEADS: dict[str, type[PixelHead]] = {
    LogisticPixelHead.name: LogisticPixelHead,
    MlpPixelHead.name: MlpPixelHead,
}
"""Pixel heads by name."""


def make_pixel_head(name: str, **options: Any) -> PixelHead:
    """A new head ``name`` (``'logistic'`` or ``'mlp'``) with ``options``."""
    if name not in PIXEL_HEADS:
        raise ValueError(f"name must be one of {sorted(PIXEL_HEADS)}, got {name!r}")
    return PIXEL_HEADS[name](**options)
