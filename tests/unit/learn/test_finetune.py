from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from loupe.learn.augment import augment  # noqa: E402
from loupe.learn.crossval import stratified_folds  # noqa: E402
from loupe.learn.finetune import (  # noqa: E402
    compare_metrics,
    finetune,
    finetune_cv,
    last_stages,
    predict_finetuned,
)


def tiny_cnn() -> tuple[nn.Module, int]:
    """A small backbone (two conv "stages" + pooling), like build_torch_model's contract."""
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return body, 16


@pytest.fixture(scope="module")
def small_digits(digits):
    _, y, images = digits
    rng = np.random.default_rng(0)
    keep = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:12] for c in range(4)])
    return images[keep][..., None], y[keep]  # (48, 8, 8, 1) in [0, 1], 4 classes


def test_finetune_two_epochs_returns_a_loadable_state(small_digits):
    images, labels = small_digits
    result = finetune(tiny_cnn, images, labels, epochs=2, patience=5, lr=1e-3, batch_size=16)
    assert len(result.history) == 2 and result.device in {"cpu", "cuda"}
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(result.history[0])
    assert result.val_metrics is not None and result.val_metrics["n"] == len(result.val_index)
    assert result.best_epoch in (1, 2) and not result.stopped_early
    # only the last stage (16*8*9 + 16) and the head (16*4 + 4) train
    assert result.trainable_parameters == 16 * 8 * 9 + 16 + 16 * 4 + 4
    logits = predict_finetuned(tiny_cnn, result, images[:5], device="cpu")
    assert logits.shape == (5, 4) and logits.dtype == np.float32
    again = predict_finetuned(tiny_cnn, result, images[:5], device="cpu")
    np.testing.assert_array_equal(logits, again)


def test_finetune_stops_when_the_validation_loss_does_not_improve(small_digits):
    images, labels = small_digits
    calls = []
    # lr = 0: the weights never change, so the val loss never improves after epoch 1
    result = finetune(
        tiny_cnn,
        images,
        labels,
        epochs=10,
        patience=2,
        lr=0.0,
        head_lr=0.0,
        progress=lambda fraction, message: calls.append(fraction),
    )
    assert len(result.history) == 3 and result.stopped_early and result.best_epoch == 1
    assert calls == pytest.approx([0.1, 0.2, 0.3])


def test_finetune_is_deterministic(small_digits):
    images, labels = small_digits
    a = finetune(tiny_cnn, images, labels, epochs=2, lr=1e-3, seed=3, device="cpu")
    b = finetune(tiny_cnn, images, labels, epochs=2, lr=1e-3, seed=3, device="cpu")
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]


def test_augment_keeps_shape_and_range_and_changes_pixels():
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(16, 3, 8, 8)
    out = augment(batch, generator)
    assert out.shape == batch.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, batch)
    # non-square images are only rotated by 0 or 180 degrees: the shape never changes
    tall = torch.rand(8, 3, 6, 10)
    assert augment(tall, generator).shape == tall.shape


def test_last_stage_of_torchvision_mobilenet_v2():
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2(weights=None)
    extractor = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    (stage,) = last_stages(extractor)
    assert stage is model.features[-1]  # the final 320 -> 1280 conv block
    assert last_stages(extractor, 2)[0] is model.features[-2]


def test_finetune_cv_uses_the_frozen_heads_folds(small_digits):
    images, labels = small_digits
    names = ["0", "1", "2", "3"]
    result = finetune_cv(
        tiny_cnn, images, labels, class_names=names, max_splits=2, epochs=1, lr=1e-3
    )
    frozen_plan = stratified_folds(labels, seed=0, max_splits=2)
    np.testing.assert_array_equal(result.plan.fold, frozen_plan.fold)
    assert result.metrics is not None and result.logits.shape == (48, 4)
    frozen = {
        "accuracy": 0.9,
        "balanced_accuracy": 0.9,
        "ece_after": 0.05,
        "cv": frozen_plan.describe(),
    }
    comparison = compare_metrics(frozen, result.metrics)
    assert comparison["same_folds"] is True
    other = {**frozen, "cv": stratified_folds(labels, seed=1, max_splits=2).describe()}
    assert compare_metrics(other, result.metrics)["same_folds"] is False
    assert comparison["accuracy"]["delta"] == pytest.approx(result.metrics["accuracy"] - 0.9)


def test_a_cancel_stops_finetuning_within_a_batch(small_digits):
    """The check runs before every batch: raising there ends the run at once."""
    import threading
    import time

    images, labels = small_digits
    cancel = threading.Event()
    batches = 0

    class Cancelled(Exception):
        pass

    def check() -> None:
        nonlocal batches
        if cancel.is_set():
            raise Cancelled
        batches += 1
        if batches == 3:
            cancel.set()  # the user presses cancel during the first epoch

    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        finetune(tiny_cnn, images, labels, epochs=50, batch_size=4, check=check, device="cpu")
    assert batches == 3  # stopped at the next batch, not at the end of an epoch or run
    assert time.perf_counter() - t0 < 5
