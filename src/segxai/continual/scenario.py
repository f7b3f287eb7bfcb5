"""Class-incremental segmentation scenarios (overlapped protocol, background shift).

A scenario is a list of tasks, each a list of foreground class ids (``0`` = background is never
in a task). In the **overlapped** protocol (MiB / PLOP ``filter_images``), task ``t`` trains on
every image that contains at least one pixel of a current class; its labels keep the current
classes only, and old and future classes become background (the *background shift*); ``255``
(ignore) stays ignore. After task ``t`` the model is evaluated on the validation set with
every class seen so far; pixels of future classes count as background there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "IGNORE",
    "eval_masks",
    "parse_tasks",
    "seen_classes",
    "task_indices",
    "task_masks",
    "validate_tasks",
]

IGNORE = 255


def validate_tasks(tasks: Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """Check a task list and return it as plain lists.

    Args:
        tasks: e.g. ``[[1, 2], [3], [4]]``.
        num_classes: classes of the dataset including background.

    Returns:
        The tasks as ``list[list[int]]``.

    Raises:
        ValueError: empty tasks, background or out-of-range ids, or a class in two tasks.
    """
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or len(tasks) < 1:
        raise ValueError(f"tasks: expected a non-empty list of class lists, got {tasks!r}")
    out: list[list[int]] = []
    seen: set[int] = set()
    for t, task in enumerate(tasks):
        if isinstance(task, (str, bytes)) or not isinstance(task, Sequence) or len(task) == 0:
            raise ValueError(f"tasks: task {t} must be a non-empty list of class ids, got {task!r}")
        ids = [int(c) for c in task]
        for c in ids:
            if not 1 <= c < num_classes:
                raise ValueError(f"tasks: class {c} in task {t} is not a foreground class id "
                                 f"in [1, {num_classes - 1}]")
            if c in seen:
                raise ValueError(f"tasks: class {c} appears in more than one task")
            seen.add(c)
        out.append(ids)
    return out


def parse_tasks(spec: str | Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """Tasks from a spec: ``"2-1-1"`` / ``"2+1+1"`` (counts, classes in id order 1, 2, ...)
    or ``"1,2/3/4"`` (explicit ids, tasks separated by ``/``), or a list of lists.

    Args:
        spec: the task specification.
        num_classes: classes of the dataset including background.

    Returns:
        The validated task list.
    """
    if not isinstance(spec, str):
        return validate_tasks(spec, num_classes)
    text = spec.strip()
    if re.fullmatch(r"\d+([+-]\d+)*", text):
        counts = [int(v) for v in re.split(r"[+-]", text)]
        if any(c < 1 for c in counts) or sum(counts) > num_classes - 1:
            raise ValueError(f"tasks: counts {counts} must be >= 1 and sum to at most "
                             f"{num_classes - 1} foreground classes")
        tasks, start = [], 1
        for c in counts:
            tasks.append(list(range(start, start + c)))
            start += c
        return validate_tasks(tasks, num_classes)
    if re.fullmatch(r"\d+(,\d+)*(/\d+(,\d+)*)*", text):
        return validate_tasks([[int(v) for v in part.split(",")] for part in text.split("/")],
                              num_classes)
    raise ValueError(f"tasks: expected counts like '2-1-1' or ids like '1,2/3/4', got {spec!r}")


def seen_classes(tasks: Sequence[Sequence[int]], t: int) -> list[int]:
    """Background plus every class of tasks ``0..t``, sorted."""
    return sorted({0, *(c for task in tasks[: t + 1] for c in task)})


def task_indices(masks: Tensor, tasks: Sequence[Sequence[int]], t: int) -> Tensor:
    """Indices of the images of task ``t`` (overlapped: any pixel of a current class).

    Args:
        masks: ``(N, H, W)`` integer masks with the original class ids.
        tasks: the task list.
        t: task index.

    Returns:
        ``(M,)`` long tensor of image indices.
    """
    current = torch.tensor(list(tasks[t]), device=masks.device)
    has = torch.isin(masks.flatten(1), current).any(1)
    return has.nonzero().flatten()


def task_masks(masks: Tensor, tasks: Sequence[Sequence[int]], t: int) -> Tensor:
    """Training labels of task ``t``: current classes kept, old and future classes → 0
    (background shift), ``255`` kept.

    Args:
        masks: ``(N, H, W)`` integer masks with the original class ids.
        tasks: the task list.
        t: task index.

    Returns:
        ``(N, H, W)`` long tensor.
    """
    current = torch.tensor(list(tasks[t]), device=masks.device)
    keep = torch.isin(masks, current) | (masks == IGNORE)
    return torch.where(keep, masks, torch.zeros_like(masks)).long()


def eval_masks(masks: Tensor, tasks: Sequence[Sequence[int]], t: int) -> Tensor:
    """Validation labels after task ``t``: every seen class kept, future classes → 0."""
    seen = torch.tensor(seen_classes(tasks, t), device=masks.device)
    keep = torch.isin(masks, seen) | (masks == IGNORE)
    return torch.where(keep, masks, torch.zeros_like(masks)).long()
