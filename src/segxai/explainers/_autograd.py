"""Autograd helpers shared by the gradient explainers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def vjp_many(scores: Sequence[Tensor], inputs: Sequence[Tensor], *,
             create_graph: bool) -> list[tuple[Tensor, ...]]:
    """Gradients of each scalar in ``scores`` w.r.t. ``inputs`` from one forward graph.

    Uses one batched vector-Jacobian product (``is_grads_batched``) when there are several
    scores, falling back to a loop with ``retain_graph`` if an operation cannot be batched.
    Returns one tuple of gradients (one per input) per score.
    """
    inputs = list(inputs)
    if len(scores) == 1:
        grads = torch.autograd.grad(scores[0], inputs, create_graph=create_graph)
        return [tuple(grads)]
    stacked = torch.stack(list(scores))
    if not create_graph:
        eye = torch.eye(len(scores), dtype=stacked.dtype, device=stacked.device)
        try:
            grads = torch.autograd.grad(stacked, inputs, grad_outputs=eye,
                                        is_grads_batched=True, retain_graph=True)
            return [tuple(g[k] for g in grads) for k in range(len(scores))]
        except RuntimeError:
            pass  # an op without a batching rule: loop below
    out = []
    for k, s in enumerate(scores):
        last = k == len(scores) - 1
        grads = torch.autograd.grad(s, inputs, retain_graph=create_graph or not last,
                                    create_graph=create_graph)
        out.append(tuple(grads))
    return out
