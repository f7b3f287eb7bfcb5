"""Class-incremental segmentation scenarios (overlapped protocol, background shift).

A scenario is a list of tasks, each a list of foreground class ids (``0`` = background is never
in a task). In the **overlapped** protocol (MiB / PLOP ``filter_images``), task ``t`` trains on
every image that contains at least one pixel of a current class; its labels keep the current
classes only, and old and future classes become background (the *background shift*); ``255``
(ignore) stays ignore. After task ``t`` the model is evaluated on the validation set with
every class seen so far; pixels of future classes count as background there.

The task grammar and the mask functions live in :mod:`segxai.data.incremental` (one
implementation, shared with :func:`segxai.data.incremental_tasks`); they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence

from segxai.data.incremental import (
    IGNORE,
    eval_masks,
    parse_tasks,
    seen_classes,
    task_indices,
    task_masks,
)

__all__ = [
    "IGNORE",
    "eval_masks",
    "parse_tasks",
    "seen_classes",
    "task_indices",
    "task_masks",
    "validate_tasks",
]


def validate_tasks(tasks: Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """Check a task list and return it as plain lists (:func:`parse_tasks` with
    ``complete=False``: tasks may leave classes out, which then stay background).

    Args:
        tasks: e.g. ``[[1, 2], [3], [4]]``.
        num_classes: classes of the dataset including background.

    Returns:
        The tasks as ``list[list[int]]``.

    Raises:
        ValueError: empty tasks, background or out-of-range ids, or a class in two tasks.
    """
    return parse_tasks(tasks, num_classes, complete=False)
