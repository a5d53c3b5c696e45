"""Ridge regression head for score projects, one target column per metric.

Each metric is scaled to 0-1 (``(value - min) / (max - min)``) for training.
Features are standardised like :class:`loupe.learn.classify.ClassifierHead`
(centre, one global scale). The ridge solution comes from one eigen-
decomposition of the Gram matrix (``n x n`` when there are fewer labels than
dimensions, else ``dim x dim``), which also gives the exact leave-one-out
error for every ``alpha`` in a small grid: each metric gets the ``alpha`` with
the lowest LOO error. Prediction is one float32 matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.metrics import MetricSpec

# Ridge strengths relative to the mean squared row norm of the standardised
# features (= dim), so the grid means the same for every backbone.
RELATIVE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _bounds(metrics: Sequence[MetricSpec]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    low = np.array([float(m["min"]) for m in metrics], dtype=np.float64)
    high = np.array([float(m["max"]) for m in metrics], dtype=np.float64)
    if np.any(high <= low):
        raise ValueError("every metric needs max > min")
    return low, high


def snap(raw: NDArray[np.floating], metrics: Sequence[MetricSpec]) -> NDArray[np.float64]:
    """Clip ``raw`` ``(n, m)`` (original units) to each metric's range and round to its step.

    Steps count from the metric's ``min`` (min 1, step 2 gives 1, 3, 5 ...);
    a value snapped past ``max`` comes back down one step. A metric whose
    step is 0 / None is only clipped. Returns float64 ``(n, m)``.
    """
    values = np.asarray(raw, dtype=np.float64).reshape(len(raw), -1)
    if values.shape[1] != len(metrics):
        raise ValueError(f"raw must be (n, {len(metrics)}), got {values.shape}")
    low, high = _bounds(metrics)
    out = np.clip(values, low, high)
    for j, metric in enumerate(metrics):
        step = metric.get("step")
        if step is None or float(step) <= 0:
            continue
        step = float(step)
        # half-steps round up (not to even), which is what people expect on a scale
        column = low[j] + np.floor((out[:, j] - low[j]) / step + 0.5) * step
        column = np.where(column > high[j] + 1e-9 * step, column - step, column)
        # round away float noise such as 0.30000000000000004
        out[:, j] = np.round(column, 10)
    return out


class ScoreHead:
    """Per-metric ridge regression on 0-1 scaled targets, ``alpha`` chosen by exact LOO."""

    kind = "ridge"

    def __init__(
        self,
        *,
        relative_alphas: Sequence[float] = RELATIVE_ALPHAS,
        fixed_alphas: Sequence[float] | None = None,
    ) -> None:
        """``relative_alphas``: the LOO grid; ``fixed_alphas``: one relative alpha per
        metric, skipping the search (a Cholesky solve instead of an eigendecomposition;
        cross-validation folds reuse the alphas the full fit chose)."""
        if not relative_alphas or min(relative_alphas) <= 0:
            raise ValueError(f"relative_alphas must be positive, got {relative_alphas}")
        if fixed_alphas is not None and (not fixed_alphas or min(fixed_alphas) <= 0):
            raise ValueError(f"fixed_alphas must be positive, got {fixed_alphas}")
        self.relative_alphas = tuple(float(a) for a in relative_alphas)
        self.fixed_alphas = None if fixed_alphas is None else [float(a) for a in fixed_alphas]
        self.metrics: list[dict[str, Any]] = []
        self.coef_: NDArray[np.float32] | None = None  # (dim, m), original units
        self.intercept_: NDArray[np.float32] | None = None  # (m,)
        self.alpha_: list[float] = []  # chosen relative alpha per metric
        self.loo_mse_: list[float] = []  # LOO mean squared error (0-1 scale) at that alpha

    def fit(
        self,
        X: NDArray[np.floating],
        Y: NDArray[np.floating],
        metrics: Sequence[MetricSpec],
        *,
        seed: int = 0,
    ) -> ScoreHead:
        """Fit on ``X`` ``(n, dim)`` and targets ``Y`` ``(n, m)`` in the metrics' units.

        Closed form, deterministic (``seed`` is accepted for the head interface).
        Returns ``self``.
        """
        del seed
        features = np.asarray(X, dtype=np.float32)
        targets = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
        if features.ndim != 2 or len(features) != len(targets):
            raise ValueError(
                f"X must be (n, dim) matching Y; got {features.shape}, {targets.shape}"
            )
        if targets.shape[1] != len(metrics):
            raise ValueError(f"Y must be (n, {len(metrics)}), got {targets.shape}")
        if len(targets) == 0:
            raise ValueError("Y is empty: nothing to fit")
        low, high = _bounds(metrics)
        scaled = (targets - low) / (high - low)
        n, dim = features.shape
        mean = features.mean(axis=0)
        z = features - mean
        scale = float(np.sqrt(np.mean(np.square(z, dtype=np.float64))))
        scale = scale if scale > 0 else 1.0
        z /= np.float32(scale)
        target_mean = scaled.mean(axis=0)
        centred = scaled - target_mean
        if self.fixed_alphas is not None:
            if len(self.fixed_alphas) != len(metrics):
                raise ValueError(f"fixed_alphas needs {len(metrics)} values")
            weights = _ridge_fixed(z, centred, self.fixed_alphas, dim)
            self.alpha_, self.loo_mse_ = list(self.fixed_alphas), []
        else:
            weights, self.alpha_, self.loo_mse_ = _ridge_loo(z, centred, self.relative_alphas, dim)
        span = high - low
        # back to original units and raw features: y = low + span * (b + ((x - mean)/scale) @ W)
        coef = weights / scale * span
        intercept = low + span * target_mean - mean.astype(np.float64) @ coef
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.metrics = [dict(m) for m in metrics]
        return self

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.float32]:
        """Raw predictions ``(n, m)`` float32 in original units (neither clipped nor snapped)."""
        if self.coef_ is None or self.intercept_ is None:
            raise RuntimeError("ScoreHead is not fitted")
        features = np.asarray(X, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"X must be (n, {self.coef_.shape[0]}), got {features.shape}")
        out = features @ self.coef_
        out += self.intercept_
        return out

    def predict_snapped(self, X: NDArray[np.floating]) -> NDArray[np.float64]:
        """``snap(predict(X), metrics)``: clipped, step-snapped values in original units."""
        return snap(self.predict(X), self.metrics)

    def to_state(self) -> dict[str, Any]:
        """Plain state: NumPy arrays plus JSON values (see :mod:`loupe.learn.state`)."""
        if self.coef_ is None or self.intercept_ is None:
            raise RuntimeError("ScoreHead is not fitted")
        return {
            "kind": self.kind,
            "relative_alphas": list(self.relative_alphas),
            "fixed_alphas": self.fixed_alphas,
            "metrics": self.metrics,
            "alpha": list(self.alpha_),
            "loo_mse": list(self.loo_mse_),
            "coef": self.coef_,
            "intercept": self.intercept_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScoreHead:
        """Inverse of :meth:`to_state`."""
        if state.get("kind") != cls.kind:
            raise ValueError(f"state kind must be {cls.kind!r}, got {state.get('kind')!r}")
        head = cls(relative_alphas=state["relative_alphas"], fixed_alphas=state["fixed_alphas"])
        head.metrics = [dict(m) for m in state["metrics"]]
        head.alpha_ = [float(a) for a in state["alpha"]]
        head.loo_mse_ = [float(a) for a in state["loo_mse"]]
        head.coef_ = np.asarray(state["coef"], dtype=np.float32)
        head.intercept_ = np.asarray(state["intercept"], dtype=np.float32)
        return head


def _ridge_loo(
    z: NDArray[np.float32],
    targets: NDArray[np.float64],
    relative_alphas: Sequence[float],
    dim: int,
) -> tuple[NDArray[np.float64], list[float], list[float]]:
    """Ridge weights ``(dim, m)`` for centred ``z`` / ``targets``, alpha per column by exact LOO.

    One eigendecomposition of the smaller Gram matrix gives the hat matrix
    ``H = A diag(g) A^T`` for every alpha (``A = U``, ``g = e / (e + alpha)`` from
    ``z z^T = U diag(e) U^T``; or ``A = z V``, ``g = 1 / (e + alpha)`` from
    ``z^T z = V diag(e) V^T``), so each LOO residual ``(y - Hy) / (1 - h_ii - 1/n)``
    costs O(n r) per alpha. The Gram matrix and its decomposition are float32
    (twice as fast; the smallest alpha, ``1e-3 * dim``, is far above float32
    eigenvalue noise).
    """
    from scipy.linalg import eigh

    n = len(z)
    wide = n <= z.shape[1]
    gram = z @ z.T if wide else z.T @ z
    eigvals, vectors = eigh(gram, driver="evd", check_finite=False, overwrite_a=True)
    eigvals = np.clip(eigvals.astype(np.float64), 0.0, None)
    basis = (vectors if wide else z @ vectors).astype(np.float64)  # A, (n, r)
    projected = basis.T @ targets  # (r, m)
    basis_sq = np.square(basis)
    n_metrics = targets.shape[1]
    best_mse = np.full(n_metrics, np.inf)
    best_alpha = np.zeros(n_metrics)
    # mean squared row norm of z is dim (global standardisation)
    for relative in relative_alphas:
        alpha = relative * dim
        gain = eigvals / (eigvals + alpha) if wide else 1.0 / (eigvals + alpha)
        fitted = basis @ (gain[:, None] * projected)
        leverage = basis_sq @ gain + 1.0 / n
        residual = (targets - fitted) / np.maximum(1.0 - leverage, 1e-6)[:, None]
        mse = np.mean(np.square(residual), axis=0)
        better = mse < best_mse
        best_mse = np.where(better, mse, best_mse)
        best_alpha = np.where(better, relative, best_alpha)
    # wide: w = z^T U diag(1 / (e + alpha)) U^T y;  tall: w = V diag(1 / (e + alpha)) V^T z^T y
    coords = np.stack(
        [projected[:, j] / (eigvals + best_alpha[j] * dim) for j in range(n_metrics)], axis=1
    )  # (r, m)
    if wide:
        weights = z.T @ (basis @ coords).astype(np.float32)
    else:
        weights = vectors @ coords.astype(np.float32)
    return weights.astype(np.float64), [float(a) for a in best_alpha], [float(m) for m in best_mse]


def _ridge_fixed(
    z: NDArray[np.float32],
    targets: NDArray[np.float64],
    relative_alphas: Sequence[float],
    dim: int,
) -> NDArray[np.float64]:
    """Ridge weights ``(dim, m)`` for given relative alphas (one per column) by Cholesky."""
    from scipy.linalg import cho_factor, cho_solve

    wide = len(z) <= z.shape[1]
    gram = (z @ z.T if wide else z.T @ z).astype(np.float64)
    rhs = targets if wide else (z.T @ targets.astype(np.float32)).astype(np.float64)
    solution = np.empty((len(gram), targets.shape[1]))
    for alpha in sorted(set(relative_alphas)):
        columns = [j for j, a in enumerate(relative_alphas) if a == alpha]
        factor = cho_factor(gram + alpha * dim * np.eye(len(gram)), check_finite=False)
        solution[:, columns] = cho_solve(factor, rhs[:, columns], check_finite=False)
    if not wide:
        return solution
    # dual: w = z^T (z z^T + alpha I)^-1 y
    return (z.T @ solution.astype(np.float32)).astype(np.float64)
