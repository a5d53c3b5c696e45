"""A small MLP class head: one hidden ReLU layer over standardised features.

The same interface as :class:`loupe.learn.classify.ClassifierHead` (``fit``,
``logits``, ``predict_proba`` with a ``temperature``, ``to_state`` /
``from_state``), so the trainers take either by name from
``loupe.learn.CLASS_HEADS``. It can follow a boundary a linear head cannot, at
the price of more labels; L-BFGS on the full batch keeps it deterministic for
a seed and fast at the label counts of a labelling session (hundreds to a few
thousand rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.calibration import softmax
from loupe.learn.classify import ABSENT_CLASS_LOGIT


class MLPClassifierHead:
    """``logits = relu(z @ W1 + b1) @ W2 + b2`` on ``z = (X - mean) / scale``.

    ``C`` is the inverse L2 strength (penalty ``1 / (C * n)`` on both weight
    matrices), ``hidden`` the width of the hidden layer.
    """

    kind = "mlp"

    def __init__(
        self, *, C: float = 1.0, hidden: int = 64, max_iter: int = 300, tol: float = 1e-5
    ) -> None:
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        self.C, self.hidden, self.max_iter, self.tol = float(C), int(hidden), max_iter, tol
        self.temperature = 1.0
        self.params_: dict[str, NDArray[np.float32]] | None = None

    def fit(
        self, X: NDArray[np.floating], y: NDArray[np.integer], *, n_classes: int, seed: int = 0
    ) -> MLPClassifierHead:
        """Fit on ``X`` ``(n, dim)`` and class indices ``y`` ``(n,)``; returns ``self``."""
        from scipy.optimize import minimize

        features = np.asarray(X, dtype=np.float32)
        labels = np.asarray(y, dtype=np.int64)
        if features.ndim != 2 or len(features) != len(labels) or len(labels) == 0:
            raise ValueError(f"X must be (n, dim) matching a non-empty y; got {features.shape}")
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"y must hold class indices in [0, {n_classes})")
        mean = features.mean(axis=0)
        centred = features - mean
        scale = float(np.sqrt(np.mean(np.square(centred, dtype=np.float64)))) or 1.0
        z = (centred / np.float32(scale)).astype(np.float64)
        n, dim = z.shape
        h, k = self.hidden, n_classes
        onehot = np.zeros((n, k))
        onehot[np.arange(n), labels] = 1.0
        penalty = 1.0 / (self.C * n)
        shapes = [(dim, h), (h,), (h, k), (k,)]
        sizes = [int(np.prod(s)) for s in shapes]

        def unpack(theta: NDArray[np.float64]) -> list[NDArray[np.float64]]:
            out, start = [], 0
            for shape, size in zip(shapes, sizes, strict=True):
                out.append(theta[start : start + size].reshape(shape))
                start += size
            return out

        def loss_and_grad(theta: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            w1, b1, w2, b2 = unpack(theta)
            pre = z @ w1 + b1
            act = np.maximum(pre, 0.0)
            scores = act @ w2 + b2
            scores -= scores.max(axis=1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=1, keepdims=True)
            loss = -np.sum(onehot * np.log(np.clip(probs, 1e-300, None))) / n
            loss += 0.5 * penalty * (np.sum(w1 * w1) + np.sum(w2 * w2))
            d_scores = (probs - onehot) / n
            g_w2 = act.T @ d_scores + penalty * w2
            g_b2 = d_scores.sum(axis=0)
            d_act = d_scores @ w2.T
            d_act[pre <= 0] = 0.0
            g_w1 = z.T @ d_act + penalty * w1
            g_b1 = d_act.sum(axis=0)
            return float(loss), np.concatenate([g.ravel() for g in (g_w1, g_b1, g_w2, g_b2)])

        rng = np.random.default_rng(seed)
        init = [
            rng.normal(0, np.sqrt(2.0 / dim), (dim, h)),
            np.zeros(h),
            rng.normal(0, np.sqrt(1.0 / h), (h, k)),
            np.zeros(k),
        ]
        theta0 = np.concatenate([p.ravel() for p in init])
        result = minimize(
            loss_and_grad,
            theta0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol},
        )
        w1, b1, w2, b2 = unpack(result.x)
        present = np.zeros(k, dtype=bool)
        present[np.unique(labels)] = True
        b2 = np.where(present, b2, ABSENT_CLASS_LOGIT)
        # fold the standardisation into the first layer
        self.params_ = {
            "w1": (w1 / scale).astype(np.float32),
            "b1": (b1 - (mean.astype(np.float64) / scale) @ w1).astype(np.float32),
            "w2": w2.astype(np.float32),
            "b2": b2.astype(np.float32),
        }
        return self

    def logits(self, X: NDArray[np.floating]) -> NDArray[np.float32]:
        """Uncalibrated logits ``(n, n_classes)`` float32."""
        if self.params_ is None:
            raise RuntimeError("MLPClassifierHead is not fitted")
        p = self.params_
        features = np.asarray(X, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != p["w1"].shape[0]:
            raise ValueError(f"X must be (n, {p['w1'].shape[0]}), got {features.shape}")
        act = np.maximum(features @ p["w1"] + p["b1"], 0.0)
        out: NDArray[np.float32] = act @ p["w2"] + p["b2"]
        return out

    def predict_proba(self, X: NDArray[np.floating]) -> NDArray[np.float32]:
        return softmax(self.logits(X), self.temperature)

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.int64]:
        return self.logits(X).argmax(axis=1)

    def to_state(self) -> dict[str, Any]:
        if self.params_ is None:
            raise RuntimeError("MLPClassifierHead is not fitted")
        return {
            "kind": self.kind,
            "C": self.C,
            "hidden": self.hidden,
            "temperature": float(self.temperature),
            **self.params_,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MLPClassifierHead:
        if state.get("kind") != cls.kind:
            raise ValueError(f"state kind must be {cls.kind!r}, got {state.get('kind')!r}")
        head = cls(C=float(state["C"]), hidden=int(state["hidden"]))
        head.temperature = float(state["temperature"])
        head.params_ = {k: np.asarray(state[k], dtype=np.float32) for k in ("w1", "b1", "w2", "b2")}
        return head
