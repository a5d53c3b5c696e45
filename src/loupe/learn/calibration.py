"""Calibration: temperature scaling, expected calibration error, split conformal sets.

All functions take plain NumPy arrays: ``logits`` / ``probs`` of shape
``(n, k)`` and ``y`` of shape ``(n,)`` holding class indices in ``[0, k)``.

Why the temperature is fitted on smoothed targets
-------------------------------------------------
Plain temperature scaling (maximum likelihood on out-of-fold logits)
collapses when the out-of-fold predictions are perfectly separated, which is
the normal case with 10-20 easy labels: the likelihood keeps rising as
``T -> 0``, so ``T`` ran to its lower bound and every draft read 100% (or 50%
on the boundary), including images unlike anything labelled. Maximum
likelihood is right only when the out-of-fold errors it sees are a fair
sample; "0 errors in 18" is evidence for high accuracy, not for certainty.

:func:`fit_temperature` therefore fits ``T`` to *Laplace-smoothed targets*:
each out-of-fold item's true class gets ``(n + 1) / (n + 2)`` (Laplace's rule
of succession on its ``n`` out-of-fold outcomes: after ``n`` right out of
``n``, the next is right with probability ``(n + 1) / (n + 2)``), the other
``1 / (n + 2)`` is spread over the other labelled classes. This is the
multi-class form of Platt's (1999) targets, which scikit-learn's sigmoid
calibration uses for the same reason. The objective stays convex in ``1 / T``
and now has a finite minimum even on separable data (predictions sharper than
the targets cost more, not less), so ``T`` cannot collapse; the smoothing is
``O(1 / n)`` and vanishes as labels accumulate, so a large calibration set
gets the plain maximum-likelihood temperature. We preferred it to a hard
floor such as ``T >= 1`` (arbitrary, and it leaves an over-confident head as
over-confident as it was) and to a Gaussian prior on ``log T`` (whose width
is a free knob with no data-driven value). The bounds
``[MIN_TEMPERATURE, MAX_TEMPERATURE]`` remain as a numerical safety net.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.floating]
IntArray = NDArray[np.integer]

# Searched on log T: a numerical safety net. With smoothed targets the optimum
# is finite (see the module docstring); plain maximum likelihood
# (``laplace=False``) on separable data still runs to MIN_TEMPERATURE.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0


def softmax(logits: FloatArray, temperature: float = 1.0) -> NDArray[np.float32]:
    """Row-wise softmax of ``logits / temperature`` as float32 ``(n, k)``."""
    z = np.asarray(logits, dtype=np.float32)
    if temperature != 1.0:
        z = z / np.float32(temperature)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def laplace_targets(y: IntArray, n_classes: int) -> NDArray[np.float64]:
    """Soft targets ``(n, n_classes)`` for calibration: Laplace's rule of succession.

    Row ``i`` gives its class ``y[i]`` the weight ``(n + 1) / (n + 2)`` and
    spreads ``1 / (n + 2)`` evenly over the *other classes present in* ``y``
    (a class without labels keeps 0: its logits may be the huge negative
    constant of an absent class). With a single class present the targets are
    one-hot.
    """
    labels = np.asarray(y, dtype=np.int64)
    n = len(labels)
    targets = np.zeros((n, n_classes), dtype=np.float64)
    present = np.unique(labels)
    if n == 0:
        return targets
    if len(present) < 2:
        targets[np.arange(n), labels] = 1.0
        return targets
    rest = 1.0 / (n + 2)
    targets[:, present] = rest / (len(present) - 1)
    targets[np.arange(n), labels] = 1.0 - rest
    return targets


def _nll(logits: NDArray[np.float64], targets: NDArray[np.float64], temperature: float) -> float:
    """Mean cross-entropy of ``softmax(logits / T)`` against (soft) ``targets``."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    # rows' targets sum to one: H = logsumexp(z) - sum_c t_c z_c
    return float(np.mean(log_norm - (targets * z).sum(axis=1)))


