"""Segmentation quality: confusion matrix and mean IoU over a whole dataset.

``IoU_c = TP_c / (GT_c + Pred_c - TP_c)`` is computed from the confusion matrix accumulated over
every pixel of the set (not averaged per image); the mean is taken over the classes that occur
in the ground truth, as in the CISS evaluation code (``stream_metrics.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from segxai.data.dataset import SegDataset

__all__ = ["confusion_matrix", "evaluate_miou", "evaluate_segmentation", "miou_from_confusion",
           "predict_dataset"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_index: int | None = None) -> Tensor:
    """Confusion matrix ``(K, K)`` (rows: ground truth, columns: prediction), int64.

    Args:
        pred: predicted class ids, any shape.
        target: ground-truth class ids, same shape.
        num_classes: K.
        ignore_index: a target value to skip (unlabelled pixels).

    Returns:
        ``cm[g, p]`` = number of pixels of class ``g`` predicted as ``p``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected the shape of target {tuple(target.shape)}, "
                         f"got {tuple(pred.shape)}")
    p = pred.reshape(-1).long()
    t = target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"target: class ids must lie in [0, {num_classes}), got "
                         f"[{int(t.min())}, {int(t.max())}]")
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"pred: class ids must lie in [0, {num_classes})")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).cpu()


def miou_from_confusion(cm: Tensor) -> tuple[float, list[float | None]]:
    """Mean IoU over the classes present in the ground truth, and the per-class IoU.

    Args:
        cm: ``(K, K)`` confusion matrix (rows ground truth).

    Returns:
        ``(miou, ious)`` where ``ious[c]`` is ``None`` for a class without ground-truth pixels.
    """
    cm = cm.double()
    tp = cm.diag()
    gt = cm.sum(dim=1)
    pr = cm.sum(dim=0)
    ious: list[float | None] = []
    for c in range(cm.shape[0]):
        if gt[c] > 0:
            ious.append(float(tp[c] / (gt[c] + pr[c] - tp[c])))
        else:
            ious.append(None)
    present = [v for v in ious if v is not None]
    return (sum(present) / len(present) if present else float("nan")), ious


@torch.no_grad()
def predict_dataset(model: nn.Module, images: Tensor, *, batch_size: int = 64,
                    device: str = "cpu") -> Tensor:
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
                          device: str = "cpu") -> dict[str, Any]:
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
        raise TypeError(f"data: expected a SegDataset, got {type(data).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    pred = predict_dataset(model, data.images, batch_size=batch_size, device=device)
    k = max(data.num_classes, int(pred.max()) + 1)
    cm = confusion_matrix(pred, data.masks, k, data.ignore_index)
    miou, ious = miou_from_confusion(cm)
    total = int(cm.sum())
    return {"miou": miou, "iou": ious[: data.num_classes],
            "pixel_accuracy": float(cm.diag().sum()) / total if total else float("nan"),
            "confusion": cm.tolist()}


def evaluate_miou(model: nn.Module, data: SegDataset, *, batch_size: int = 64,
                  device: str = "cpu") -> float:
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
