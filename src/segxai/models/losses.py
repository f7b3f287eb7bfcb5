"""Composable loss terms of the training loop.

A loss term is a small object with a ``name``, a ``weight`` and a call
``term(batch, logits, context) -> scalar tensor``; the loop minimises
``Σ_terms weight · term(batch, logits, context)`` (terms of weight 0 are skipped, so they cost
nothing). The batch carries the images, the masks and any per-image extras (precomputed teacher
logits, ...); the context gives the model, the step and the epoch, for terms that need more
than the logits (saliency matching differentiates the student's CAM w.r.t. its parameters).
Terms that need explainers live in the layers that may import them (``segxai.nas``);
continual-learning terms (MiB) live in ``segxai.continual``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.errors import SegxaiError

__all__ = [
    "Batch",
    "KLDistillation",
    "LossTerm",
    "SegmentationLoss",
    "StepContext",
    "kl_distillation",
    "segmentation_loss",
]


@dataclass
class Batch:
    """One minibatch as the loss terms see it (after augmentation, on the device).

    Attributes:
        images: ``(N, C, H, W)``.
        masks: ``(N, H, W)`` class ids, or None (distillation-only data).
        extras: per-image tensors that travel with the images (e.g. ``"teacher_logits"``).
        ignore_index: the mask value to skip.
        cache: scratch space shared by the terms of one step (e.g. a teacher's logits).
    """

    images: Tensor
    masks: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    ignore_index: int = -100
    cache: dict[str, Any] = field(default_factory=dict)

    def teacher_logits(self, teacher: nn.Module) -> Tensor:
        """``teacher(images)`` without gradient, computed once per batch and teacher."""
        key = f"logits:{id(teacher)}"
        if key not in self.cache:
            with torch.no_grad():
                self.cache[key] = teacher(self.images)
        return self.cache[key]


@dataclass
class StepContext:
    """What a loss term may need besides the batch and the logits.

    Attributes:
        model: the network being trained (in train mode).
        forward: the call that produced the logits (``model`` or an adapter around it).
        epoch: 0-based epoch.
        step: 0-based step of the whole run.
    """

    model: nn.Module
    forward: Callable[[Tensor], Tensor]
    epoch: int
    step: int


@runtime_checkable
class LossTerm(Protocol):
    """A term of the training loss (see the module docstring)."""

    name: str
    weight: float

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor: ...

    def describe(self) -> dict[str, Any]:
        """Everything that determines the term's value (part of a run's settings)."""
        ...


def segmentation_loss(logits: Tensor, target: Tensor, kind: str = "ce+dice",
                      ignore_index: int = -100, classes: list[int] | None = None) -> Tensor:
    """Cross-entropy, optionally plus the soft Dice loss ``1 - (2|P∩G| + 1) / (|P| + |G| + 1)``
    averaged over the classes present in the batch's ground truth (or over ``classes``).

    Args:
        logits: ``(N, K, H, W)``.
        target: ``(N, H, W)`` class ids (``ignore_index`` pixels are skipped).
        kind: ``"ce"`` or ``"ce+dice"``.
        ignore_index: the target value to skip.
        classes: the classes the Dice term averages over (default: those present in
            ``target``); a listed class absent from the batch pushes its probabilities down.

    Returns:
        A scalar tensor.
    """
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index)
    if kind == "ce":
        return ce
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    prob = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).to(prob.dtype) * valid
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    if classes is not None:
        return ce + dice[list(classes)].mean()
    present = onehot.sum(dim=(0, 2, 3)) > 0
    return ce + dice[present].mean()


def kl_distillation(student_logits: Tensor, teacher_logits: Tensor,
                    temperature: float = 1.0) -> Tensor:
    """Pixel-wise distillation ``T² · mean_pixels KL(softmax(t/T) ‖ softmax(s/T))``
    (Hinton et al. 2015; the ``T²`` keeps the gradient scale independent of ``T``).

    Args:
        student_logits: ``(N, K, H, W)``.
        teacher_logits: ``(N, K, H, W)``.
        temperature: softmax temperature ``T > 0``.

    Returns:
        A scalar tensor.
    """
    t = float(temperature)
    target = F.softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=1), target, reduction="none").sum(1)
    return kl.mean() * (t * t)


@dataclass
class SegmentationLoss:
    """Cross-entropy with the batch's ignore index, plus Dice when ``kind="ce+dice"``
    (:func:`segmentation_loss`)."""

    kind: str = "ce+dice"
    weight: float = 1.0
    name: str = "segmentation"

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor:
        if batch.masks is None:
            raise SegxaiError("data: the segmentation loss needs masks")
        return segmentation_loss(logits, batch.masks, self.kind, batch.ignore_index)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight}


@dataclass
class KLDistillation:
    """Distillation towards a teacher's logits (:func:`kl_distillation`).

    The teacher's logits are the batch extra ``key`` when the data carries them (precomputed,
    as in few-shot NAS fitness), else ``teacher(images)`` on the augmented batch.
    """

    weight: float = 1.0
    temperature: float = 1.0
    teacher: nn.Module | None = None
    key: str = "teacher_logits"
    name: str = "kl"

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor:
        if self.key in batch.extras:
            teacher_logits = batch.extras[self.key]
        elif self.teacher is not None:
            teacher_logits = batch.teacher_logits(self.teacher)
        else:
            raise SegxaiError(f"teacher: the KL term needs a teacher or the batch extra "
                             f"{self.key!r}")
        return kl_distillation(logits, teacher_logits, self.temperature)

    def describe(self) -> dict[str, Any]:
        return {"weight": self.weight, "temperature": self.temperature}
