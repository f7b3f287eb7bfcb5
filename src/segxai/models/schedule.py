"""The training schedule: learning rate per step, steps per epoch, and the per-epoch generator.

Every training run in segxai (``segxai train``, the NAS student, few-shot NAS fitness, the
continual learner) draws its randomness and its learning rate from here, so two runs with the
same settings differ only in their loss terms.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch

__all__ = ["SCHEDULES", "Schedule", "epoch_generator", "learning_rate", "steps_per_epoch"]

Schedule = Literal["onecycle", "cosine", "constant"]
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "constant")


class _LRSettings(Protocol):
    """What :func:`learning_rate` reads (a ``TrainConfig``)."""

    lr: float
    schedule: Schedule
    warmup: float


def learning_rate(step: int, total_steps: int, config: _LRSettings) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    One-cycle: linear from ``lr/25`` to ``lr`` over ``warmup`` of the steps, then cosine down
    to ``lr/1e4``. Cosine: from ``lr`` to 0. Constant: ``lr``.

    Args:
        step: the step.
        total_steps: steps of the whole run.
        config: anything with ``lr``, ``schedule`` and ``warmup`` (a ``TrainConfig``).

    Returns:
        The learning rate.
    """
    lr = float(config.lr)
    schedule = config.schedule
    if schedule == "constant" or total_steps <= 1:
        return lr
    t = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    w = float(config.warmup)
    if w > 0 and t < w:
        return lr / 25 + (lr - lr / 25) * (t / w)
    u = (t - w) / (1 - w) if w < 1 else 1.0
    return lr / 1e4 + (lr - lr / 1e4) * 0.5 * (1.0 + math.cos(math.pi * u))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of everything random in epoch ``epoch`` (0-based) of a run seeded ``seed``:
    the shuffling, the flips and any extra draws (replay samples).

    Seeding per epoch (rather than one generator for the whole run) is what lets a run resumed
    after epoch *k* draw exactly what an uninterrupted run draws.
    """
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 7919 + 17)


def steps_per_epoch(n: int, batch_size: int, max_steps: int | None = None) -> int:
    """Optimizer steps of one epoch over ``n`` samples: full batches only (the last partial
    batch is dropped), at least one, at most ``max_steps``."""
    steps = n // batch_size if n >= batch_size else 1
    if max_steps is not None:
        steps = min(steps, max_steps)
    return max(1, steps)
