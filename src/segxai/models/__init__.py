"""Built-in models: a configurable U-Net, its training loop (validation mIoU, early stop,
safetensors checkpoints, exact resume) and the cached built-in model of the demo."""

from segxai.models.builtin import (
    BuiltinModel,
    BuiltinRecipe,
    builtin_recipe,
    default_cache_dir,
    load_or_train_builtin,
)
from segxai.models.checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    read_checkpoint_config,
    save_checkpoint,
    save_optimizer_state,
)
from segxai.models.loop import TrainData, fit
from segxai.models.losses import (
    Batch,
    KLDistillation,
    LossTerm,
    SegmentationLoss,
    StepContext,
    kl_distillation,
    segmentation_loss,
)
from segxai.models.mediapipe_selfie import selfie
from segxai.models.metrics import (
    confusion_matrix,
    evaluate_miou,
    evaluate_segmentation,
    miou_from_confusion,
    predict_dataset,
)
from segxai.models.schedule import epoch_generator, learning_rate, steps_per_epoch
from segxai.models.train import TrainConfig, TrainResult, train_model
from segxai.models.unet import BLOCKS, UNet, UNetConfig, count_parameters, layer_names_by_stage

__all__ = [
    "BLOCKS",
    "Batch",
    "BuiltinModel",
    "BuiltinRecipe",
    "KLDistillation",
    "LossTerm",
    "SegmentationLoss",
    "StepContext",
    "TrainData",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetConfig",
    "builtin_recipe",
    "confusion_matrix",
    "count_parameters",
    "default_cache_dir",
    "evaluate_miou",
    "epoch_generator",
    "evaluate_segmentation",
    "fit",
    "kl_distillation",
    "layer_names_by_stage",
    "learning_rate",
    "load_checkpoint",
    "load_optimizer_state",
    "load_or_train_builtin",
    "miou_from_confusion",
    "predict_dataset",
    "read_checkpoint_config",
    "save_checkpoint",
    "save_optimizer_state",
    "segmentation_loss",
    "selfie",
    "steps_per_epoch",
    "train_model",
]
