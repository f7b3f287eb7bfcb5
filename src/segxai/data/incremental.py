"""Class-incremental splits (classes introduced task by task) for continual learning.

Follows the class-incremental semantic segmentation (CISS) protocols of MiB / PLOP / SSUL
(see ``research/nas-continual.md`` §B3):

* a task spec such as ``"2-2"`` (two classes, then two more), ``"2-1-1"``, ``"2+2"``, explicit
  ids ``"1,3/2/4"`` or lists ``[[1, 3], [2], [4]]`` (:func:`parse_tasks`, the one grammar also
  used by :mod:`segxai.continual.scenario` and ``segxai continual --tasks``);
* ``mode="overlapped"``: an image joins task *t* if it contains at least one class of task
  *t*; ``"disjoint"``: additionally all its classes are old or current; ``"partitioned"``: as
  overlapped, but every image is used by one task only (chosen at random among its tasks);
* *background shift*: in task *t*'s training masks every class that is not current becomes
  background (0); test masks keep every class seen so far and set future classes to 0
  (:func:`keep_classes`; :func:`task_masks` / :func:`eval_masks` / :func:`task_indices` apply
  it to raw mask tensors for the continual learner).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.data.dataset import SegDataset

__all__ = [
    "IGNORE",
    "IncrementalTask",
    "eval_masks",
    "incremental_tasks",
    "keep_classes",
    "make_class_order",
    "parse_tasks",
    "seen_classes",
    "shapes_incremental",
    "task_indices",
    "task_masks",
]

MODES = ("overlapped", "disjoint", "partitioned")
IGNORE = 255


@dataclass
class IncrementalTask:
    """One step of a class-incremental sequence.

    Attributes:
        index: position of the task (0 = base task).
        classes: class ids introduced by this task (ids as used in ``train``/``test``).
        seen_classes: background (0) and every class introduced so far, this task included.
        train: this task's training images; masks label only ``classes`` (with
            ``background_shift``) or every seen class (without), everything else is 0.
        test: test images with every seen class labelled and future classes set to 0
            (``None`` when no test set was given).
    """

    index: int
    classes: list[int]
    seen_classes: list[int]
    train: SegDataset
    test: SegDataset | None = None

    @property
    def old_classes(self) -> list[int]:
        """Classes of earlier tasks (background excluded)."""
        return [c for c in self.seen_classes if c != 0 and c not in self.classes]


def make_class_order(num_classes: int, seed: int | None = None) -> list[int]:
    """The order in which foreground classes ``1..num_classes-1`` are introduced.

    Args:
        num_classes: number of classes including background (>= 2).
        seed: ``None`` keeps the natural order ``1, 2, ...``; an integer shuffles it.

    Returns:
        A permutation of ``1..num_classes-1``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise SegxaiError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    order = list(range(1, num_classes))
    if seed is not None:
        rng = np.random.default_rng([int(seed), 7])
        order = [int(c) for c in rng.permutation(order)]
    return order


def _foreground(classes: int | Sequence[int]) -> list[int]:
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        if classes < 2:
            raise SegxaiError(f"classes: expected a class count >= 2 (background included), "
                              f"got {classes!r}")
        return list(range(1, int(classes)))
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or not classes:
        raise SegxaiError(f"classes: expected a class count or a non-empty class order, got "
                          f"{classes!r}")
    order = [int(c) for c in classes]
    if len(set(order)) != len(order) or min(order) < 1:
        raise SegxaiError(f"classes: expected distinct foreground ids >= 1, got {order!r}")
    return order


