"""Training-time image tensors and augmentations for fine-tuning (torch imported lazily).

Suited to microscopy, where orientation carries no meaning: random horizontal
and vertical flips, random 90-degree rotations, and a small colour jitter
(brightness, contrast, saturation factors in ``[1 - JITTER, 1 + JITTER]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JITTER = 0.1


def images_to_tensor(images: NDArray[Any]) -> torch.Tensor:
    """``(n, H, W, C)`` uint8 / [0, 1] floats -> float32 ``(n, 3, H, W)`` in [0, 1]."""
    import torch

    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (n, H, W, C) with C in (1, 3), got {array.shape}")
    if array.dtype == np.uint8:
        data = array.astype(np.float32) / 255.0
    else:
        data = np.clip(array.astype(np.float32), 0.0, 1.0)
    tensor = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    return tensor.expand(-1, 3, -1, -1).contiguous() if tensor.shape[1] == 1 else tensor


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, 90-degree rotations (180 only for non-square images), colour jitter.

    ``batch`` is ``(B, 3, H, W)`` in [0, 1]; returns a new tensor in [0, 1].
    """
    import torch

    b = batch.shape[0]

    def draw(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(batch.device)

    x = batch.clone()
    for dims, mask in (((3,), draw(b) < 0.5), ((2,), draw(b) < 0.5)):
        if mask.any():
            x[mask] = x[mask].flip(dims)
    square = x.shape[2] == x.shape[3]
    turns = torch.randint(0, 4, (b,), generator=generator).to(batch.device)
    if not square:
        turns = (turns // 2) * 2
    for k in (1, 2, 3):
        mask = turns == k
        if mask.any():
            x[mask] = torch.rot90(x[mask], k, dims=(2, 3))

    def factor() -> torch.Tensor:
        return (1.0 + (draw(b) * 2 - 1) * JITTER).view(b, 1, 1, 1)

    x = x * factor()  # brightness
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * factor() + mean  # contrast
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - gray) * factor() + gray  # saturation
    return x.clamp_(0.0, 1.0)


def normalise_imagenet(x: torch.Tensor) -> torch.Tensor:
    import torch

    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
