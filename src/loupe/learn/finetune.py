"""Fine-tune mode: unfreeze the last stage of a torch backbone, train it with a new linear head.

The seeds' ResNet-18 / MobileNetV2 recipe: Adam, early stopping on the loss of
a stratified validation split (the best epoch's weights are kept),
augmentations suited to microscopy (horizontal/vertical flips, 90-degree
rotations, small brightness/contrast/saturation jitter). Uses CUDA when there
is one. Everything torch is imported inside the functions.

``model_builder()`` returns ``(feature_extractor, feature_dim)``: an
``nn.Module`` mapping ``(B, 3, H, W)`` ImageNet-normalised images to
``(B, feature_dim)`` (or to ``(B, C, h, w)`` maps, which are average-pooled),
e.g. ``loupe.features.build_torch_model(name)``.

Images are ``(n, H, W, C)`` arrays (channel axis last, C = 3 or 1), uint8 or
floats in ``[0, 1]``, all of one size.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.augment import augment, images_to_tensor, normalise_imagenet
from loupe.learn.calibration import expected_calibration_error, fit_temperature, softmax
from loupe.learn.crossval import DEFAULT_SPLITS, FoldPlan, stratified_folds
from loupe.learn.metrics import classification_metrics

if TYPE_CHECKING:
    import torch
    from torch import nn

ModelBuilder = Callable[[], tuple["nn.Module", int]]
Progress = Callable[[float, str], None]

MIN_DELTA = 1e-4  # a validation loss must drop by this much to count as better


@dataclass
class FinetuneResult:
    """A fine-tuned model: weights (``torch.save`` of the state dict, as bytes) and its record."""

    state_dict: bytes
    n_classes: int
    feature_dim: int
    best_epoch: int  # 1-based; 0 when there was no validation split
    stopped_early: bool
    val_metrics: dict[str, Any] | None  # {"loss", "accuracy", "n"} at the best epoch
    history: list[dict[str, Any]]  # per epoch: epoch, train_loss, val_loss, val_accuracy, seconds
    device: str
    trainable_parameters: int
    val_index: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def resolve_device(device: str = "auto") -> str:
    """``"cuda"`` when ``device="auto"`` and a GPU is visible, else ``"cpu"``; others pass."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def last_stages(module: nn.Module, n_stages: int = 1) -> list[nn.Module]:
    """The last ``n_stages`` parameterised children at the backbone's "stage" level.

    Descends while a module has exactly one child with parameters (wrappers such
    as ``Sequential(features, pool)``), then takes the last children that have
    parameters: ``layer4`` of a ResNet, the final block of MobileNetV2's ``features``.
    """
    node = module
    while True:
        children = [c for c in node.children() if any(True for _ in c.parameters())]
        if len(children) != 1:
            break
        node = children[0]
    return children[-n_stages:] if children else [node]


def _assemble(model_builder: ModelBuilder, n_classes: int, sample: torch.Tensor) -> nn.Module:
    """Backbone (+ average pooling when it returns maps) + a new ``Linear(feature_dim, k)``."""
    import torch
    from torch import nn

    backbone, feature_dim = model_builder()
    backbone.eval()
    with torch.no_grad():
        out = backbone(sample[:1])
    parts: list[nn.Module] = [backbone]
    if out.ndim == 4:
        parts += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        out = out.mean(dim=(2, 3))
    if out.shape[1] != feature_dim:
        raise ValueError(
            f"model_builder said feature_dim={feature_dim}, backbone gives {out.shape}"
        )
    parts.append(nn.Linear(feature_dim, n_classes))
    return nn.Sequential(*parts)


