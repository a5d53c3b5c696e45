"""Automatic 3-D segmentation: a MONAI UNet trained on finished masks, plus the segmenter registry.

The UNet is MONAI's ``UNet`` with a strided first layer (4.8 M parameters with the
default channels): cheap enough to retrain on a 2-core CPU from 64^3 patches, and to
predict a 256^3 volume by sliding-window inference with a 96^3 ROI. A GPU is used
when present. torch and monai are imported inside the functions.

:data:`SEGMENTERS` maps a name to a :class:`Segmenter` class with ``fit`` / ``predict``
on (z, y, x) arrays: ``unet`` (this module), ``nnunet`` (a trained nnU-Net v2 model
folder, run by nnunetv2's own predictor) and ``voxel-rf`` (the interactive voxel
classifier, here fitted on finished masks).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Progress = Callable[[float, str], None]
DEFAULT_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)


@dataclass
class UNetState:
    """A trained UNet: its architecture, weights (``torch.save`` bytes) and record."""

    n_classes: int
    channels: tuple[int, ...]
    num_res_units: int
    weights: bytes = field(repr=False)
    history: list[dict[str, Any]] = field(
        default_factory=list
    )  # per epoch: loss, seconds, val_dice
    device: str = "cpu"

    def save(self, path: str | Path) -> None:
        """Write the state as one ``torch.save`` file (weights_only loadable)."""
        import torch

        torch.save(
            {
                "n_classes": self.n_classes,
                "channels": list(self.channels),
                "num_res_units": self.num_res_units,
                "weights": self.weights,
                "history": self.history,
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: str | Path) -> UNetState:
        import torch

        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        return cls(
            n_classes=int(data["n_classes"]),
            channels=tuple(int(c) for c in data["channels"]),
            num_res_units=int(data["num_res_units"]),
            weights=bytes(data["weights"]),
            history=list(data["history"]),
        )


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` for ``"auto"`` when a GPU is visible, else ``"cpu"``; others pass."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def build_unet(
    n_classes: int, *, channels: Sequence[int] = DEFAULT_CHANNELS, num_res_units: int = 2
) -> Any:
    """MONAI's 3-D ``UNet`` (one input channel); every level, the first included, strides by 2."""
    from monai.networks.nets import UNet

    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background + classes), got {n_classes}")
    if len(channels) < 2:
        raise ValueError(f"channels needs at least two levels, got {tuple(channels)}")
    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=n_classes,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
    )


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """float32 z-score of ``image`` after clipping to its 0.5..99.5 percentiles."""
    array = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(array[::2, ::2, ::2], [0.5, 99.5])
    clipped = np.clip(array, np.float32(low), np.float32(high))
    std = float(clipped.std())
    normalised = (clipped - np.float32(clipped.mean())) / np.float32(std if std > 0 else 1.0)
    return normalised.astype(np.float32, copy=False)


def _pad_to(array: np.ndarray, size: int) -> np.ndarray:
    pads = [(0, max(0, size - n)) for n in array.shape]
    return np.pad(array, pads, mode="edge") if any(p for _, p in pads) else array


