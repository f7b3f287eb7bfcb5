"""Autograd helpers shared by the gradient explainers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def vjp_many(scores: Sequence[Tensor], inputs: Sequence[Tensor], *,
             create_graph: bool) -> list[tuple[Tensor, ...]]:
    """Gradients of each scalar in ``scores`` w.r.t. ``inputs``, all from one forward graph.

    One vector-Jacobian product per score, keeping the graph between them. A single batched
    product (``torch.autograd.grad(..., is_grads_batched=True)``) gives the same gradients but
    was measured slower on CPU (DeepLabV3-MobileNetV3, 256², 5 classes: 0.36 s vs 0.32 s for
    input gradients, 0.18 s vs 0.16 s for Seg-Grad-CAM), so it is not used.
    Returns one tuple of gradients (one per input) per score.
    """
    inputs = list(inputs)
    out = []
    for k, s in enumerate(scores):
        keep = create_graph or k < len(scores) - 1
        out.append(tuple(torch.autograd.grad(s, inputs, retain_graph=keep,
                                             create_graph=create_graph)))
    return out
