"""Multinomial logistic-regression head with temperature calibration.

A small softmax regression solved with L-BFGS (SciPy) on standardised
features: features are centred on the training mean and divided by one
global scale (the RMS of the centred entries), so the L2 penalty stays
isotropic and the problem well conditioned for L2-normalised embeddings.
Prediction folds the standardisation into the coefficients, so it is one
float32 matrix product: ``logits = X @ coef + intercept``. No sklearn object
is stored; the state is a dict of NumPy arrays and plain scalars.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.calibration import softmax

# Logit given to classes that had no training example: probability ~0 but
# finite, so states stay JSON/npz friendly and softmax never sees -inf.
ABSENT_CLASS_LOGIT = -1.0e4


class ClassifierHead:
    """Softmax regression over ``n_classes`` with an L2 penalty ``1 / (C * n)``.

    ``C`` follows scikit-learn's convention (inverse regularisation strength
    for the summed loss). ``temperature`` divides the logits in
    :meth:`predict_proba`; :func:`loupe.learn.calibration.fit_temperature`
    sets it from out-of-fold logits.
    """

    kind = "softmax"

    def __init__(self, *, C: float = 1.0, max_iter: int = 500, tol: float = 1e-5) -> None:
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.temperature = 1.0
        self.coef_: NDArray[np.float32] | None = None  # (dim, n_classes)
        self.intercept_: NDArray[np.float32] | None = None  # (n_classes,)
        self.n_iter_ = 0

    @property
    def n_classes(self) -> int:
        return 0 if self.intercept_ is None else int(self.intercept_.shape[0])

    def fit(
        self,
        X: NDArray[np.floating],
        y: NDArray[np.integer],
        *,
        n_classes: int,
        seed: int = 0,
    ) -> ClassifierHead:
        """Fit on features ``X`` ``(n, dim)`` and class indices ``y`` ``(n,)`` below ``n_classes``.

        Classes without examples get a constant logit of ``ABSENT_CLASS_LOGIT``.
        The solver is deterministic; ``seed`` is accepted for the head interface.
        Returns ``self``.
        """
        del seed  # deterministic solver
        features = np.asarray(X, dtype=np.float32)
        labels = np.asarray(y, dtype=np.int64)
        if features.ndim != 2 or len(features) != len(labels):
            raise ValueError(f"X must be (n, dim) matching y; got {features.shape}, {labels.shape}")
        if len(labels) == 0:
            raise ValueError("y is empty: nothing to fit")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"y must hold class indices in [0, {n_classes}), got {labels.max()}")
        present = np.unique(labels)
        mean = features.mean(axis=0)
        centred = features - mean
        scale = float(np.sqrt(np.mean(np.square(centred, dtype=np.float64))))
        scale = scale if scale > 0 else 1.0
        z = centred / np.float32(scale)
        local = np.searchsorted(present, labels)
        if len(present) == 1:
            weights = np.zeros((z.shape[1], 1), dtype=np.float64)
            bias = np.zeros(1, dtype=np.float64)
            self.n_iter_ = 0
        else:
            weights, bias, self.n_iter_ = _fit_softmax(
                z,
                local,
                len(present),
                penalty=1.0 / (self.C * len(labels)),
                max_iter=self.max_iter,
                tol=self.tol,
            )
        # fold the standardisation in: logits = ((X - mean) / scale) @ W + b
        coef = np.zeros((features.shape[1], n_classes), dtype=np.float32)
        intercept = np.full(n_classes, ABSENT_CLASS_LOGIT, dtype=np.float32)
        coef[:, present] = (weights / scale).astype(np.float32)
        intercept[present] = (bias - mean.astype(np.float64) @ (weights / scale)).astype(np.float32)
        self.coef_, self.intercept_ = coef, intercept
        return self

    def _require_fitted(self) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        if self.coef_ is None or self.intercept_ is None:
            raise RuntimeError("ClassifierHead is not fitted")
        return self.coef_, self.intercept_

    def logits(self, X: NDArray[np.floating]) -> NDArray[np.float32]:
        """Uncalibrated logits ``(n, n_classes)`` float32: one matrix product."""
        coef, intercept = self._require_fitted()
        features = np.asarray(X, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != coef.shape[0]:
            raise ValueError(f"X must be (n, {coef.shape[0]}), got {features.shape}")
        out = features @ coef
        out += intercept
        return out

    def predict_proba(self, X: NDArray[np.floating]) -> NDArray[np.float32]:
        """Calibrated probabilities ``softmax(logits / temperature)`` ``(n, n_classes)`` float32."""
        return softmax(self.logits(X), self.temperature)

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        """Class index ``(n,)`` of the largest logit (temperature does not change it)."""
        return self.logits(X).argmax(axis=1)

    def to_state(self) -> dict[str, Any]:
        """Plain state: NumPy arrays plus JSON scalars (see :mod:`loupe.learn.state`)."""
        coef, intercept = self._require_fitted()
        return {
            "kind": self.kind,
            "C": self.C,
            "temperature": float(self.temperature),
            "coef": coef,
            "intercept": intercept,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ClassifierHead:
        """Inverse of :meth:`to_state`."""
        if state.get("kind") != cls.kind:
            raise ValueError(f"state kind must be {cls.kind!r}, got {state.get('kind')!r}")
        head = cls(C=float(state["C"]))
        head.temperature = float(state["temperature"])
        head.coef_ = np.asarray(state["coef"], dtype=np.float32)
        head.intercept_ = np.asarray(state["intercept"], dtype=np.float32)
        return head


def _fit_softmax(
    z: NDArray[np.float32],
    labels: NDArray[np.int64],
    n_classes: int,
    *,
    penalty: float,
    max_iter: int,
    tol: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Minimise mean cross-entropy + ``penalty / 2 * ||W||^2`` (bias unpenalised).

    Float32 for the two matrix products per evaluation (the cost), float64
    for the optimiser state. Returns ``(W (dim, k), b (k,), iterations)``.
    """
    n, dim = z.shape
    n_weights = dim * n_classes
    onehot = np.zeros((n, n_classes), dtype=np.float32)
    onehot[np.arange(n), labels] = 1.0
    z_t = np.ascontiguousarray(z.T)

    def loss_and_grad(params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        weights = params[:n_weights].reshape(dim, n_classes)
        scores = z @ weights.astype(np.float32)
        scores += params[n_weights:].astype(np.float32)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        norm = exp.sum(axis=1, keepdims=True)
        nll = float(np.mean(np.log(norm[:, 0]) - (scores * onehot).sum(axis=1), dtype=np.float64))
        residual = exp / norm
        residual -= onehot
        residual /= np.float32(n)
        grad = np.empty_like(params)
        grad[:n_weights] = (z_t @ residual).ravel()
        grad[:n_weights] += penalty * params[:n_weights]
        grad[n_weights:] = residual.sum(axis=0, dtype=np.float64)
        loss = nll + 0.5 * penalty * float(params[:n_weights] @ params[:n_weights])
        return loss, grad

    params, iterations = minimize_lbfgs(
        loss_and_grad, np.zeros(n_weights + n_classes), max_iter=max_iter, tol=tol
    )
    return params[:n_weights].reshape(dim, n_classes), params[n_weights:].copy(), iterations


def minimize_lbfgs(
    loss_and_grad: Callable[[NDArray[np.float64]], tuple[float, NDArray[np.float64]]],
    start: NDArray[np.float64],
    *,
    max_iter: int = 500,
    tol: float = 1e-5,
    history: int = 10,
) -> tuple[NDArray[np.float64], int]:
    """Unconstrained L-BFGS (two-loop recursion, Armijo backtracking) from ``start``.

    A few dozen lines of NumPy instead of SciPy's L-BFGS-B, whose per-call
    overhead on ~10^4 parameters dominated our fits. Stops when the largest
    gradient entry is below ``tol`` or the loss stops decreasing. Returns
    ``(params, iterations)``.
    """
    x = np.asarray(start, dtype=np.float64).copy()
    loss, grad = loss_and_grad(x)
    s_hist: list[NDArray[np.float64]] = []
    y_hist: list[NDArray[np.float64]] = []
    rho_hist: list[float] = []
    iteration = 0
    for iteration in range(1, max_iter + 1):  # noqa: B007 - used after the loop
        if float(np.abs(grad).max()) < tol:
            iteration -= 1
            break
        # two-loop recursion: direction = -H grad
        q = grad.copy()
        alphas = []
        for s, yv, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
            a = rho * float(s @ q)
            alphas.append(a)
            q -= a * yv
        if s_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        else:
            q /= max(1.0, float(np.abs(grad).max()))
        for s, yv, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas), strict=True):
            q += s * (a - rho * float(yv @ q))
        direction = -q
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist, y_hist, rho_hist = [], [], []
            direction = -grad
            slope = -float(grad @ grad)
        step = 1.0
        for _ in range(30):
            candidate = x + step * direction
            new_loss, new_grad = loss_and_grad(candidate)
            if new_loss <= loss + 1e-4 * step * slope:
                break
            step *= 0.5
        else:
            break  # no decrease possible at float precision
        s_vec = candidate - x
        y_vec = new_grad - grad
        sy = float(s_vec @ y_vec)
        converged = loss - new_loss <= 1e-12 * max(1.0, abs(loss))
        x, loss, grad = candidate, new_loss, new_grad
        if sy > 1e-12:
            s_hist.append(s_vec)
            y_hist.append(y_vec)
            rho_hist.append(1.0 / sy)
            if len(s_hist) > history:
                s_hist.pop(0)
                y_hist.pop(0)
                rho_hist.pop(0)
        if converged:
            break
    return x, iteration
