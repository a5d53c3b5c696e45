"""Epoch-wise training of a pixel head, for continuous training with early stopping.

:class:`~loupe.learn.pixel_heads.LogisticPixelHead` and ``MlpPixelHead`` fit in one
call, which suits the synchronous update after a click. A background training job
wants the opposite: epochs it can report on, stop between (Stop button, early
stopping) and snapshot for a live heatmap. :class:`EpochTrainer` does that in NumPy
(no torch import, deterministic): softmax regression (``hidden=0``, the ``logistic``
head) or one hidden ReLU layer (the ``mlp`` head), class-balanced cross-entropy,
Adam with weight decay, z-scored features, and a stratified validation split of the
labelled pixels on which it measures loss and per-class Dice / IoU.

:meth:`EpochTrainer.head` returns a :class:`FittedPixelHead`, a
:class:`~loupe.learn.pixel_heads.PixelHead` whose first layer is folded into raw
feature units, so it predicts on :class:`~loupe.features.pixels.PixelFeatures` grids
without upsampling them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loupe.learn.pixel_heads import PixelHead, balanced_weights, softmax

HEAD_HIDDEN = {"logistic": 0, "mlp": 32}


@dataclass
class EpochStats:
    """What one epoch measured: training loss, validation loss and per-class scores."""

    epoch: int
    loss: float
    val_loss: float
    dice: dict[int, float] = field(default_factory=dict)
    iou: dict[int, float] = field(default_factory=dict)

    @property
    def mean_dice(self) -> float:
        return float(np.mean(list(self.dice.values()))) if self.dice else 0.0


class FittedPixelHead(PixelHead):
    """A head trained elsewhere (:class:`EpochTrainer`), or loaded from an artifact."""

    name = "fitted"

    def __init__(
        self,
        classes: np.ndarray,
        first_weights: np.ndarray,
        first_bias: np.ndarray,
        w2: np.ndarray | None = None,
        b2: np.ndarray | None = None,
    ) -> None:
        self.classes_ = np.asarray(classes, dtype=np.int64)
        self.first_weights = np.ascontiguousarray(first_weights, dtype=np.float32)
        self.first_bias = np.asarray(first_bias, dtype=np.float32)
        self.w2 = None if w2 is None else np.asarray(w2, dtype=np.float32)
        self.b2 = None if b2 is None else np.asarray(b2, dtype=np.float32)

    def fit(self, X: np.ndarray, y: np.ndarray) -> FittedPixelHead:  # noqa: N803
        raise NotImplementedError("a FittedPixelHead is trained by EpochTrainer")

    def _finish(self, first: np.ndarray) -> np.ndarray:
        if self.w2 is None or self.b2 is None:
            return first
        hidden = np.maximum(first, 0, out=first)
        return np.asarray(hidden @ self.w2 + self.b2, dtype=np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """The head as arrays (for ``np.savez``); :meth:`from_arrays` reads them back."""
        out = {"classes": self.classes_, "w1": self.first_weights, "b1": self.first_bias}
        if self.w2 is not None and self.b2 is not None:
            out.update(w2=self.w2, b2=self.b2)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> FittedPixelHead:
        w2 = arrays["w2"] if "w2" in arrays else None
        b2 = arrays["b2"] if "b2" in arrays else None
        return cls(arrays["classes"], arrays["w1"], arrays["b1"], w2, b2)


def split_validation(
    y: np.ndarray, fraction: float, seed: int = 0, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, val)`` indices, stratified per class.

    With ``groups`` (e.g. one id per click disk, scribble or mask region) whole groups
    go to one side, so validation pixels are not the neighbours of training pixels
    of the same click; a class with fewer than 3 groups is split by pixel instead.
    A class with fewer than 5 samples stays wholly in training.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for value in np.unique(y):
        where = np.flatnonzero(y == value)
        if groups is not None:
            ids = rng.permutation(np.unique(groups[where]))
            if len(ids) >= 3:
                held = ids[: max(1, int(round(len(ids) * fraction)))]
                in_val = np.isin(groups[where], held)
                val.append(where[in_val])
                train.append(where[~in_val])
                continue
        where = rng.permutation(where)
        n_val = int(len(where) * fraction) if len(where) >= 5 else 0
        val.append(where[:n_val])
        train.append(where[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class EpochTrainer:
    """Adam on class-balanced cross-entropy, one :meth:`epoch` at a time.

    Parameters
    ----------
    X : (n, dim) ndarray
        Features of the labelled pixels.
    y : (n,) int ndarray
        Their class values (at least two distinct).
    head : str
        ``'logistic'`` (no hidden layer) or ``'mlp'`` (32 hidden units).
    val_fraction : float
        Share of each class held out for validation.
    groups : (n,) int ndarray, optional
        Group of each sample for the validation split (:func:`split_validation`).
    lr, weight_decay, batch_size, seed
        Optimiser settings.
    """

    def __init__(
        self,
        X: np.ndarray,  # noqa: N803
        y: np.ndarray,
        *,
        head: str = "logistic",
        val_fraction: float = 0.2,
        groups: np.ndarray | None = None,
        lr: float = 0.01,
        weight_decay: float = 1e-3,
        batch_size: int = 2048,
        seed: int = 0,
    ) -> None:
        if head not in HEAD_HIDDEN:
            raise ValueError(f"head must be one of {sorted(HEAD_HIDDEN)}, got {head!r}")
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be (n, dim) and y (n,), got {X.shape} and {y.shape}")
        if len(np.unique(y)) < 2:
            raise ValueError("y must hold at least two classes (label some background too)")
        self.rng = np.random.default_rng(seed)
        self.train_idx, self.val_idx = split_validation(y, val_fraction, seed, groups)
        if len(self.val_idx) == 0:  # too few labels: validate on the training pixels
            self.val_idx = self.train_idx
        xt = X[self.train_idx]
        self.mean = xt.mean(axis=0)
        self.scale = xt.std(axis=0)
        self.scale[self.scale < 1e-6] = 1.0
        self.Z = (X - self.mean) / self.scale
        self.classes, _ = balanced_weights(y)
        self.targets = np.searchsorted(self.classes, y)
        _, self.weights = balanced_weights(y[self.train_idx])
        self.sample_w = np.zeros(len(y), np.float32)
        self.sample_w[self.train_idx] = self.weights
        _, val_w = balanced_weights(y[self.val_idx])
        self.sample_w_val = val_w
        self.hidden = HEAD_HIDDEN[head]
        self.head_name = head
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        dim, k = X.shape[1], len(self.classes)
        if self.hidden:
            self.params = [
                (self.rng.standard_normal((dim, self.hidden)) * np.sqrt(2 / dim)).astype(
                    np.float32
                ),
                np.zeros(self.hidden, np.float32),
                (self.rng.standard_normal((self.hidden, k)) * np.sqrt(1 / self.hidden)).astype(
                    np.float32
                ),
                np.zeros(k, np.float32),
            ]
        else:
            self.params = [np.zeros((dim, k), np.float32), np.zeros(k, np.float32)]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.epochs = 0

    def _forward(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # noqa: N803
        if self.hidden:
            w1, b1, w2, b2 = self.params
            h = np.maximum(Z @ w1 + b1, 0)
            return h @ w2 + b2, h
        w, b = self.params
        return Z @ w + b, None

    def _loss(self, idx: np.ndarray, weights: np.ndarray) -> float:
        logits, _ = self._forward(self.Z[idx])
        p = softmax(logits.astype(np.float32))
        picked = p[np.arange(len(idx)), self.targets[idx]]
        return float((-np.log(np.maximum(picked, 1e-7)) * weights).sum() / weights.sum())

    def _step(self, idx: np.ndarray) -> float:
        Z, w = self.Z[idx], self.sample_w[idx]
        logits, h = self._forward(Z)
        p = softmax(logits.astype(np.float32))
        n = len(idx)
        loss = float(
            (-np.log(np.maximum(p[np.arange(n), self.targets[idx]], 1e-7)) * w).sum() / w.sum()
        )
        grad = p
        grad[np.arange(n), self.targets[idx]] -= 1
        grad *= (w / w.sum())[:, None]
        if self.hidden:
            assert h is not None
            w1, _b1, w2, _b2 = self.params
            gh = (grad @ w2.T) * (h > 0)
            grads = [Z.T @ gh, gh.sum(0), h.T @ grad, grad.sum(0)]
        else:
            grads = [Z.T @ grad, grad.sum(0)]
        self.t += 1
        b1c, b2c = 1 - 0.9**self.t, 1 - 0.999**self.t
        for i, (param, g) in enumerate(zip(self.params, grads, strict=True)):
            if param.ndim == 2:
                g = g + self.weight_decay * param
            self.m[i] = 0.9 * self.m[i] + 0.1 * g
            self.v[i] = 0.999 * self.v[i] + 0.001 * g * g
            param -= (self.lr * (self.m[i] / b1c) / (np.sqrt(self.v[i] / b2c) + 1e-8)).astype(
                np.float32
            )
        return loss

    def epoch(self) -> EpochStats:
        """One pass over the training pixels in shuffled mini-batches; validation after."""
        order = self.rng.permutation(self.train_idx)
        losses, sizes = [], []
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            losses.append(self._step(batch))
            sizes.append(len(batch))
        self.epochs += 1
        return self.validate(float(np.average(losses, weights=sizes)))

    def validate(self, loss: float = float("nan")) -> EpochStats:
        """Loss and per-class Dice / IoU on the validation pixels."""
        idx = self.val_idx
        val_loss = self._loss(idx, self.sample_w_val)
        logits, _ = self._forward(self.Z[idx])
        pred, true = logits.argmax(1), self.targets[idx]
        dice, iou = {}, {}
        for k, value in enumerate(self.classes):
            tp = float(np.sum((pred == k) & (true == k)))
            fp = float(np.sum((pred == k) & (true != k)))
            fn = float(np.sum((pred != k) & (true == k)))
            dice[int(value)] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
            iou[int(value)] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        return EpochStats(self.epochs, loss, val_loss, dice, iou)

    def state(self) -> list[np.ndarray]:
        """A copy of the parameters (keep the best epoch's)."""
        return [p.copy() for p in self.params]

    def restore(self, state: list[np.ndarray]) -> None:
        self.params = [p.copy() for p in state]

    def head(self) -> FittedPixelHead:
        """The current parameters as a head in raw feature units."""
        scale = self.scale.astype(np.float32)
        mean = self.mean.astype(np.float32)
        w1, b1 = self.params[0], self.params[1]
        folded = w1 / scale[:, None]
        bias = (b1 - mean @ folded).astype(np.float32)
        if self.hidden:
            return FittedPixelHead(self.classes, folded, bias, self.params[2], self.params[3])
        return FittedPixelHead(self.classes, folded, bias)
