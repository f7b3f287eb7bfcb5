"""Continual-segmentation metrics: confusion-matrix IoU, old/new/all mIoU, forgetting.

IoU is computed from one confusion matrix over the whole validation set (PLOP / MiB
``stream_metrics``): ``IoU_c = TP / (GT_c + Pred_c − TP)``, pixels labelled 255 ignored; a
class without ground-truth pixels has IoU NaN and is left out of the means.

After task ``t``: ``miou_old`` is the mean IoU of the foreground classes of tasks ``< t``
(NaN at ``t = 0``), ``miou_new`` that of task ``t``'s classes, ``miou_all`` that of background
and every seen class; ``forgetting`` is the mean over the old classes of
``max_{s<t} IoU_c^s − IoU_c^t`` (NaN at ``t = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["confusion_matrix", "iou_per_class", "nanmean", "task_metrics"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = 255) -> np.ndarray:
    """``(K, K)`` counts, rows = ground truth, columns = prediction.

    Args:
        pred: predicted class ids, any shape.
        target: ground-truth ids, same shape (``ignore_index`` skipped).
        num_classes: ``K``.
        ignore_index: label value to skip.

    Returns:
        int64 matrix.
    """
    pred = np.asarray(pred).astype(np.int64).ravel()
    target = np.asarray(target).astype(np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected {target.shape} elements like target, got {pred.shape}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(f"target: class ids must lie in [0, {num_classes})")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"pred: class ids must lie in [0, {num_classes})")
    return np.bincount(target * num_classes + pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """IoU of each class from a confusion matrix (NaN where the class has no GT pixel)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pr = conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (gt + pr - tp)
    iou[gt == 0] = np.nan
    return iou


def nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the finite values (NaN if there is none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else math.nan


def task_metrics(ious: Sequence[np.ndarray], tasks: Sequence[Sequence[int]]) -> dict[str, float]:
    """Metrics after the last task in ``ious``.

    Args:
        ious: per-class IoU vectors after tasks ``0..t`` (``t = len(ious) - 1``).
        tasks: the task list.

    Returns:
        ``{"miou_old", "miou_new", "miou_all", "forgetting"}`` (fractions in [0, 1]).
    """
    t = len(ious) - 1
    if t < 0:
        raise ValueError("ious: expected at least one IoU vector")
    now = np.asarray(ious[t], dtype=np.float64)
    old = [c for task in tasks[:t] for c in task]
    new = list(tasks[t])
    seen = [0, *old, *new]
    forgetting = []
    for c in old:
        past = [float(ious[s][c]) for s in range(t) if np.isfinite(ious[s][c])]
        if past and np.isfinite(now[c]):
            forgetting.append(max(past) - float(now[c]))
    return {
        "miou_old": nanmean(now[old]) if old else math.nan,
        "miou_new": nanmean(now[new]),
        "miou_all": nanmean(now[seen]),
        "forgetting": nanmean(forgetting) if old else math.nan,
    }
