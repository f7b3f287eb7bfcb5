"""Training loop with validation mIoU per epoch, early stopping, checkpoints and exact resume.

Everything random in an epoch (shuffling, flips) is drawn from a generator seeded with
``(seed, epoch)``, and the model, optimizer and global torch RNG states are saved after every
epoch (safetensors + JSON), so a run interrupted after epoch *k* and resumed ends with the same
weights as an uninterrupted run with the same seed (on the same device and thread count).

Layout of ``out_dir``::

    train_state.json            progress: epochs done, history, best, where the state lives
    state/epoch-K/              model.safetensors, optimizer.{safetensors,json}, rng.safetensors,
                                best.safetensors (weights of the best epoch so far)
    model.safetensors           final weights (written when the run completes)
    config.json                 model config, class names, training config
    metrics.json                loss and validation mIoU per epoch
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from segxai.data.dataset import SegDataset
from segxai.models.checkpoint import (
    load_optimizer_state,
    save_checkpoint,
    save_optimizer_state,
    save_state_dict,
)
from segxai.models.metrics import evaluate_miou
from segxai.models.unet import UNet

__all__ = ["LOSSES", "SCHEDULES", "TrainConfig", "TrainResult", "learning_rate",
           "segmentation_loss", "train_model"]

SCHEDULES = ("onecycle", "cosine", "constant")
LOSSES = ("ce", "ce+dice")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train_model`.

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
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
    """

    epochs: int = 6
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.2
    patience: int | None = None
    min_delta: float = 0.0
    loss: str = "ce+dice"
    restore_best: bool = True
    augment: bool = True
    max_steps_per_epoch: int | None = None
    seed: int = 0
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        for name in ("patience", "max_steps_per_epoch"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name}: expected None or an integer >= 1, got {v!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"lr: expected a positive number, got {self.lr!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not isinstance(self.warmup, (int, float)) or not 0 <= self.warmup < 1:
            raise ValueError(f"warmup: expected a fraction in [0, 1), got {self.warmup!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict` (unknown keys raise ValueError)."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"data: unknown TrainConfig field(s) {sorted(unknown)}")
        return cls(**data)


@dataclass
class TrainResult:
    """What :func:`train_model` did.

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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["val_miou"] = self.val_mious
        return d


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    One-cycle: linear from ``lr/25`` to ``lr`` over ``warmup`` of the steps, then cosine down
    to ``lr/1e4``. Cosine: from ``lr`` to 0. Constant: ``lr``.
    """
    lr = float(config.lr)
    if config.schedule == "constant" or total_steps <= 1:
        return lr
    t = min(max(step, 0), total_steps - 1) / (total_steps - 1)
    if config.schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * t))
    w = config.warmup
    if w > 0 and t < w:
        return lr / 25 + (lr - lr / 25) * (t / w)
    u = (t - w) / (1 - w) if w < 1 else 1.0
    return lr / 1e4 + (lr - lr / 1e4) * 0.5 * (1.0 + math.cos(math.pi * u))


def segmentation_loss(logits: Tensor, target: Tensor, kind: str = "ce+dice",
                      ignore_index: int = -100) -> Tensor:
    """Cross-entropy, optionally plus the soft Dice loss ``1 - 2|P∩G| / (|P| + |G|)`` averaged
    over the classes present in the batch's ground truth.

    Args:
        logits: ``(N, K, H, W)``.
        target: ``(N, H, W)`` class ids (``ignore_index`` pixels are skipped).
        kind: ``"ce"`` or ``"ce+dice"``.
        ignore_index: the target value to skip.

    Returns:
        A scalar tensor.
    """
    ce = F.cross_entropy(logits, target, ignore_index=ignore_index)
    if kind == "ce":
        return ce
    k = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    prob = logits.softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(0, k - 1), k).permute(0, 3, 1, 2).to(prob.dtype) * valid
    inter = (prob * onehot).sum(dim=(0, 2, 3))
    denom = prob.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice[present].mean()


