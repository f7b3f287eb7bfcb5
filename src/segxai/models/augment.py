"""The training augmentation: random flips and transposes (the 8 symmetries of the square)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["flip_augment"]


def flip_augment(tensors: list[Tensor], g: torch.Generator) -> list[Tensor]:
    """Flip and transpose every image of a batch at random, the same way in every tensor.

    Per image three coin flips are drawn from ``g``: horizontal flip, vertical flip, transpose
    (the last only for square images); together they reach all 8 symmetries of the square.

    Args:
        tensors: tensors sharing the batch dimension and the last two (spatial) dimensions,
            e.g. ``[images (N, C, H, W), masks (N, H, W), teacher_logits (N, K, H, W)]``.
        g: the epoch's generator.

    Returns:
        New tensors (the inputs are not modified).
    """
    n = tensors[0].shape[0]
    flips = torch.rand(n, 3, generator=g) < 0.5
    out = [t.clone() for t in tensors]
    for axis, dim in ((0, -1), (1, -2)):
        sel = flips[:, axis]
        if sel.any():
            for t in out:
                t[sel] = t[sel].flip(dim)
    sel = flips[:, 2]
    square = tensors[0].shape[-1] == tensors[0].shape[-2]
    if sel.any() and square:
        for t in out:
            t[sel] = t[sel].transpose(-1, -2)
    return out
