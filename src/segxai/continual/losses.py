"""The continual learner's pieces for the one training loop: seen-class masking, the MiB
unbiased distillation and initialisation (Cermelli et al., CVPR 2020), and replay mixing.

Head: the network has one logit per class of the whole dataset from the start, and the logits
of classes not seen yet are masked (set to a large negative value) in the loss and at
prediction. This is equivalent to a head that grows by one output per new class (the masked
outputs receive no gradient from the cross-entropy and never win the argmax).

MiB: the new classes' head rows are initialised from the background row with bias
``b_bg − log(N_new + 1)``; the unbiased distillation term is
``−mean_pixels (1/|O|) Σ_{c ∈ O} q_c log p̃_c`` with ``O`` the old classes (background
included), ``q`` the old model's softmax over ``O``, ``p̃_bg = Σ_{c ∈ {bg} ∪ new} p_c`` and
``p̃_c = p_c`` otherwise; the unbiased cross-entropy scores a background label with
``log Σ_{c ∈ B} p_c`` where ``B`` is the set of classes a background pixel may stand for
(MiB: background and the old classes).

Partial labels (:func:`unbiased_cross_entropy`): every image carries ``bg_set``, the classes
its background label may stand for. Current images: ``{0}`` (plain) or ``{0} ∪ old`` (MiB).
A replayed exemplar stored in task ``s`` knows only task ``s``'s classes (and any pseudo
label written into it), so its background may be any other seen class: ``{0} ∪ (seen − known)``.
A replayed exemplar therefore never teaches a later-learned class as background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segxai.core.errors import SegxaiError
from segxai.models.losses import Batch, StepContext, segmentation_loss

__all__ = ["BG_SET", "IGNORE", "MASK_VALUE", "ReplayMix", "SeenClassLoss",
           "UnbiasedDistillation", "bg_sets", "masked_logits", "mib_init", "partial_dice",
           "seen_loss",
           "unbiased_cross_entropy", "unbiased_distillation"]

MASK_VALUE = -1.0e4
IGNORE = 255
BG_SET = "bg_set"
"""Key of the per-image ``(N, K)`` bool extra: classes a background label may stand for."""


def masked_logits(logits: Tensor, seen: Sequence[int]) -> Tensor:
    """Logits with every class not in ``seen`` set to :data:`MASK_VALUE`."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[list(seen)] = True
    return logits.masked_fill(~keep.view(1, -1, 1, 1), MASK_VALUE)


def seen_loss(logits: Tensor, target: Tensor, seen: Sequence[int], *,
              dice: bool = True) -> Tensor:
    """Cross-entropy over the seen classes (ignore 255), plus the soft Dice loss
    ``1 − (2 Σ p_c g_c + 1) / (Σ p_c + Σ g_c + 1)`` averaged over the seen classes.

    Args:
        logits: ``(N, K, H, W)`` raw logits.
        target: ``(N, H, W)`` labels (255 = ignore).
        seen: the classes not masked.
        dice: add the Dice term (it counters the dominance of background pixels).

    Returns:
        Scalar loss.
    """
    return segmentation_loss(masked_logits(logits, seen), target, "ce+dice" if dice else "ce",
                             IGNORE, classes=list(seen))


def bg_sets(n: int, num_classes: int, classes: Sequence[int]) -> Tensor:
    """``(n, num_classes)`` bool rows marking ``{0} ∪ classes`` (one row per image)."""
    row = torch.zeros(num_classes, dtype=torch.bool)
    row[[0, *(int(c) for c in classes)]] = True
    return row.unsqueeze(0).repeat(n, 1)


