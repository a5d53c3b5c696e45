"""Epoch-wise pixel heads: they learn, validate per class, fold into raw features, save."""

from __future__ import annotations

import numpy as np
import pytest

from loupe.features.pixels import pixel_features
from loupe.learn.pixel_epochs import EpochTrainer, FittedPixelHead, split_validation
from loupe.learn.pixel_heads import empty_labels, rasterize_clicks, training_set


def _coins_set(coins: np.ndarray) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    from skimage.filters import threshold_otsu

    truth = (coins > threshold_otsu(coins)).astype(np.int64)
    features = pixel_features(coins, "filters")
    rng = np.random.default_rng(0)
    labels = empty_labels(coins.shape)
    for value in (0, 1):
        rows, cols = np.nonzero(truth == value)
        pick = rng.choice(len(rows), 30, replace=False)
        rasterize_clicks(labels, rows[pick], cols[pick], np.full(30, value))
    X, y = training_set(features, labels)
    return features, X, y, truth


def test_split_is_stratified_and_keeps_rare_classes_in_training() -> None:
    y = np.array([0] * 50 + [1] * 50 + [2] * 3)
    train, val = split_validation(y, 0.2, seed=1)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(y)
    assert np.bincount(y[val], minlength=3).tolist() == [10, 10, 0]


@pytest.mark.parametrize("head", ["logistic", "mlp"])
def test_epochs_reduce_loss_and_the_folded_head_segments_coins(
    coins: np.ndarray, head: str
) -> None:
    features, X, y, truth = _coins_set(coins)
    trainer = EpochTrainer(X, y, head=head, seed=0)
    first = trainer.epoch()
    for _ in range(15):
        last = trainer.epoch()
    assert last.val_loss < first.val_loss
    assert set(last.dice) == {0, 1} and last.mean_dice > 0.9
    fitted = trainer.head()
    # the folded head gives the trainer's own probabilities on raw features
    vectors = fitted.predict_proba_vectors(X[:50])
    logits, _ = trainer._forward(trainer.Z[:50])
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    pred = fitted.predict(features)
    from loupe.features.grids import upsample_to_pixels

    full = upsample_to_pixels(pred.astype(np.float32), features.stride, coins.shape) > 0.5
    dice = 2 * np.sum(full & (truth == 1)) / (full.sum() + truth.sum())
    assert dice > 0.8  # Otsu is a rough reference: dark coin interiors
    again = FittedPixelHead.from_arrays(fitted.arrays())
    np.testing.assert_array_equal(again.predict(features), pred)


def test_restore_brings_back_the_best_state(coins: np.ndarray) -> None:
    _features, X, y, _truth = _coins_set(coins)
    trainer = EpochTrainer(X, y)
    trainer.epoch()
    state = trainer.state()
    before = trainer.validate().val_loss
    for _ in range(3):
        trainer.epoch()
    trainer.restore(state)
    assert trainer.validate().val_loss == pytest.approx(before)


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="two classes"):
        EpochTrainer(np.zeros((10, 3)), np.zeros(10))
    with pytest.raises(ValueError, match="head"):
        EpochTrainer(np.zeros((10, 3)), np.arange(10) % 2, head="forest")


def test_groups_go_wholly_to_one_side() -> None:
    y = np.repeat([0, 1], 50)
    groups = np.repeat(np.arange(10), 10)  # 5 groups per class
    train, val = split_validation(y, 0.2, seed=3, groups=groups)
    assert set(groups[train]).isdisjoint(groups[val])
    assert sorted(np.unique(y[val]).tolist()) == [0, 1]
    # two groups only: split by pixel instead
    few = np.repeat([0, 1], 50)
    train, val = split_validation(y, 0.2, groups=few)
    assert len(val) == 20