def parse_tasks(spec: str | Sequence[int] | Sequence[Sequence[int]],
                classes: int | Sequence[int], *, complete: bool = False) -> list[list[int]]:
    """Turn a task spec into explicit class lists (the one task grammar of segxai).

    Grammar:

    * sizes: ``"2-1-1"``, ``"2+2"`` (``-`` and ``+`` are the same separator) or a list of
      ints ``[2, 1, 1]``; task *t* takes the next ``sizes[t]`` classes of the class order;
    * explicit class ids: ``"4,1/2/3"`` (``,`` within a task, ``/`` between tasks) or a list
      of lists ``[[4, 1], [2], [3]]``; these ignore the order.

    Every task is non-empty, every id is a foreground class of ``classes`` (never background 0)
    and no class is in two tasks.

    Args:
        spec: the task specification.
        classes: the number of classes ``K`` including background (foreground order
            ``1..K-1``) or the foreground classes in order of introduction.
        complete: the tasks must introduce every foreground class (sizes summing exactly to
            their number); with ``False`` they may leave some out (those stay background).

    Returns:
        One list of class ids per task.

    Raises:
        SegxaiError: a malformed spec (the message names ``tasks``).

    Example:
        >>> parse_tasks("2-1-1", 5), parse_tasks([1, 3], [4, 3, 2, 1])
        ([[1, 2], [3], [4]], [[4], [3, 2, 1]])
        >>> parse_tasks("4,1/2", 5)
        [[4, 1], [2]]
    """
    order = _foreground(classes)
    items: list[Any]
    if isinstance(spec, str):
        text = spec.strip()
        if re.fullmatch(r"\d+([+-]\d+)*", text):
            items = [int(v) for v in re.split(r"[+-]", text)]
        elif re.fullmatch(r"\d+(,\d+)*(/\d+(,\d+)*)*", text):
            items = [[int(v) for v in part.split(",")] for part in text.split("/")]
        else:
            raise SegxaiError(f"tasks: expected sizes like '2-1-1' or '2+2', or class ids like "
                              f"'1,2/3/4', got {spec!r}")
    elif isinstance(spec, bytes) or not isinstance(spec, Sequence) or not spec:
        raise SegxaiError(f"tasks: expected a non-empty task list, got {spec!r}")
    else:
        items = list(spec)
    if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in items):
        sizes = [int(s) for s in items]
        if any(s < 1 for s in sizes) or sum(sizes) > len(order) or (
                complete and sum(sizes) != len(order)):
            raise SegxaiError(f"tasks: sizes {sizes} must be >= 1 and sum to "
                              f"{'' if complete else 'at most '}the number of foreground "
                              f"classes ({len(order)})")
        out, start = [], 0
        for s in sizes:
            out.append(order[start:start + s])
            start += s
        return out
    allowed, seen = set(order), set()
    groups: list[list[int]] = []
    for t, g in enumerate(items):
        if isinstance(g, (str, bytes)) or not isinstance(g, Sequence) or not g:
            raise SegxaiError(f"tasks: task {t} must be a non-empty list of class ids, got {g!r}")
        ids = [int(c) for c in g]
        for c in ids:
            if c not in allowed:
                raise SegxaiError(f"tasks: class {c} in task {t} is not one of the foreground "
                                  f"classes {sorted(allowed)}")
            if c in seen:
                raise SegxaiError(f"tasks: class {c} appears in more than one task")
            seen.add(c)
        groups.append(ids)
    if complete and seen != allowed:
        raise SegxaiError(f"tasks: the class lists {groups} must cover the foreground classes "
                          f"{sorted(allowed)} exactly once")
    return groups


def seen_classes(tasks: Sequence[Sequence[int]], t: int) -> list[int]:
    """Background plus every class of tasks ``0..t``, sorted."""
    return sorted({0, *(c for task in tasks[: t + 1] for c in task)})


def keep_classes(masks: torch.Tensor, keep: Sequence[int],
                 ignore_index: int | None = IGNORE) -> torch.Tensor:
    """``masks`` with every class not in ``keep`` set to background 0 (``ignore_index`` kept).

    This is the background shift: a task's training masks keep ``[0, *current]``, evaluation
    masks after task *t* keep :func:`seen_classes`.
    """
    keep_t = torch.tensor(sorted({0, *keep}), dtype=masks.dtype, device=masks.device)
    drop = ~torch.isin(masks, keep_t)
    if ignore_index is not None:
        drop &= masks != ignore_index
    return torch.where(drop, torch.zeros_like(masks), masks)


def task_indices(masks: torch.Tensor, tasks: Sequence[Sequence[int]], t: int) -> torch.Tensor:
    """Indices of the images of task ``t`` in the overlapped protocol (any pixel of a current
    class), as a ``(M,)`` long tensor; ``masks`` is ``(N, H, W)`` with the original ids."""
    current = torch.tensor(list(tasks[t]), device=masks.device)
    return torch.isin(masks.flatten(1), current).any(1).nonzero().flatten()


def task_masks(masks: torch.Tensor, tasks: Sequence[Sequence[int]], t: int) -> torch.Tensor:
    """Training labels of task ``t``: current classes kept, old and future classes → 0
    (background shift), ``255`` kept; a long tensor."""
    return keep_classes(masks, tasks[t]).long()


def eval_masks(masks: torch.Tensor, tasks: Sequence[Sequence[int]], t: int) -> torch.Tensor:
    """Validation labels after task ``t``: every seen class kept, future classes → 0."""
    return keep_classes(masks, seen_classes(tasks, t)).long()


def _relabel(masks: torch.Tensor, keep: Sequence[int], lut: np.ndarray,
             ignore_index: int | None) -> torch.Tensor:
    """Set every id not in ``keep`` to background and map ids through ``lut``."""
    m = keep_classes(masks, keep, ignore_index)
    valid = m != ignore_index if ignore_index is not None else torch.ones_like(m, dtype=torch.bool)
    m[valid] = torch.from_numpy(lut).to(m.dtype)[m[valid]]
    return m


