"""The MONAI UNet smoke test (tiny net, 32^3) and the segmenter registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai")

from loupe.features.voxels import voxel_features  # noqa: E402
from loupe.learn.unet3d import (  # noqa: E402
    SEGMENTERS,
    NnUNetSegmenter,
    UNetSegmenter,
    UNetState,
    predict_unet,
    train_unet,
)

TINY = {"channels": (8, 16, 32), "num_res_units": 1}


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(32, 32, 32)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[8:20, 10:24, 6:18] = 1
    mask[22:28, 4:12, 20:30] = 2
    image += mask * 2.0
    return image, mask


def test_unet_trains_and_predicts_the_image_shape(tmp_path: Path) -> None:
    image, mask = synthetic()
    messages: list[str] = []
    state = train_unet(
        [image],
        [mask],
        n_classes=3,
        patch=32,
        epochs=2,
        iterations=2,
        device="cpu",
        progress=lambda fraction, message: messages.append(message),
        **TINY,
    )
    assert len(state.history) == 2 and messages[-1].startswith("epoch 2/2")
    labels = predict_unet(state, image[:, :30, :28], roi=32, device="cpu")
    assert labels.shape == (32, 30, 28) and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}
    state.save(tmp_path / "unet.pt")
    again = UNetState.load(tmp_path / "unet.pt")
    np.testing.assert_array_equal(
        predict_unet(again, image, roi=32, device="cpu"),
        predict_unet(state, image, roi=32, device="cpu"),
    )


def test_validation_dice_per_epoch_and_an_early_stop() -> None:
    image, mask = synthetic()
    held_image, held_mask = synthetic(seed=1)
    seen: list[tuple[int, dict[str, object], int]] = []

    def after(epoch: int, entry: dict[str, object], snapshot: object) -> bool:
        state = snapshot()  # type: ignore[operator]
        seen.append((epoch, entry, len(state.history)))
        return epoch == 2  # stop after the second of five epochs

    state = train_unet(
        [image],
        [mask],
        n_classes=3,
        patch=32,
        epochs=5,
        iterations=2,
        device="cpu",
        validation=([held_image], [held_mask]),
        after_epoch=after,
        **TINY,
    )
    assert [e for e, _, _ in seen] == [1, 2] and len(state.history) == 2
    assert [n for _, _, n in seen] == [1, 2]  # the snapshot holds the epochs so far
    for entry in state.history:
        dice = entry["val_dice"]
        assert set(dice) <= {1, 2} and dice and all(0.0 <= d <= 1.0 for d in dice.values())


def test_training_stops_when_the_check_raises() -> None:
    image, mask = synthetic()

    def cancelled() -> None:
        raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError):
        train_unet([image], [mask], n_classes=3, patch=32, check=cancelled, **TINY)
    with pytest.raises(ValueError, match="labels"):
        train_unet([image], [mask], n_classes=2, patch=32, **TINY)
    with pytest.raises(ValueError, match="multiple of 4"):
        train_unet([image], [mask], n_classes=3, patch=30, **TINY)


def test_segmenter_registry() -> None:
    assert set(SEGMENTERS) == {"unet", "nnunet", "voxel-rf"}
    image, mask = synthetic()
    unet = UNetSegmenter(n_classes=3, patch=32, epochs=1, iterations=1, device="cpu", **TINY)
    unet.fit([image], [mask])
    assert unet.predict(image, roi=32, device="cpu").shape == image.shape

    forest = SEGMENTERS["voxel-rf"](featurize=voxel_features)  # type: ignore[call-arg]
    forest.fit([image], [mask])
    labels = forest.predict(image)
    assert labels.shape == image.shape and (labels == mask).mean() > 0.9

    nnunet = NnUNetSegmenter("/nonexistent/model")
    assert nnunet.info()["trains_here"] is False
    with pytest.raises(NotImplementedError, match="nnUNetv2_train"):
        nnunet.fit([image], [mask])
    with pytest.raises((ValueError, RuntimeError), match="nnU-Net"):
        nnunet.predict(image)