def fit_temperature(logits: FloatArray, y: IntArray, *, laplace: bool = True) -> float:
    """Temperature ``T > 0`` minimising the cross-entropy of ``softmax(logits / T)``.

    Fit it on out-of-fold ``logits`` ``(n, k)`` with true classes ``y`` ``(n,)``.
    With ``laplace`` (the default) the targets are :func:`laplace_targets`,
    so perfectly separated logits give a finite ``T`` (see the module
    docstring); ``laplace=False`` is plain maximum likelihood (one-hot
    targets). The objective is convex in ``1 / T``, hence unimodal in
    ``log T``: a golden-section search on ``log T`` over
    ``[MIN_TEMPERATURE, MAX_TEMPERATURE]`` finds it (to ~1e-5 relative).
    Dividing by ``T`` never changes the argmax. Returns 1.0 when there is
    nothing to fit (no rows, fewer than two columns or fewer than two classes
    in ``y``).
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(labels):
        raise ValueError(f"logits must be (n, k) matching y; got {z.shape} and {labels.shape}")
    if len(labels) == 0 or z.shape[1] < 2 or len(np.unique(labels)) < 2:
        return 1.0
    if laplace:
        targets = laplace_targets(labels, z.shape[1])
    else:
        targets = np.zeros(z.shape, dtype=np.float64)
        targets[np.arange(len(labels)), labels] = 1.0
    # absent-class logits (-1e4) have target 0 and add only exp(-huge) = 0 terms
    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa, fb = _nll(z, targets, math.exp(a)), _nll(z, targets, math.exp(b))
    while high - low > 1e-5:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = _nll(z, targets, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(z, targets, math.exp(b))
    return float(math.exp((low + high) / 2))


def temper_probs(probs: FloatArray, temperature: float) -> NDArray[np.float32]:
    """``softmax(log(probs) / temperature)``: temperature scaling for already-combined probs.

    Used on the ensemble's mean of member probabilities (whose "logits" are
    the log probabilities); keeps the argmax. Float32 ``(n, k)``.
    """
    p = np.asarray(probs, dtype=np.float32)
    if temperature == 1.0:
        return p.copy()
    return softmax(np.log(np.clip(p, 1e-30, None)), temperature)


def expected_calibration_error(probs: FloatArray, y: IntArray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over equal-width confidence bins of ``|acc - conf| * n_bin / n``.

    ``probs`` is ``(n, k)``; returns a float in ``[0, 1]`` (0.0 for no rows).
    """
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    # bin i holds (i/n_bins, (i+1)/n_bins]; confidence 0 goes to bin 0
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    conf_sum = np.bincount(bins, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    return float(np.abs(acc_sum - conf_sum).sum() / len(labels))


def conformal_threshold(oof_probs: FloatArray, y: IntArray, alpha: float = 0.1) -> float:
    """Split-conformal threshold ``qhat`` on the nonconformity ``1 - p_true``.

    ``qhat`` is the ``ceil((n + 1)(1 - alpha)) / n`` empirical quantile of the
    calibration scores (``oof_probs`` ``(n, k)`` with true classes ``y``), so that
    sets ``{c : p_c >= 1 - qhat}`` cover the true class with probability
    ``>= 1 - alpha`` on exchangeable data. Returns 1.0 (every class in every
    set) when ``n`` is too small for that level.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = np.asarray(oof_probs, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    n = len(labels)
    if n == 0:
        return 1.0
    scores = 1.0 - p[np.arange(n), labels]
    rank = math.ceil((n + 1) * (1.0 - alpha))  # level rank / n
    if rank > n:
        return 1.0
    # the rank-th smallest score exactly (np.quantile's (n - 1) convention can
    # land one order statistic higher, which only over-covers)
    return float(np.partition(scores, rank - 1)[rank - 1])


def prediction_sets(probs: FloatArray, qhat: float) -> NDArray[np.bool_]:
    """Boolean ``(n, k)`` matrix: class ``c`` is in item ``i``'s set when ``p_ic >= 1 - qhat``.

    Sets can be empty for items less confident than any calibration item
    (the standard "least ambiguous" construction does not force the argmax in).
    """
    p = np.asarray(probs)
    # small tolerance so float32 probabilities equal to the threshold stay in
    return p >= (1.0 - qhat) - 1e-6
