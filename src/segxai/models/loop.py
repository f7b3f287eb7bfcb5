"""The training loop: every model segxai trains goes through :func:`fit`.

``segxai train`` (:func:`segxai.models.train_model`), the NAS student
(:func:`segxai.nas.train_student`), few-shot NAS fitness (:func:`segxai.nas.distill`) and the
continual learner (:func:`segxai.continual.train_task`) differ only in their data, their loss
terms (:mod:`segxai.models.losses`) and hooks; the rest is shared:

* optimiser: AdamW (``weight_decay=0`` is plain Adam), learning rate set before every step
  from :func:`segxai.models.schedule.learning_rate` (one-cycle by default);
* randomness: everything random in epoch ``e`` (shuffling, flips, replay draws) comes from
  :func:`~segxai.models.schedule.epoch_generator` ``(seed, e)``;
* augmentation: :func:`~segxai.models.augment.flip_augment` (8 symmetries of the square);
* an epoch is ``n // batch_size`` full batches of a fresh permutation (at most
  ``max_steps_per_epoch``);
* checkpoints: with ``out_dir``, a :class:`segxai.core.runstore.RunStore` of kind ``"train"``
  keeps, after every epoch, the weights, the optimiser and the global RNG state (safetensors)
  and the progress (``train_state.json``), and appends the epoch's row to ``epochs.jsonl``; a
  run killed after epoch *k* and resumed ends with the same weights as an uninterrupted one
  (same device and thread count). Other settings in the same directory are refused.

Layout of ``out_dir``::

    run.json                    kind "train" and the settings (checked when resuming)
    train_state.json            progress: epochs done, history, best, where the state lives
    epochs.jsonl                one row per finished epoch
    state/epoch-K/              model.safetensors, optimizer.{safetensors,json}, rng.safetensors,
                                best.safetensors (weights of the best epoch so far)
    model.safetensors           final weights (written when the run completes)
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.runstore import RunStore
from segxai.models.augment import flip_augment
from segxai.models.checkpoint import load_optimizer_state, save_optimizer_state
from segxai.models.losses import Batch, LossTerm, SegmentationLoss, StepContext
from segxai.models.schedule import epoch_generator, learning_rate, steps_per_epoch
from segxai.models.trainconfig import TrainConfig, TrainResult

__all__ = ["BatchHook", "TrainData", "fit"]

#: Called as ``hook(batch, generator)`` on every minibatch before augmentation (on the CPU),
#: returning the batch to train on; e.g. continual replay appends memory samples drawn from
#: the epoch's generator.
BatchHook = Callable[[Batch, torch.Generator], Batch]


@dataclass
class TrainData:
    """What the loop trains on.

    Attributes:
        images: ``(N, C, H, W)`` float images.
        masks: ``(N, H, W)`` class ids, or None (e.g. distillation towards stored logits).
        extras: per-image tensors indexed with the images (e.g. ``"teacher_logits"``).
        ignore_index: the mask value the losses skip.
    """

    images: Tensor
    masks: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    ignore_index: int = -100

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_dataset(cls, data: Any) -> TrainData:
        """From a :class:`segxai.data.SegDataset` (or anything with ``images`` and ``masks``)."""
        if isinstance(data, TrainData):
            return data
        ignore = getattr(data, "ignore_index", None)
        return cls(data.images, data.masks, ignore_index=-100 if ignore is None else int(ignore))

    def batch(self, idx: Tensor) -> Batch:
        return Batch(self.images[idx], None if self.masks is None else self.masks[idx],
                     {k: v[idx] for k, v in self.extras.items()}, self.ignore_index)


def _augment(batch: Batch, g: torch.Generator) -> Batch:
    keys = list(batch.extras)
    tensors = [batch.images, *([batch.masks] if batch.masks is not None else []),
               *(batch.extras[k] for k in keys)]
    out = flip_augment(tensors, g)
    masks = out[1] if batch.masks is not None else None
    extras = dict(zip(keys, out[2 if batch.masks is not None else 1:]))
    return Batch(out[0], masks, extras, batch.ignore_index)


def _to(batch: Batch, device: str | torch.device) -> Batch:
    return Batch(batch.images.to(device),
                 None if batch.masks is None else batch.masks.to(device),
                 {k: v.to(device) for k, v in batch.extras.items()}, batch.ignore_index)


def _memory_format(model: nn.Module, name: str) -> None:
    """Put ``model``'s 4-D weights in ``name`` format (``"contiguous"``/``"channels_last"``)."""
    model.to(memory_format=torch.channels_last if name == "channels_last"
             else torch.contiguous_format)


