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

from segxai.core.errors import SegxaiError
from segxai.core.stats import confusion_matrix
from segxai.core.stats import iou_from_confusion as iou_per_class

__all__ = ["confusion_matrix", "iou_per_class", "nanmean", "task_metrics"]


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
        raise SegxaiError("ious: expected at least one IoU vector")
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
