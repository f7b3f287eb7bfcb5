"""Segmentation quality: confusion matrix and mean IoU over a whole dataset.

``IoU_c = TP_c / (GT_c + Pred_c - TP_c)`` is computed from the confusion matrix accumulated over
every pixel of the set (not averaged per image); the mean is taken over the classes that occur
in the ground truth, as in the CISS evaluation code (``stream_metrics.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.stats import confusion_matrix, iou_from_confusion, mean_iou
from segxai.data.dataset import SegDataset

__all__ = ["confusion_matrix", "evaluate_miou", "evaluate_segmentation", "miou_from_confusion",
           "predict_dataset"]


def miou_from_confusion(cm: Tensor) -> tuple[float, list[float | None]]:
    """Mean IoU over the classes present in the ground truth, and the per-class IoU.

    Args:
        cm: ``(K, K)`` confusion matrix (rows ground truth), e.g. from
            :func:`~segxai.core.stats.confusion_matrix`.

    Returns:
        ``(miou, ious)`` where ``ious[c]`` is ``None`` for a class without ground-truth pixels.
    """
    ious = iou_from_confusion(cm)
    return mean_iou(cm), [float(v) if np.isfinite(v) else None for v in ious]


@torch.no_grad()
def predict_dataset(model: nn.Module, images: Tensor, *, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> Tensor:
    """Arg-max predictions ``(N, H, W)`` of ``model`` (eval mode, restored after) on CPU."""
    was_training = model.training
    model.eval()
    try:
        outs = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device)
            outs.append(model(x).argmax(dim=1).cpu())
        return torch.cat(outs)
    finally:
        model.train(was_training)


def evaluate_segmentation(model: nn.Module, data: SegDataset, *, batch_size: int = 64,
                          device: str | torch.device = "cpu") -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and the confusion matrix of ``model`` on ``data``.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, K, H, W)`` logits.
        data: the evaluation set.
        batch_size: images per forward pass.
        device: torch device of the model.

    Returns:
        ``{"miou", "iou" (per class, None without GT), "pixel_accuracy", "confusion"}``.
    """
    if not isinstance(data, SegDataset):
        raise SegxaiTypeError(f"data: expected a SegDataset, got {type(data).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SegxaiError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    pred = predict_dataset(model, data.images, batch_size=batch_size, device=device)
    k = max(data.num_classes, int(pred.max()) + 1)
    cm = confusion_matrix(pred, data.masks, k, data.ignore_index)
    miou, ious = miou_from_confusion(cm)
    total = int(cm.sum())
    return {"miou": miou, "iou": ious[: data.num_classes],
            "pixel_accuracy": float(cm.diag().sum()) / total if total else float("nan"),
            "confusion": cm.tolist()}


def evaluate_miou(model: nn.Module, data: SegDataset, *, batch_size: int = 64,
                  device: str | torch.device = "cpu") -> float:
    """Mean IoU of ``model`` on ``data`` (confusion matrix over the whole set; mean over the
    classes present in the ground truth).

    Args:
        model: maps images to logits ``(N, K, H, W)``.
        data: the evaluation set.
        batch_size: images per forward pass.
        device: torch device of the model.

    Returns:
        The mIoU in ``[0, 1]``.
    """
    return float(evaluate_segmentation(model, data, batch_size=batch_size, device=device)["miou"])