def _cpu_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def fit(model: nn.Module, data: Any, config: TrainConfig, *,
        terms: Sequence[LossTerm] | None = None, val_data: Any = None,
        out_dir: str | Path | None = None, device: str | torch.device = "cpu",
        progress: bool = True, desc: str = "train", stop_after_epoch: int | None = None,
        forward: Callable[[Tensor], Tensor] | None = None,
        batch_hook: BatchHook | None = None,
        finish: Callable[[RunStore, TrainResult], None] | None = None,
        on_step: Callable[[int, float], None] | None = None,
        settings: dict[str, Any] | None = None) -> TrainResult:
    """Train ``model`` in place (left in eval mode); validate, checkpoint and resume.

    Args:
        model: any network returning ``(N, K, H, W)`` logits (through ``forward``).
        data: a :class:`TrainData` or a ``SegDataset``.
        config: hyper-parameters.
        terms: the loss terms (default: ``SegmentationLoss(config.loss)``).
        val_data: a ``SegDataset`` for validation mIoU per epoch, early stopping and
            ``restore_best`` (None: no validation).
        out_dir: checkpoint directory (see the module docstring); None: nothing is written.
        device: torch device.
        progress: show a progress bar.
        desc: its label.
        stop_after_epoch: stop (as if killed) after this epoch; the run stays resumable.
        forward: the call producing logits (default ``model``; e.g. an adapter).
        batch_hook: changes every minibatch before augmentation (:data:`BatchHook`).
        finish: called with the store when a run with ``out_dir`` completes, after the final
            weights are written (e.g. to write ``config.json`` and ``metrics.json``).
        on_step: called as ``on_step(step, loss)`` after every optimizer step.
        settings: more settings that determine the result (fingerprinted with the config).

    Returns:
        A :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    from segxai.models.metrics import evaluate_miou

    if not isinstance(config, TrainConfig):
        raise SegxaiTypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    train = TrainData.from_dataset(data)
    terms = list(terms) if terms is not None else [SegmentationLoss(config.loss)]
    active = [t for t in terms if float(t.weight) != 0.0]
    if not active:
        raise SegxaiError("terms: expected at least one loss term with a non-zero weight")
    start_time = time.perf_counter()
    model.to(device)
    nhwc = config.memory_format == "channels_last"
    _memory_format(model, config.memory_format)
    forward = forward if forward is not None else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    n = len(train)
    steps = steps_per_epoch(n, config.batch_size, config.max_steps_per_epoch)
    total = steps * config.epochs

    result = TrainResult()
    best_state: dict[str, Tensor] | None = None
    bad_epochs = 0
    store = None
    if out_dir is not None:
        model_cfg = getattr(model, "config", None)
        store = RunStore(out_dir, kind="train", settings={
            "train": config.to_dict(),
            "model": model_cfg.to_dict()
            if model_cfg is not None and hasattr(model_cfg, "to_dict")
            else type(model).__name__,
            "n_train": n, "n_val": len(val_data) if val_data is not None else 0,
            "terms": {t.name: t.describe() for t in active}, **(settings or {})})
        saved = store.read_json("train_state.json")
        if saved is not None:
            result.history = saved["history"]
            result.best_epoch = saved["best_epoch"]
            result.best_val_miou = saved["best_val_miou"]
            result.epochs_run = result.resumed_from = saved["epochs_run"]
            result.stopped_early = saved["stopped_early"]
            bad_epochs = saved["bad_epochs"]
            logged = len(store.rows("epochs"))
            for row in result.history[logged:]:  # killed between the state and its row
                store.append_row("epochs", row)
            if saved.get("completed"):
                model.load_state_dict(store.read_tensors("model.safetensors"))
                model.to(device).eval()
                _memory_format(model, "contiguous")
                result.completed = True
                result.seconds = time.perf_counter() - start_time
                return result
            sdir = saved["state_dir"]
            model.load_state_dict(store.read_tensors(f"{sdir}/model.safetensors"))
            model.to(device)
            load_optimizer_state(optimizer, store.root / sdir)
            torch.set_rng_state(store.read_tensors(f"{sdir}/rng.safetensors")["torch"])
            if store.exists(f"{sdir}/best.safetensors"):
                best_state = store.read_tensors(f"{sdir}/best.safetensors")

    def state_json(state_dir: str | None, completed: bool) -> dict[str, Any]:
        return {"state_dir": state_dir, "history": result.history,
                "best_epoch": result.best_epoch, "best_val_miou": result.best_val_miou,
                "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
                "bad_epochs": bad_epochs, "completed": completed}

    def save_progress(s: RunStore) -> None:
        sdir = f"state/epoch-{result.epochs_run}"
        s.write_tensors(f"{sdir}/model.safetensors", model.state_dict())
        save_optimizer_state(optimizer, s.path(f"{sdir}/optimizer.json").parent)
        s.write_tensors(f"{sdir}/rng.safetensors", {"torch": torch.get_rng_state()})
        if best_state is not None:
            s.write_tensors(f"{sdir}/best.safetensors", best_state)
        s.write_json("train_state.json", state_json(sdir, False))
        for old in (s.root / "state").iterdir():
            if old.name != f"epoch-{result.epochs_run}":
                shutil.rmtree(old, ignore_errors=True)
        s.append_row("epochs", result.history[-1])

    done = result.epochs_run >= config.epochs or result.stopped_early
    bar = tqdm(total=total, initial=result.epochs_run * steps, disable=not progress,
               desc=desc, leave=False, dynamic_ncols=True)
    try:
        while not done:
            epoch = result.epochs_run  # 0-based index of the epoch being run
            t0 = time.perf_counter()
            g = epoch_generator(config.seed, epoch)
            perm = torch.randperm(n, generator=g)
            model.train()
            loss_sum = 0.0
            lr = config.lr
            for s in range(steps):
                batch = train.batch(perm[s * config.batch_size:(s + 1) * config.batch_size])
                if batch_hook is not None:
                    batch = batch_hook(batch, g)
                if config.augment:
                    batch = _augment(batch, g)
                batch = _to(batch, device)
                if nhwc:
                    batch.images = batch.images.contiguous(memory_format=torch.channels_last)
                step = epoch * steps + s
                lr = learning_rate(step, total, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = forward(batch.images)
                ctx = StepContext(model, forward, epoch, step)
                loss = active[0].weight * active[0](batch, logits, ctx)
                for term in active[1:]:
                    loss = loss + term.weight * term(batch, logits, ctx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach())
                if on_step is not None:
                    on_step(step, float(loss.detach()))
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
                        best_state = _cpu_copy(model)
                else:
                    bad_epochs += 1
            result.history.append({"epoch": epoch + 1, "loss": loss_sum / steps,
                                   "val_miou": val, "lr": lr,
                                   "seconds": time.perf_counter() - t0})
            result.epochs_run = epoch + 1
            if config.patience is not None and bad_epochs >= config.patience:
                result.stopped_early = True
            done = result.epochs_run >= config.epochs or result.stopped_early
            if store is not None:
                save_progress(store)
            if not done and stop_after_epoch is not None and result.epochs_run >= stop_after_epoch:
                result.seconds = time.perf_counter() - start_time
                model.eval()
                _memory_format(model, "contiguous")
                return result
    finally:
        bar.close()

    if config.restore_best and best_state is not None:
        model.load_state_dict(best_state)
        model.to(device)
    model.eval()
    _memory_format(model, "contiguous")
    result.completed = True
    result.seconds = time.perf_counter() - start_time
    if store is not None:
        store.write_tensors("model.safetensors", model.state_dict())
        if finish is not None:
            finish(store, result)
        store.write_json("train_state.json", state_json(None, True))
        shutil.rmtree(store.root / "state", ignore_errors=True)
    return result