def unbiased_cross_entropy(logits: Tensor, target: Tensor, seen: Sequence[int],
                           bg_set: Tensor, ignore_index: int = IGNORE) -> Tensor:
    """Cross-entropy over the seen classes where a background label (0) is a partial label.

    ``log p(label) = z_label − lse(z_seen)`` for a foreground label and
    ``lse(z_{B_i ∩ seen}) − lse(z_seen)`` for background, ``B_i = bg_set[i]`` (MiB's unbiased
    cross-entropy when ``B = {0} ∪ old``; plain masked cross-entropy when ``B = {0}``). Mean of
    ``−log p`` over the pixels that are not ``ignore_index``.

    Args:
        logits: ``(N, K, H, W)`` raw logits.
        target: ``(N, H, W)`` labels.
        seen: classes not masked.
        bg_set: ``(N, K)`` bool: the classes a background pixel of image ``i`` may be
            (background itself is always included).
        ignore_index: label to skip.

    Returns:
        Scalar loss.
    """
    z = masked_logits(logits, seen)
    logz = torch.logsumexp(z, dim=1)
    allowed = torch.zeros(bg_set.shape[0], z.shape[1], dtype=torch.bool, device=z.device)
    width = min(int(bg_set.shape[1]), z.shape[1])
    allowed[:, :width] = bg_set[:, :width].to(device=z.device, dtype=torch.bool)
    allowed[:, 0] = True
    log_bg = torch.logsumexp(z.masked_fill(~allowed[:, :, None, None], MASK_VALUE), dim=1)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).clamp(0, z.shape[1] - 1)
    z_label = z.gather(1, safe.unsqueeze(1)).squeeze(1)
    log_p = torch.where(safe == 0, log_bg, z_label) - logz
    if not bool(valid.any()):
        return logits.sum() * 0.0
    return -log_p[valid].mean()


def partial_dice(logits: Tensor, target: Tensor, seen: Sequence[int], bg_set: Tensor,
                 ignore_index: int = IGNORE) -> Tensor:
    """Soft Dice over the seen classes, counting only the label entries that are known.

    The Dice loss of :func:`seen_loss` (``1 − (2 Σ p_c g_c + 1) / (Σ p_c + Σ g_c + 1)``, mean
    over the seen classes) with partial labels: a background pixel of image ``i`` whose
    ``B_i = bg_set[i] ∩ seen`` holds more than background is *known not to be* any class
    outside ``B_i`` (so its ``p_c`` counts as a false positive of those classes) and unknown
    for the classes in ``B_i`` (left out of their sums). With ``B_i = {0}`` everywhere this is
    the Dice term of :func:`seen_loss` exactly.

    Args:
        logits: ``(N, K, H, W)`` raw logits.
        target: ``(N, H, W)`` labels.
        seen: classes not masked.
        bg_set: ``(N, K)`` bool (see :func:`unbiased_cross_entropy`).
        ignore_index: label to skip.

    Returns:
        Scalar loss.
    """
    z = masked_logits(logits, seen)
    k = z.shape[1]
    prob = z.softmax(dim=1)
    allowed = torch.zeros(bg_set.shape[0], k, dtype=torch.bool, device=z.device)
    width = min(int(bg_set.shape[1]), k)
    allowed[:, :width] = bg_set[:, :width].to(device=z.device, dtype=torch.bool)
    allowed[:, 0] = True
    keep = torch.zeros(k, dtype=torch.bool, device=z.device)
    keep[list(seen)] = True
    allowed &= keep
    allowed &= (allowed.sum(1, keepdim=True) > 1)  # B_i = {0}: background is known
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target)).clamp(0, k - 1)
    unknown = (safe == 0).unsqueeze(1) & allowed[:, :, None, None]
    known = (valid.unsqueeze(1) & ~unknown).to(prob.dtype)
    onehot = torch.nn.functional.one_hot(safe, k).permute(0, 3, 1, 2).to(prob.dtype) * known
    prob = prob * known
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    return dice[list(seen)].mean()


def unbiased_distillation(new_logits: Tensor, old_logits: Tensor, old_seen: Sequence[int],
                          new_classes: Sequence[int], ignore: Tensor | None = None) -> Tensor:
    """MiB unbiased knowledge distillation: ``−(1/|O|) Σ_{c∈O} q_c log p̃_c``, mean over
    pixels (``O`` = ``old_seen``, background included, as MiB's code divides by it).

    Args:
        new_logits: ``(N, K, H, W)`` current model logits (unmasked).
        old_logits: ``(N, K, H, W)`` old model logits.
        old_seen: classes the old model knew (background included).
        new_classes: classes of the current task.
        ignore: optional ``(N, H, W)`` bool of pixels to leave out.

    Returns:
        Scalar loss.
    """
    old_seen = list(old_seen)
    q = old_logits[:, old_seen].softmax(1)
    all_seen = sorted({*old_seen, *new_classes})
    logz = torch.logsumexp(new_logits[:, all_seen], dim=1, keepdim=True)
    fg = [c for c in old_seen if c != 0]
    log_bg = torch.logsumexp(new_logits[:, [0, *new_classes]], dim=1, keepdim=True) - logz
    log_p = torch.cat([log_bg, new_logits[:, fg] - logz], dim=1)
    per_pixel = -(q * log_p).sum(1) / len(old_seen)
    if ignore is not None:
        per_pixel = per_pixel[~ignore]
    return per_pixel.mean() if per_pixel.numel() else new_logits.sum() * 0.0


