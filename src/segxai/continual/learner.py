"""The incremental learner: masked-logit training with replay, optional MiB distillation,
exemplar selection with saliency, and evaluation.

Training goes through the one loop (:func:`segxai.models.fit`); the continual pieces (seen-class
masking, MiB unbiased distillation and initialisation, replay mixing) are loss terms and hooks
in :mod:`segxai.continual.losses`. Loss: pixel-wise cross-entropy over the seen classes with
ignore label 255 (plus, by default, the soft Dice loss over the seen classes, as the built-in
model's training uses); a fraction ``ratio`` of every minibatch is drawn from the replay memory
(SSUL-M replaces half). With ``distill > 0`` the MiB distillation term is added.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segxai.continual.losses import (
    BG_SET,
    IGNORE,
    MASK_VALUE,
    ReplayMix,
    SeenClassLoss,
    UnbiasedDistillation,
    bg_sets,
    masked_logits,
    mib_init,
    seen_loss,
    unbiased_distillation,
)
from segxai.continual.metrics import confusion_matrix, iou_per_class
from segxai.continual.selection import build_memory
from segxai.core.errors import SegxaiError
from segxai.models.loop import TrainData, fit
from segxai.models.losses import LossTerm
from segxai.models.trainconfig import TrainConfig

__all__ = [
    "MASK_VALUE",
    "build_memory",
    "evaluate_ious",
    "masked_logits",
    "mib_init",
    "predict",
    "saliency_maps",
    "seen_loss",
    "train_task",
    "unbiased_distillation",
]


def train_task(model: nn.Module, images: Tensor, masks: Tensor, seen: Sequence[int], *,
               memory_images: Tensor | None = None, memory_masks: Tensor | None = None,
               memory_bg: Tensor | None = None, unbiased_ce: bool = False,
               epochs: int = 10, batch_size: int = 16, ratio: float = 0.5, lr: float = 1e-3,
               seed: int = 0, old_model: nn.Module | None = None, old_seen: Sequence[int] = (),
               new_classes: Sequence[int] = (), distill: float = 0.0, dice: bool = True,
               device: str = "cpu", progress: bool = False,
               desc: str = "train") -> list[float]:
    """Train ``model`` on one task (in place) with replay mixed into every minibatch.

    Each step takes ``batch_size − m`` current images (an epoch is the full batches of a
    fresh permutation of them, drawn from the epoch's generator) and
    ``m = round(ratio · batch_size)`` memory samples drawn uniformly with replacement from the
    same generator (``m = 0`` while the memory is empty). The one loop (:func:`segxai.models.fit`)
    runs with a fresh Adam optimiser (AdamW without weight decay), the one-cycle schedule with
    10 % warm-up and no augmentation, so a run resumed between tasks is identical to an
    uninterrupted one.

    Args:
        model: network returning ``N×K×H×W`` logits.
        images: ``(N, 3, H, W)`` float images of the task.
        masks: ``(N, H, W)`` long labels (background-shifted; 255 = ignore).
        seen: classes not masked in the logits (background + all seen).
        memory_images: ``(M, 3, H, W)`` float replay images, or None.
        memory_masks: ``(M, H, W)`` long replay labels.
        memory_bg: ``(M, K)`` bool: classes each replayed background pixel may stand for
            (:meth:`~segxai.continual.memory.ReplayMemory.replay`); None = background only.
        unbiased_ce: MiB's unbiased cross-entropy on the current images (their background
            may be any old class, ``old_seen``).
        epochs: passes over the task's images.
        batch_size: images per step.
        ratio: fraction of each batch from memory, in ``[0, 1)``.
        lr: peak Adam learning rate.
        seed: seeds the batch order and the memory draws.
        old_model: the model after the previous task (for ``distill``).
        old_seen: classes the old model knew.
        new_classes: the current task's classes.
        distill: weight of the MiB unbiased distillation (0 = off).
        dice: add the soft Dice loss to the cross-entropy (:func:`seen_loss`).
        device: torch device.
        progress: show a progress bar.
        desc: progress-bar label.

    Returns:
        The mean loss of each epoch.
    """
    if not 0.0 <= float(ratio) < 1.0:
        raise SegxaiError(f"ratio: expected a fraction in [0, 1), got {ratio!r}")
    if len(images) == 0:
        raise SegxaiError("images: the task has no training images")
    has_memory = memory_images is not None and len(memory_images) > 0
    n_mem = int(round(float(ratio) * batch_size)) if has_memory else 0
    n_cur = max(1, batch_size - n_mem)
    config = TrainConfig(epochs=epochs, batch_size=n_cur, lr=lr, weight_decay=0.0,
                         schedule="onecycle", warmup=0.1, augment=False, restore_best=False,
                         seed=seed)
    terms: list[LossTerm] = [SeenClassLoss(list(seen), dice)]
    if distill > 0 and old_model is not None:
        old_model.to(device).eval()
        terms.append(UnbiasedDistillation(old_model, list(old_seen), list(new_classes),
                                          weight=distill))
    hook = None
    k = int(memory_bg.shape[1]) if memory_bg is not None else max([*seen, *old_seen]) + 1
    partial_memory = memory_bg is not None and bool((memory_bg.sum(1) > 1).any())
    extras: dict[str, Tensor] = {}
    if unbiased_ce or (n_mem and partial_memory):
        old = [c for c in old_seen if c != 0] if unbiased_ce else []
        extras[BG_SET] = bg_sets(len(images), k, old)
    if n_mem:
        assert memory_images is not None and memory_masks is not None
        mem_bg = None
        if BG_SET in extras:
            mem_bg = memory_bg if memory_bg is not None else bg_sets(len(memory_images), k, [])
        hook = ReplayMix(memory_images, memory_masks, n_mem, mem_bg)
    result = fit(model, TrainData(images, masks, extras, ignore_index=IGNORE), config, terms=terms,
                 batch_hook=hook, device=device, progress=progress, desc=desc)
    return result.losses


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, seen: Sequence[int], *, batch_size: int = 64,
            device: str = "cpu") -> Tensor:
    """Argmax over the seen classes, ``(N, H, W)`` long (on the CPU)."""
    model.to(device).eval()
    out = []
    for s in range(0, len(images), batch_size):
        logits = model(images[s:s + batch_size].to(device))
        out.append(masked_logits(logits, seen).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, *images.shape[-2:], dtype=torch.long)


def evaluate_ious(model: nn.Module, images: Tensor, masks: Tensor, seen: Sequence[int],
                  num_classes: int, *, device: str = "cpu") -> np.ndarray:
    """Per-class IoU ``(K,)`` over the whole set (one confusion matrix; NaN = no GT pixel)."""
    pred = predict(model, images, seen, device=device)
    return iou_per_class(confusion_matrix(pred.numpy(), masks.numpy(), num_classes,
                                          ignore_index=IGNORE))


def saliency_maps(model: nn.Module, images: Tensor, masks: Tensor, *, explainer: str,
                  classes: Sequence[int] | None = None, device: str = "cpu",
                  params: dict[str, Any] | None = None) -> np.ndarray:
    """Saliency per image: the explainer's map for each foreground class present in the mask
    (target = that class, ROI = its GT pixels), min-max normalised, maximum over the classes.

    Args:
        model: the segmentation network.
        images: ``(N, 3, H, W)`` float images.
        masks: ``(N, H, W)`` labels (255 ignored).
        explainer: a registered explainer name (``segxai.list_explainers()``).
        classes: the classes to explain (default every foreground class present).
        device: torch device.
        params: extra explainer parameters.

    Returns:
        ``(N, H, W)`` float64 maps in ``[0, 1]`` (zeros where no class is present).
    """
    import segxai.explainers  # noqa: F401  (registers the built-in explainers)
    from segxai.core.postprocess import minmax
    from segxai.core.registry import explain
    from segxai.core.target import Target

    model.to(device).eval()
    n, _, h, w = images.shape
    out = np.zeros((n, h, w), dtype=np.float64)
    present = sorted(int(c) for c in torch.unique(masks).tolist() if c not in (0, IGNORE))
    if classes is not None:
        present = [c for c in present if c in set(int(k) for k in classes)]
    for c in present:
        rows = (masks == c).flatten(1).any(1).nonzero().flatten()
        target = Target.from_mask(masks[rows] == c, class_index=c)
        expl = explain(model, images[rows].to(device), target.to(device), method=explainer,
                       **(params or {}))
        maps = minmax(expl.maps.detach()).cpu().double().numpy()
        out[rows.numpy()] = np.maximum(out[rows.numpy()], maps)
    return out