def _patch_sampler(
    images: list[np.ndarray], masks: list[np.ndarray], patch: int, fg_fraction: float, seed: int
) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A function returning one random (image, mask) patch; ``fg_fraction`` of them are
    centred on a labelled voxel (nnU-Net's foreground oversampling)."""
    rng = np.random.default_rng(seed)
    foreground = []
    for mask in masks:
        where = np.argwhere(mask > 0)
        if len(where) > 20000:
            where = where[rng.choice(len(where), 20000, replace=False)]
        foreground.append(where)

    def sample() -> tuple[np.ndarray, np.ndarray]:
        index = int(rng.integers(len(images)))
        image, mask, fg = images[index], masks[index], foreground[index]
        limits = np.asarray(image.shape) - patch
        if len(fg) and rng.random() < fg_fraction:
            centre = fg[int(rng.integers(len(fg)))]
            corner = np.clip(centre - patch // 2, 0, limits)
        else:
            corner = np.array([int(rng.integers(n + 1)) for n in limits])
        box = tuple(slice(int(c), int(c) + patch) for c in corner)
        return image[box], mask[box]

    return sample


def train_unet(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    *,
    n_classes: int,
    patch: int = 64,
    epochs: int = 10,
    iterations: int = 50,
    batch_size: int = 2,
    lr: float = 1e-3,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    num_res_units: int = 2,
    fg_fraction: float = 0.33,
    seed: int = 0,
    device: str = "auto",
    init: UNetState | None = None,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
    validation: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    val_patches: int = 4,
    after_epoch: Callable[[int, dict[str, Any], Callable[[], UNetState]], bool] | None = None,
    augment: bool = True,
) -> UNetState:
    """Train a UNet on (z, y, x) images and their finished masks (labels 0..n_classes-1).

    Each epoch is ``iterations`` steps of ``batch_size`` random ``patch``^3 patches
    (Dice + cross-entropy loss, AdamW). ``init`` continues from a previous state.
    ``progress(fraction, message)`` is called per epoch; ``check()`` before every step
    (a job's cancel check raises), so a cancel takes effect within one step.
    ``validation`` (held-out images and masks): after every epoch the Dice per class
    on ``val_patches`` fixed patches of them (foreground-centred) goes into the
    epoch's history entry (``val_dice``) and the progress message, for a live curve;
    the final whole-volume validation is the caller's. ``after_epoch(epoch, entry,
    snapshot)`` runs after each epoch (``snapshot()`` gives the weights so far, e.g. to
    validate on whole volumes); returning True ends the training there (early stop).
    ``augment``: each training patch is mirrored along each axis with probability 1/2
    and its intensity scaled (x0.9-1.1) and shifted (+-0.1 SD), as nnU-Net does, so a
    few corrected volumes are not learnt by heart.
    """
    import torch
    from monai.losses import DiceCELoss

    if len(images) != len(masks) or not images:
        raise ValueError(f"images ({len(images)}) and masks ({len(masks)}) must match and be > 0")
    if epochs < 1 or iterations < 1 or batch_size < 1 or patch < 16:
        raise ValueError("epochs, iterations, batch_size must be >= 1 and patch >= 16")
    stride = 2 ** (len(channels) - 1)
    if patch % stride:
        raise ValueError(f"patch must be a multiple of {stride} for {len(channels)} levels")
    prepared_images, prepared_masks = [], []
    for image, mask in zip(images, masks, strict=True):
        if np.shape(image) != np.shape(mask) or np.ndim(image) != 3:
            raise ValueError(f"image {np.shape(image)} and mask {np.shape(mask)} must be equal 3-D")
        labels = np.asarray(mask)
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(f"mask labels must lie in 0..{n_classes - 1}")
        prepared_images.append(_pad_to(normalise_intensity(image), patch))
        prepared_masks.append(_pad_to(labels.astype(np.int64), patch))
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = build_unet(n_classes, channels=channels, num_res_units=num_res_units)
    if init is not None:
        model.load_state_dict(torch.load(io.BytesIO(init.weights), weights_only=True))
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=0.9)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    sample = _patch_sampler(prepared_images, prepared_masks, patch, fg_fraction, seed)
    augment_rng = np.random.default_rng(seed + 2)
    history: list[dict[str, Any]] = list(init.history) if init is not None else []

    def snapshot() -> UNetState:
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
        weights = buffer.getvalue()
        return UNetState(n_classes, tuple(channels), num_res_units, weights, list(history), device)

    val_x = val_y = None
    if validation is not None and len(validation[0]):
        draw = _patch_sampler(
            [_pad_to(normalise_intensity(i), patch) for i in validation[0]],
            [_pad_to(np.asarray(m).astype(np.int64), patch) for m in validation[1]],
            patch,
            1.0,
            seed + 1,
        )
        pairs = [draw() for _ in range(max(1, val_patches))]
        val_x = np.stack([p[0] for p in pairs])[:, None]
        val_y = np.stack([p[1] for p in pairs])
    model.train()
    for epoch in range(1, epochs + 1):
        started, total = time.perf_counter(), 0.0
        for _ in range(iterations):
            if check is not None:
                check()
            pairs = [sample() for _ in range(batch_size)]
            if augment:
                pairs = [_augmented(p, augment_rng) for p in pairs]
            x = torch.from_numpy(np.stack([p[0] for p in pairs])[:, None]).to(device)
            y = torch.from_numpy(np.stack([p[1] for p in pairs])[:, None]).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        scheduler.step()
        entry: dict[str, Any] = {
            "loss": total / iterations,
            "seconds": time.perf_counter() - started,
        }
        message = f"epoch {epoch}/{epochs}: loss {entry['loss']:.4f}"
        if val_x is not None and val_y is not None:
            entry["val_dice"] = _patch_dice(model, val_x, val_y, n_classes, device)
            if entry["val_dice"]:
                mean = float(np.mean(list(entry["val_dice"].values())))
                message += f", val Dice {mean:.4f}"
        history.append(entry)
        if progress is not None:
            progress(epoch / epochs, message)
        if after_epoch is not None and after_epoch(epoch, entry, snapshot):
            break
    return snapshot()


def _augmented(
    pair: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A training patch mirrored along random axes, its intensity scaled and shifted."""
    image, mask = pair
    axes = tuple(a for a in range(3) if rng.random() < 0.5)
    if axes:
        image, mask = np.flip(image, axes), np.flip(mask, axes)
    scale, shift = rng.uniform(0.9, 1.1), rng.uniform(-0.1, 0.1)
    out = (image * np.float32(scale) + np.float32(shift)).astype(np.float32, copy=False)
    return np.ascontiguousarray(out), np.ascontiguousarray(mask)


def _patch_dice(
    model: Any, x: np.ndarray, y: np.ndarray, n_classes: int, device: str
) -> dict[int, float]:
    """Dice per class (1..n_classes-1, those present in ``y`` or predicted) on patches."""
    import torch

    model.eval()
    try:
        with torch.inference_mode():
            pred = torch.argmax(model(torch.from_numpy(x).to(device)), dim=1).cpu().numpy()
    finally:
        model.train()
    out = {}
    for c in range(1, n_classes):
        p, t = pred == c, y == c
        denominator = int(p.sum()) + int(t.sum())
        if denominator:
            out[c] = round(2.0 * int((p & t).sum()) / denominator, 4)
    return out


def predict_unet(
    state: UNetState,
    image: np.ndarray,
    *,
    roi: int = 96,
    overlap: float = 0.125,
    device: str = "auto",
    sw_batch_size: int = 1,
) -> np.ndarray:
    """Labels (z, y, x) uint8 of ``image`` by sliding-window inference with a ``roi``^3 window
    (Gaussian-weighted blending of overlapping windows)."""
    import torch
    from monai.inferers import sliding_window_inference

    if np.ndim(image) != 3:
        raise ValueError(f"image must be 3-D (z, y, x), got shape {np.shape(image)}")
    device = resolve_device(device)
    model = build_unet(state.n_classes, channels=state.channels, num_res_units=state.num_res_units)
    model.load_state_dict(torch.load(io.BytesIO(state.weights), weights_only=True))
    model.to(device).eval()
    x = torch.from_numpy(normalise_intensity(image)[None, None]).to(device)
    with torch.inference_mode():
        logits = sliding_window_inference(
            x,
            roi_size=(roi,) * 3,
            sw_batch_size=sw_batch_size,
            predictor=model,
            overlap=overlap,
            mode="gaussian",
        )
        labels = torch.argmax(torch.as_tensor(logits), dim=1)[0]
    dtype = np.uint8 if state.n_classes <= 256 else np.int16
    return labels.to("cpu").numpy().astype(dtype)


# --- the segmenter registry -----------------------------------------------------------


class Segmenter(ABC):
    """An automatic 3-D segmenter: ``fit`` on images + finished masks, ``predict`` labels."""

    name: ClassVar[str]
    title: ClassVar[str]
    trains_here: ClassVar[bool] = True  # False: trained elsewhere, only predicts here

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "trains_here": self.trains_here}

    @abstractmethod
    def fit(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], **options: Any
    ) -> None:
        """Train on (z, y, x) images and masks of labels 0..n_classes-1."""

    @abstractmethod
    def predict(self, image: np.ndarray, **options: Any) -> np.ndarray:
        """(z, y, x) integer labels of ``image``."""


class UNetSegmenter(Segmenter):
    name = "unet"
    title = "MONAI 3-D UNet"

    def __init__(self, *, n_classes: int, state: UNetState | None = None, **train: Any) -> None:
        self.n_classes, self.state, self.train_options = n_classes, state, train

    def fit(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], **options: Any
    ) -> None:
        settings = {**self.train_options, **options}
        self.state = train_unet(images, masks, n_classes=self.n_classes, **settings)

    def predict(self, image: np.ndarray, **options: Any) -> np.ndarray:
        if self.state is None:
            raise ValueError("the UNet is not trained yet")
        return predict_unet(self.state, image, **options)


def nnunet_command(name: str) -> str | None:
    """Path of an nnunetv2 console script (next to this Python first, then on PATH)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name)


class NnUNetSegmenter(Segmenter):
    """A trained nnU-Net v2 model folder (``nnUNet_results/DatasetXXX/<trainer>__<plans>__<cfg>``),
    run by nnunetv2's predictor (``nnUNetv2_predict_from_modelfolder``)."""

    name = "nnunet"
    title = "nnU-Net v2 (trained model folder)"
    trains_here = False

    def __init__(
        self, model_folder: str | Path, *, folds: Sequence[int | str] = (0,), device: str = "cpu"
    ) -> None:
        self.model_folder, self.folds, self.device = Path(model_folder), tuple(folds), device

    def fit(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], **options: Any
    ) -> None:
        raise NotImplementedError(
            "nnU-Net trains outside Loupe: export the nnU-Net raw dataset, run "
            "nnUNetv2_plan_and_preprocess and nnUNetv2_train (on a GPU machine), then point "
            "this segmenter at the trained model folder"
        )

    def predict_files(self, input_dir: Path, output_dir: Path, *, timeout: float = 3600) -> None:
        """Predict every ``<case>_0000.nii.gz`` in ``input_dir`` into ``output_dir``."""
        command = nnunet_command("nnUNetv2_predict_from_modelfolder")
        if command is None:
            raise RuntimeError(
                "nnU-Net v2 is not installed here (pip install nnunetv2); "
                "the 'nnunet' segmenter needs it"
            )
        if not (self.model_folder / "plans.json").exists():
            raise ValueError(f"{self.model_folder} is not a trained nnU-Net model folder")
        args = [command, "-i", str(input_dir), "-o", str(output_dir), "-m", str(self.model_folder)]
        args += ["-f", *map(str, self.folds), "-device", self.device]
        env = {**os.environ, "nnUNet_raw": os.environ.get("nnUNet_raw", str(input_dir))}
        env.setdefault("nnUNet_preprocessed", str(output_dir))
        env.setdefault("nnUNet_results", str(self.model_folder.parent))
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"nnUNetv2 prediction failed: {done.stderr[-2000:]}")

    def predict(
        self, image: np.ndarray, *, affine: np.ndarray | None = None, **options: Any
    ) -> np.ndarray:
        import nibabel as nib

        grid = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        with tempfile.TemporaryDirectory(prefix="loupe-nnunet-") as tmp:
            inputs, outputs = Path(tmp, "in"), Path(tmp, "out")
            inputs.mkdir()
            data = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 1, 0))
            nib.save(nib.Nifti1Image(data, grid), inputs / "case_0000.nii.gz")
            self.predict_files(inputs, outputs, **options)
            predicted: Any = nib.load(outputs / "case.nii.gz")
            result = np.asanyarray(predicted.dataobj)
        return np.ascontiguousarray(result.transpose(2, 1, 0)).astype(np.uint8)