def _head(model: nn.Module, num_classes: int) -> nn.Conv2d:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Conv2d) and head.out_channels == num_classes:
        return head
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)
             and m.out_channels == num_classes]
    if not convs:
        raise SegxaiError("model: no Conv2d head with one output per class found")
    return convs[-1]


@torch.no_grad()
def mib_init(model: nn.Module, new_classes: Sequence[int], num_classes: int) -> None:
    """MiB initialisation: new rows = background row, biases ``b_bg − log(N_new + 1)``
    (background's bias too)."""
    head = _head(model, num_classes)
    new = list(new_classes)
    if head.bias is None:
        raise SegxaiError("model: the head needs a bias for the MiB initialisation")
    bias = head.bias[0] - float(np.log(len(new) + 1))
    head.weight[new] = head.weight[0:1].expand(len(new), *head.weight.shape[1:]).clone()
    head.bias[new] = bias
    head.bias[0] = bias


@dataclass
class SeenClassLoss:
    """Loss term: :func:`seen_loss` (cross-entropy and Dice over the seen classes only).

    When the batch carries :data:`BG_SET` rows that allow more than background for some
    image, the cross-entropy is :func:`unbiased_cross_entropy` and the Dice term is
    :func:`partial_dice` (those images' background pixels count for every class they are
    known not to be, so a new class predicted on them is still a false positive); otherwise
    it is :func:`seen_loss` exactly.
    """

    seen: list[int]
    dice: bool = True
    weight: float = 1.0
    name: str = "seen"

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor:
        assert batch.masks is not None
        bg = batch.extras.get(BG_SET)
        if bg is None:
            return seen_loss(logits, batch.masks, self.seen, dice=self.dice)
        keep = torch.zeros(bg.shape[1], dtype=torch.bool, device=bg.device)
        keep[[c for c in self.seen if c < bg.shape[1]]] = True
        partial = ((bg & keep).sum(1) > 1).to(batch.masks.device)  # background is ambiguous
        if not bool(partial.any()):
            return seen_loss(logits, batch.masks, self.seen, dice=self.dice)
        ce = unbiased_cross_entropy(logits, batch.masks, self.seen, bg)
        if not self.dice:
            return ce
        return ce + partial_dice(logits, batch.masks, self.seen, bg)

    def describe(self) -> dict[str, Any]:
        return {"seen": list(self.seen), "dice": self.dice, "weight": self.weight}


@dataclass
class UnbiasedDistillation:
    """Loss term: :func:`unbiased_distillation` towards ``old_model`` (ignored pixels skipped)."""

    old_model: nn.Module
    old_seen: list[int]
    new_classes: list[int]
    weight: float = 1.0
    name: str = "mib-distillation"

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor:
        ignore = batch.masks == IGNORE if batch.masks is not None else None
        return unbiased_distillation(logits, batch.teacher_logits(self.old_model),
                                     self.old_seen, self.new_classes, ignore=ignore)

    def describe(self) -> dict[str, Any]:
        return {"old_seen": list(self.old_seen), "new_classes": list(self.new_classes),
                "weight": self.weight}


@dataclass
class ReplayMix:
    """Batch hook: append ``n`` memory samples drawn uniformly with replacement from the
    epoch's generator to every minibatch (SSUL-M-style replay). ``bg_set`` (``(M, K)`` bool,
    optional) travels with the memory samples as the :data:`BG_SET` extra; the batch's own
    rows must then be there too."""

    images: Tensor
    masks: Tensor
    n: int
    bg_set: Tensor | None = None

    def __call__(self, batch: Batch, g: torch.Generator) -> Batch:
        j = torch.randint(len(self.images), (self.n,), generator=g)
        assert batch.masks is not None
        extras = dict(batch.extras)
        if self.bg_set is not None:
            extras[BG_SET] = torch.cat([extras[BG_SET], self.bg_set[j]])
        return Batch(torch.cat([batch.images, self.images[j]]),
                     torch.cat([batch.masks, self.masks[j]]), extras, batch.ignore_index)