def incremental_tasks(train: SegDataset, tasks: str | Sequence[int] | Sequence[Sequence[int]] = "2-2",
                      *, test: SegDataset | None = None, class_order: Sequence[int] | None = None,
                      mode: str = "overlapped", background_shift: bool = True,
                      remap: bool = False, seed: int = 0) -> list[IncrementalTask]:
    """Split ``train`` (and ``test``) into class-incremental tasks.

    Args:
        train: the full training set (class 0 = background).
        tasks: the task spec (see :func:`parse_tasks`), e.g. ``"2-2"``; it must introduce
            every foreground class.
        test: an optional test set; each task gets it with future classes set to 0.
        class_order: order of introduction of the foreground classes (default ``1, 2, ...``).
        mode: ``"overlapped"``, ``"disjoint"`` or ``"partitioned"`` (see the module docs).
        background_shift: old classes are background in a task's training masks (the CISS
            setting); ``False`` keeps them labelled.
        remap: renumber classes in order of introduction (``class_order[i]`` becomes ``i + 1``,
            ``class_names`` reordered), so that a growing classifier head just appends outputs.
        seed: seed of the image assignment in ``"partitioned"`` mode.

    Returns:
        One :class:`IncrementalTask` per step.

    Example:
        >>> from segxai.data import make_shapes
        >>> steps = incremental_tasks(make_shapes(40, size=32), "2-2")
        >>> [t.classes for t in steps], steps[1].seen_classes
        ([[1, 2], [3, 4]], [0, 1, 2, 3, 4])
    """
    if not isinstance(train, SegDataset):
        raise SegxaiTypeError(f"train: expected a SegDataset, got {type(train).__name__}")
    if test is not None and not isinstance(test, SegDataset):
        raise SegxaiTypeError(f"test: expected a SegDataset or None, got {type(test).__name__}")
    if mode not in MODES:
        raise SegxaiError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    k = train.num_classes
    order = list(class_order) if class_order is not None else list(range(1, k))
    if sorted(int(c) for c in order) != list(range(1, k)):
        raise SegxaiError(f"class_order: expected a permutation of 1..{k - 1}, got {order!r}")
    groups = parse_tasks(tasks, order, complete=True)
    intro = [c for g in groups for c in g]
    lut = np.arange(k)
    names = list(train.class_names)
    if remap:
        for new, old in enumerate(intro, start=1):
            lut[old] = new
        names = [train.class_names[0]] + [train.class_names[c] for c in intro]

    # which classes each training image contains
    m = train.masks.flatten(1)
    present = torch.stack([(m == c).any(dim=1) for c in range(k)], dim=1).numpy()  # (N, K)
    eligible = []
    seen: list[int] = []
    for g in groups:
        has_current = present[:, g].any(axis=1)
        if mode == "disjoint":
            allowed = np.zeros(k, dtype=bool)
            allowed[[0, *seen, *g]] = True
            has_current &= ~(present[:, ~allowed].any(axis=1))
        eligible.append(has_current)
        seen = seen + g
    eligible_arr = np.stack(eligible, axis=1)  # (N, T)
    if mode == "partitioned":
        rng = np.random.default_rng([int(seed), 11])
        scores = np.where(eligible_arr, rng.random(eligible_arr.shape), -1.0)
        owner = scores.argmax(axis=1)
        eligible_arr = (np.arange(len(groups))[None, :] == owner[:, None]) & eligible_arr

    out = []
    seen = []
    for t, g in enumerate(groups):
        seen = seen + g
        keep_train = [0, *g] if background_shift else [0, *seen]
        idx = np.flatnonzero(eligible_arr[:, t])
        tr = train.subset(idx)
        tr.masks = _relabel(tr.masks, keep_train, lut, train.ignore_index)
        tr.class_names = list(names)
        tr.meta = {**train.meta, "task": t, "task_classes": [int(lut[c]) for c in g],
                   "mode": mode, "background_shift": background_shift}
        te = None
        if test is not None:
            te = test.subset(np.arange(len(test)))
            te.masks = _relabel(te.masks, [0, *seen], lut, test.ignore_index)
            te.class_names = list(names)
            te.meta = {**test.meta, "task": t, "seen_classes": [int(lut[c]) for c in [0, *seen]]}
        out.append(IncrementalTask(index=t, classes=[int(lut[c]) for c in g],
                                   seen_classes=sorted(int(lut[c]) for c in [0, *seen]),
                                   train=tr, test=te))
    return out


def shapes_incremental(n_train: int = 1000, n_test: int = 200,
                       tasks: str | Sequence[int] | Sequence[Sequence[int]] = "2-2", *,
                       size: int = 64, seed: int = 0, class_order: Sequence[int] | None = None,
                       mode: str = "overlapped", background_shift: bool = True,
                       remap: bool = False) -> list[IncrementalTask]:
    """Class-incremental ``shapes``: train and test sets generated and split in one call.

    Args:
        n_train: training images (before the split into tasks).
        n_test: test images.
        tasks: the task spec, e.g. ``"2-2"`` or ``"1-1-1-1"``.
        size: image size.
        seed: seed of the data (train uses ``seed``, test ``seed + 10_000``).
        class_order: order of introduction (default natural; see :func:`make_class_order`).
        mode: ``"overlapped"``, ``"disjoint"`` or ``"partitioned"``.
        background_shift: old classes are background in training masks.
        remap: renumber classes in order of introduction.

    Returns:
        One :class:`IncrementalTask` per step.
    """
    from segxai.data.synthetic import make_shapes

    train = make_shapes(n_train, size=size, seed=seed)
    test = make_shapes(n_test, size=size, seed=seed + 10_000)
    return incremental_tasks(train, tasks, test=test, class_order=class_order, mode=mode,
                             background_shift=background_shift, remap=remap, seed=seed)