class VoxelForestSegmenter(Segmenter):
    """The interactive voxel classifier fitted on voxels sampled from finished masks.

    ``featurize`` maps a (z, y, x) volume to (z, y, x, F) features; it is injected
    (e.g. :func:`loupe.features.voxels.voxel_features`) because learn/ does not import
    features/.
    """

    name = "voxel-rf"
    title = "Voxel random forest (filter bank)"

    def __init__(
        self, *, featurize: Callable[[np.ndarray], np.ndarray], per_class: int = 5000, seed: int = 0
    ) -> None:
        from loupe.learn.voxel_classifier import VoxelClassifier

        self.featurize, self.per_class, self.seed = featurize, per_class, seed
        self.classifier = VoxelClassifier(n_jobs=2, seed=seed)

    def fit(
        self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], **options: Any
    ) -> None:
        rng = np.random.default_rng(self.seed)
        samples, values = [], []
        for image, mask in zip(images, masks, strict=True):
            features = self.featurize(image)
            for label in np.unique(mask):
                where = np.argwhere(mask == label)
                if len(where) > self.per_class:
                    where = where[rng.choice(len(where), self.per_class, replace=False)]
                samples.append(features[where[:, 0], where[:, 1], where[:, 2]])
                values.append(np.full(len(where), label))
        flat = np.concatenate(samples)[:, None, None, :]  # (N, 1, 1, F): one "volume"
        points = np.stack([np.arange(len(flat)), np.zeros(len(flat)), np.zeros(len(flat))], 1)
        self.classifier.fit(flat, points.astype(np.int64), np.concatenate(values))

    def predict(self, image: np.ndarray, **options: Any) -> np.ndarray:
        return self.classifier.predict_volume(self.featurize(image), **options)


SEGMENTERS: dict[str, type[Segmenter]] = {
    UNetSegmenter.name: UNetSegmenter,
    NnUNetSegmenter.name: NnUNetSegmenter,
    VoxelForestSegmenter.name: VoxelForestSegmenter,
}
