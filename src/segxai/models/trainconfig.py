"""Settings and outcome of a training run (:class:`TrainConfig`, :class:`TrainResult`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from segxai.core.errors import SegxaiError
from segxai.models.schedule import SCHEDULES, Schedule

__all__ = ["LOSSES", "MEMORY_FORMATS", "LossKind", "MemoryFormat", "TrainConfig", "TrainResult"]

LossKind = Literal["ce", "ce+dice"]
LOSSES: tuple[str, ...] = ("ce", "ce+dice")
MemoryFormat = Literal["contiguous", "channels_last"]
MEMORY_FORMATS: tuple[str, ...] = ("contiguous", "channels_last")


@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop (:func:`segxai.models.fit`).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step (from the training set; hooks such as replay may add more).
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay (0: plain Adam).
        schedule: ``"onecycle"`` (linear warm-up, cosine decay), ``"cosine"`` or ``"constant"``.
        warmup: fraction of the steps spent warming up (one-cycle only).
        patience: stop when validation mIoU has not improved by more than ``min_delta`` for
            this many epochs (``None``: never stop early).
        min_delta: the improvement that counts for early stopping.
        loss: ``"ce"`` (cross-entropy) or ``"ce+dice"`` (plus the soft Dice loss averaged over
            the classes present in the batch, which counters the dominant background).
        restore_best: end with the weights of the best validation epoch (needs ``val_data``).
        augment: random flips and transposes (the 8 symmetries of the square).
        max_steps_per_epoch: cap on steps per epoch (``None``: the whole set).
        seed: seed of shuffling and augmentation.
        eval_batch_size: images per forward pass in validation.
        memory_format: ``"channels_last"`` trains with NHWC weights and batches (faster for
            depthwise and 5×5 convolutions on CPU: 1.2–1.7× per step on NAS students, see
            ``benchmarks/bench_train_memory_format.py``; the last bits of the results differ
            from ``"contiguous"``); the model is returned in the contiguous format either way.
    """

    epochs: int = 6
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "onecycle"
    warmup: float = 0.2
    patience: int | None = None
    min_delta: float = 0.0
    loss: LossKind = "ce+dice"
    restore_best: bool = True
    augment: bool = True
    max_steps_per_epoch: int | None = None
    seed: int = 0
    eval_batch_size: int = 64
    memory_format: MemoryFormat = "contiguous"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SegxaiError(f"{name}: expected an integer >= 1, got {v!r}")
        for name in ("patience", "max_steps_per_epoch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise SegxaiError(f"{name}: expected None or an integer >= 1, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise SegxaiError(f"lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise SegxaiError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            raise SegxaiError(f"schedule: expected one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise SegxaiError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup < 1:
            raise SegxaiError(f"warmup: expected a fraction in [0, 1), got {self.warmup!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise SegxaiError(f"memory_format: expected one of {', '.join(MEMORY_FORMATS)}, "
                             f"got {self.memory_format!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict. ``memory_format`` is left out at its default, so that the
        fingerprints of runs written before it existed (model cache, run stores) stay valid."""
        d = asdict(self)
        if d["memory_format"] == "contiguous":
            del d["memory_format"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ValueError)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise SegxaiError(f"data: unknown TrainConfig field(s) {sorted(unknown)}")
        return cls(**data)


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        history: one dict per epoch: ``epoch`` (1-based), ``loss`` (mean training loss),
            ``val_miou`` (or None), ``lr`` (at the end of the epoch), ``seconds``.
        best_epoch: epoch with the best validation mIoU (None without validation data).
        best_val_miou: that mIoU.
        epochs_run: epochs completed in total (including resumed ones).
        stopped_early: early stopping ended the run.
        resumed_from: epochs already done when this call started (0 = fresh run).
        completed: the run reached its end (False when stopped by ``stop_after_epoch``).
        seconds: wall time of this call.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_miou: float | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    resumed_from: int = 0
    completed: bool = False
    seconds: float = 0.0

    @property
    def val_mious(self) -> list[float | None]:
        """Validation mIoU per epoch."""
        return [h["val_miou"] for h in self.history]

    @property
    def losses(self) -> list[float]:
        """Mean training loss per epoch."""
        return [float(h["loss"]) for h in self.history]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_miou"] = self.val_mious
        return d