def _augment(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    flips = torch.rand(x.shape[0], 3, generator=g) < 0.5
    x, y = x.clone(), y.clone()
    for axis, (dx, dy) in enumerate(((-1, -1), (-2, -2))):
        sel = flips[:, axis]
        if sel.any():
            x[sel] = x[sel].flip(dx)
            y[sel] = y[sel].flip(dy)
    sel = flips[:, 2]
    if sel.any() and x.shape[-1] == x.shape[-2]:
        x[sel] = x[sel].transpose(-1, -2)
        y[sel] = y[sel].transpose(-1, -2)
    return x, y


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 7919 + 17)


def _steps_per_epoch(n: int, config: TrainConfig) -> int:
    steps = n // config.batch_size if n >= config.batch_size else 1
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    return max(1, steps)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _rng_state() -> dict[str, Tensor]:
    return {"torch": torch.get_rng_state()}


def train_model(model: UNet, train_data: SegDataset, val_data: SegDataset | None = None,
                config: TrainConfig | None = None, *, out_dir: str | Path | None = None,
                device: str = "cpu", progress: bool = True,
                stop_after_epoch: int | None = None) -> TrainResult:
    """Train ``model`` with AdamW and cross-entropy; validate, checkpoint and resume.

    Args:
        model: a :class:`UNet` (trained in place, left in eval mode).
        train_data: the training set (masks' ``ignore_index`` is honoured).
        val_data: validation set for mIoU per epoch, early stopping and ``restore_best``.
        config: hyper-parameters (default :class:`TrainConfig`).
        out_dir: checkpoint directory. When it holds a partial run with the same configuration,
            training continues after its last completed epoch; a completed run is loaded.
            ``None``: nothing is written and nothing resumed.
        device: torch device.
        progress: show a progress bar.
        stop_after_epoch: stop (as if killed) after this epoch; the run stays resumable.

    Returns:
        A :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, UNet):
        raise TypeError(f"model: expected a segxai UNet, got {type(model).__name__}")
    if not isinstance(train_data, SegDataset):
        raise TypeError(f"train_data: expected a SegDataset, got {type(train_data).__name__}")
    if val_data is not None and not isinstance(val_data, SegDataset):
        raise TypeError(f"val_data: expected a SegDataset or None, got {type(val_data).__name__}")
    if train_data.num_classes > model.config.num_classes:
        raise ValueError(f"train_data: {train_data.num_classes} classes but the model has "
                         f"{model.config.num_classes} outputs")
    if train_data.images.shape[1] != model.config.in_channels:
        raise ValueError(f"train_data: images have {train_data.images.shape[1]} channels, the "
                         f"model expects {model.config.in_channels}")
    start_time = time.perf_counter()
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps = _steps_per_epoch(len(train_data), config)
    total = steps * config.epochs
    ignore = train_data.ignore_index if train_data.ignore_index is not None else -100
    signature = {"train": config.to_dict(), "model": model.config.to_dict(),
                 "n_train": len(train_data), "n_val": len(val_data) if val_data else 0}

    result = TrainResult()
    bad_epochs = 0
    best_state: dict[str, Tensor] | None = None
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        state_file = out / "train_state.json"
        if state_file.is_file():
            saved = json.loads(state_file.read_text(encoding="utf-8"))
            if saved.get("signature") != signature:
                raise ValueError(f"out_dir: {out} holds a run with a different configuration or "
                                 "data size; use another --out directory or delete it")
            result.history = saved["history"]
            result.best_epoch = saved["best_epoch"]
            result.best_val_miou = saved["best_val_miou"]
            result.epochs_run = saved["epochs_run"]
            result.stopped_early = saved["stopped_early"]
            result.resumed_from = saved["epochs_run"]
            bad_epochs = saved["bad_epochs"]
            if saved.get("completed"):
                model.load_state_dict(load_file(str(out / "model.safetensors")))
                model.to(device).eval()
                result.completed = True
                result.seconds = time.perf_counter() - start_time
                return result
            sdir = out / saved["state_dir"]
            model.load_state_dict(load_file(str(sdir / "model.safetensors")))
            model.to(device)
            load_optimizer_state(optimizer, sdir)
            torch.set_rng_state(load_file(str(sdir / "rng.safetensors"))["torch"])
            if (sdir / "best.safetensors").is_file():
                best_state = load_file(str(sdir / "best.safetensors"))

    def state_json(state_dir: str | None, completed: bool) -> dict[str, Any]:
        return {"signature": signature, "state_dir": state_dir, "history": result.history,
                "best_epoch": result.best_epoch, "best_val_miou": result.best_val_miou,
                "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                "bad_epochs": bad_epochs, "completed": completed}

    def save_progress() -> None:
        assert out is not None
        epoch = result.epochs_run
        sdir = out / "state" / f"epoch-{epoch}"
        sdir.mkdir(parents=True, exist_ok=True)
        save_state_dict(model.state_dict(), sdir / "model.safetensors")
        save_optimizer_state(optimizer, sdir)
        save_state_dict(_rng_state(), sdir / "rng.safetensors")
        if best_state is not None:
            save_state_dict(best_state, sdir / "best.safetensors")
        _write_json(out / "train_state.json", state_json(f"state/epoch-{epoch}", False))
        for old in (out / "state").iterdir():
            if old.name != f"epoch-{epoch}":
                shutil.rmtree(old, ignore_errors=True)

    n = len(train_data)
    done = result.epochs_run >= config.epochs or result.stopped_early
    bar = tqdm(total=config.epochs * steps, initial=result.epochs_run * steps,
               disable=not progress, desc="train", leave=False, dynamic_ncols=True)
    try:
        while not done:
            epoch = result.epochs_run  # 0-based index of the epoch being run
            t0 = time.perf_counter()
            g = _epoch_generator(config.seed, epoch)
            perm = torch.randperm(n, generator=g)
            model.train()
            loss_sum = 0.0
            for s in range(steps):
                idx = perm[s * config.batch_size:(s + 1) * config.batch_size]
                x, y = train_data.images[idx], train_data.masks[idx]
                if config.augment:
                    x, y = _augment(x, y, g)
                x, y = x.to(device), y.to(device)
                lr = learning_rate(epoch * steps + s, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model(x)
                loss = segmentation_loss(logits, y, config.loss, ignore)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach())
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss.detach()):.3f}")
            val = None
            if val_data is not None:
                val = evaluate_miou(model, val_data, batch_size=config.eval_batch_size,
                                    device=device)
                if result.best_val_miou is None or val > result.best_val_miou + config.min_delta:
                    result.best_val_miou, result.best_epoch = val, epoch + 1
                    bad_epochs = 0
                    if config.restore_best:
                        best_state = {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}
                else:
                    bad_epochs += 1
            result.history.append({"epoch": epoch + 1, "loss": loss_sum / steps,
                                   "val_miou": val, "lr": lr,
                                   "seconds": time.perf_counter() - t0})
            result.epochs_run = epoch + 1
            if config.patience is not None and bad_epochs >= config.patience:
                result.stopped_early = True
            done = result.epochs_run >= config.epochs or result.stopped_early
            if out is not None:
                save_progress()
            if not done and stop_after_epoch is not None and result.epochs_run >= stop_after_epoch:
                result.seconds = time.perf_counter() - start_time
                model.eval()
                return result
    finally:
        bar.close()

    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
        model.to(device)
    model.eval()
    result.completed = True
    result.seconds = time.perf_counter() - start_time
    if out is not None:
        save_checkpoint(model, out, class_names=train_data.class_names,
                        extra={"train": config.to_dict(), "data": train_data.meta})
        _write_json(out / "metrics.json", {
            **result.to_dict(), "val_miou": result.val_mious,
            "final_val_miou": result.best_val_miou if config.restore_best
            else (result.history[-1]["val_miou"] if result.history else None)})
        _write_json(out / "train_state.json", state_json(None, True))
        shutil.rmtree(out / "state", ignore_errors=True)
    return result
