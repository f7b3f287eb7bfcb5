"""``segxai train``: the built-in U-Net trained by the one loop with the segmentation loss.

:func:`train_model` checks its inputs, runs :func:`segxai.models.loop.fit` with
``SegmentationLoss(config.loss)`` and, when the run completes, adds to ``out_dir``::

    config.json                 model config, class names, training config
    metrics.json                loss and validation mIoU per epoch

(the checkpoint layout is described in :mod:`segxai.models.loop`).
"""

from __future__ import annotations

from pathlib import Path

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.runstore import RunStore
from segxai.data.dataset import SegDataset
from segxai.models.checkpoint import save_checkpoint
from segxai.models.loop import fit
from segxai.models.losses import segmentation_loss
from segxai.models.schedule import SCHEDULES, learning_rate
from segxai.models.trainconfig import LOSSES, TrainConfig, TrainResult
from segxai.models.unet import UNet

__all__ = ["LOSSES", "SCHEDULES", "TrainConfig", "TrainResult", "learning_rate",
           "segmentation_loss", "train_model"]


def train_model(model: UNet, train_data: SegDataset, val_data: SegDataset | None = None,
                config: TrainConfig | None = None, *, out_dir: str | Path | None = None,
                device: str = "cpu", progress: bool = True,
                stop_after_epoch: int | None = None) -> TrainResult:
    """Train ``model`` with AdamW and the segmentation loss; validate, checkpoint and resume.

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

    Raises:
        SegxaiError: ``out_dir`` holds a run with other settings (a ValueError).
    """
    config = config if config is not None else TrainConfig()
    if not isinstance(config, TrainConfig):
        raise SegxaiTypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if not isinstance(model, UNet):
        raise SegxaiTypeError(f"model: expected a segxai UNet, got {type(model).__name__}")
    if not isinstance(train_data, SegDataset):
        raise SegxaiTypeError(f"train_data: expected a SegDataset, got {type(train_data).__name__}")
    if val_data is not None and not isinstance(val_data, SegDataset):
        raise SegxaiTypeError(f"val_data: expected a SegDataset or None, got {type(val_data).__name__}")
    if train_data.num_classes > model.config.num_classes:
        raise SegxaiError(f"train_data: {train_data.num_classes} classes but the model has "
                         f"{model.config.num_classes} outputs")
    if train_data.images.shape[1] != model.config.in_channels:
        raise SegxaiError(f"train_data: images have {train_data.images.shape[1]} channels, the "
                         f"model expects {model.config.in_channels}")

    def finish(store: RunStore, result: TrainResult) -> None:
        save_checkpoint(model, store.root, class_names=train_data.class_names,
                        extra={"train": config.to_dict(), "data": train_data.meta})
        store.write_json("metrics.json", {
            **result.to_dict(), "val_miou": result.val_mious,
            "final_val_miou": result.best_val_miou if config.restore_best
            else (result.history[-1]["val_miou"] if result.history else None)})

    return fit(model, train_data, config, val_data=val_data, out_dir=out_dir, device=device,
               progress=progress, stop_after_epoch=stop_after_epoch, finish=finish)