def _val_split(labels: NDArray[np.int64], fraction: float, seed: int) -> NDArray[np.int64]:
    """Stratified validation indices: ``round(fraction * count)`` per class, one at least
    for classes with 2+ items, none for singletons."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < 2 or fraction <= 0:
            continue
        take = min(len(members) - 1, max(1, round(fraction * len(members))))
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def _evaluate(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: str, batch_size: int
) -> tuple[float, float, NDArray[np.float32]]:
    """Mean cross-entropy, accuracy and logits ``(n, k)`` without augmentation."""
    import torch
    import torch.nn.functional as F

    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = normalise_imagenet(images[start : start + batch_size].to(device))
            chunks.append(model(batch).float().cpu())
    logits = torch.cat(chunks)
    loss = float(F.cross_entropy(logits, labels).item())
    accuracy = float((logits.argmax(dim=1) == labels).float().mean().item())
    return loss, accuracy, logits.numpy()


def finetune(
    model_builder: ModelBuilder,
    train_images: NDArray[Any],
    train_labels: NDArray[np.integer],
    *,
    n_classes: int | None = None,
    val_fraction: float = 0.2,
    epochs: int = 20,
    patience: int = 3,
    lr: float = 1e-4,
    head_lr: float | None = None,
    batch_size: int = 32,
    unfreeze_stages: int = 1,
    seed: int = 0,
    device: str = "auto",
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
) -> FinetuneResult:
    """Fine-tune the last ``unfreeze_stages`` stage(s) of the backbone plus a new linear head.

    ``train_images`` ``(n, H, W, C)``, ``train_labels`` ``(n,)`` class indices.
    A stratified ``val_fraction`` of the items is held out; training stops when
    the validation loss has not improved for ``patience`` epochs and the best
    epoch's weights are returned. ``head_lr`` defaults to ``10 * lr`` (the head
    starts from scratch). ``progress(fraction, message)`` is called per epoch;
    ``check()`` before every batch: it stops the training by raising (a job's
    cancel check), so a cancel takes effect within one batch, not one run.
    """
    import torch
    import torch.nn.functional as F

    labels_np = np.asarray(train_labels, dtype=np.int64)
    images = images_to_tensor(train_images)
    if len(images) != len(labels_np) or len(labels_np) == 0:
        raise ValueError(f"train_images ({len(images)}) and train_labels must match and be > 0")
    if epochs < 1 or patience < 1 or batch_size < 1:
        raise ValueError("epochs, patience and batch_size must be >= 1")
    k = int(n_classes if n_classes is not None else labels_np.max() + 1)
    device = resolve_device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    model = _assemble(model_builder, k, images)
    backbone, head = model[0], model[-1]  # type: ignore[index]
    for parameter in backbone.parameters():
        parameter.requires_grad_(False)
    stages = last_stages(backbone, unfreeze_stages)
    stage_params = [p for stage in stages for p in stage.parameters()]
    for parameter in stage_params:
        parameter.requires_grad_(True)
    model.to(device)
    optimizer = torch.optim.Adam(
        [
            {"params": stage_params, "lr": lr},
            {"params": list(head.parameters()), "lr": head_lr if head_lr is not None else 10 * lr},
        ]
    )

    val_index = _val_split(labels_np, val_fraction, seed)
    train_index = np.setdiff1d(np.arange(len(labels_np)), val_index)
    labels = torch.from_numpy(labels_np)
    train_x, train_y = images[train_index], labels[train_index]
    val_x, val_y = images[val_index], labels[val_index]

    def set_train_mode() -> None:
        # frozen layers keep their BatchNorm statistics; only the unfrozen stage adapts
        model.eval()
        for stage in stages:
            stage.train()
        head.train()

    history: list[dict[str, Any]] = []
    best_loss, best_epoch, best_state = float("inf"), 0, None
    best_val: dict[str, Any] | None = None
    stale = 0
    stopped_early = False
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        set_train_mode()
        order = torch.randperm(len(train_x), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            if check is not None:
                check()
            index = order[start : start + batch_size]
            batch = normalise_imagenet(augment(train_x[index], generator).to(device))
            loss = F.cross_entropy(model(batch), train_y[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.item()) * len(index)
        entry: dict[str, Any] = {"epoch": epoch, "train_loss": total / max(1, len(order))}
        if len(val_x):
            val_loss, val_accuracy, _ = _evaluate(model, val_x, val_y, device, batch_size)
            entry.update(val_loss=val_loss, val_accuracy=val_accuracy)
            if val_loss < best_loss - MIN_DELTA:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy({k: v.cpu() for k, v in model.state_dict().items()})
                best_val = {"loss": val_loss, "accuracy": val_accuracy, "n": len(val_x)}
            else:
                stale += 1
        entry["seconds"] = time.perf_counter() - started
        history.append(entry)
        if progress is not None:
            progress(epoch / epochs, f"epoch {epoch}/{epochs}: " + _describe(entry))
        if len(val_x) and stale >= patience:
            stopped_early = epoch < epochs
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    return FinetuneResult(
        state_dict=buffer.getvalue(),
        n_classes=k,
        feature_dim=int(head.in_features),
        best_epoch=best_epoch,
        stopped_early=stopped_early,
        val_metrics=best_val,
        history=history,
        device=device,
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        val_index=val_index,
    )


def _describe(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if isinstance(v, float))


def predict_finetuned(
    model_builder: ModelBuilder,
    result: FinetuneResult,
    images: NDArray[Any],
    *,
    batch_size: int = 64,
    device: str = "auto",
) -> NDArray[np.float32]:
    """Logits ``(n, n_classes)`` float32 of a fine-tuned model on ``images`` ``(n, H, W, C)``."""
    import torch

    tensor = images_to_tensor(images)
    device = resolve_device(device)
    model = _assemble(model_builder, result.n_classes, tensor)
    state = torch.load(io.BytesIO(result.state_dict), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.to(device)
    dummy = torch.zeros(len(tensor), dtype=torch.long)
    return _evaluate(model, tensor, dummy, device, batch_size)[2]


@dataclass
class FinetuneCVResult:
    """Out-of-fold evaluation of fine-tuning on a :class:`FoldPlan` (the frozen heads' folds)."""

    plan: FoldPlan
    index: NDArray[np.int64]  # evaluated labelled rows
    logits: NDArray[np.float32]  # (n_eval, k) OOF logits
    temperature: float
    metrics: dict[str, Any] | None  # like cross_validate_classifier's metrics
    best_epochs: list[int]


def finetune_cv(
    model_builder: ModelBuilder,
    images: NDArray[Any],
    labels: NDArray[np.integer],
    *,
    class_names: Sequence[str],
    seed: int = 0,
    max_splits: int = DEFAULT_SPLITS,
    plan: FoldPlan | None = None,
    **finetune_options: Any,
) -> FinetuneCVResult:
    """Fine-tune on each fold's training part, predict its held-out part, score the OOF logits.

    The default plan is ``stratified_folds(labels, seed=seed, max_splits=max_splits)``:
    the same folds :func:`loupe.learn.train.train_classifier_ensemble` uses, so
    the two versions' metrics compare like for like (see :func:`compare_metrics`).
    ``finetune_options`` go to :func:`finetune` (epochs, patience, lr, ...).
    """
    y = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    if plan is None:
        plan = stratified_folds(y, seed=seed, max_splits=max_splits, class_names=class_names)
    oof = np.zeros((len(y), k), dtype=np.float32)
    best_epochs = []
    for train, test in plan.splits():
        result = finetune(
            model_builder, images[train], y[train], n_classes=k, seed=seed, **finetune_options
        )
        best_epochs.append(result.best_epoch)
        oof[test] = predict_finetuned(
            model_builder, result, images[test], device=finetune_options.get("device", "auto")
        )
    index = np.flatnonzero(plan.evaluated)
    if plan.n_splits == 0:
        return FinetuneCVResult(plan, index, oof[index], 1.0, None, best_epochs)
    logits, truth = oof[index], y[index]
    temperature = fit_temperature(logits, truth)
    probs = softmax(logits, temperature)
    metrics = classification_metrics(truth, probs.argmax(axis=1), probs, class_names)
    metrics.update(
        ece_before=expected_calibration_error(softmax(logits), truth),
        ece_after=metrics["ece"],
        temperature=temperature,
        cv=plan.describe(),
    )
    return FinetuneCVResult(plan, index, logits, temperature, metrics, best_epochs)


def compare_metrics(frozen: dict[str, Any], finetuned: dict[str, Any]) -> dict[str, Any]:
    """Side by side ``{metric: {"frozen", "finetuned", "delta"}}`` for accuracy, balanced
    accuracy and ECE of two OOF metric dicts computed on the same folds."""
    out: dict[str, Any] = {}
    for key in ("accuracy", "balanced_accuracy", "ece_after"):
        a, b = frozen.get(key), finetuned.get(key)
        out[key] = {
            "frozen": a,
            "finetuned": b,
            "delta": None if a is None or b is None else float(b) - float(a),
        }
    fingerprints = [(m.get("cv") or {}).get("fingerprint") for m in (frozen, finetuned)]
    out["same_folds"] = fingerprints[0] is not None and fingerprints[0] == fingerprints[1]
    return out
