"""Continual (class-incremental) segmentation with saliency-compressed replay.

A replay memory under a real byte budget stores exemplars whole (``full``), downsampled
(``downsample``), as the most salient patch (``saliency-patch``, EPR-like) or as a salient box
at full resolution plus a downsampled rest (``saliency-box``, CIM-like); the learner is a
masked-logit U-Net trained task by task with replay mixed into each batch. See
``docs/continual.md``.

Example:
    >>> from segxai.continual import ContinualConfig, quick_config
    >>> quick_config().tasks
    [[1, 2], [3], [4]]
"""

from segxai.continual.compress import (
    COMPRESSED_STRATEGIES,
    STRATEGIES,
    compress,
    exemplar_nbytes,
    nearest_resize,
    reconstruct,
    saliency_box,
    saliency_patch,
)
from segxai.continual.experiment import (
    COLUMNS,
    ContinualConfig,
    load_results,
    plot_results,
    quick_config,
    run_experiment,
    summarise,
)
from segxai.continual.learner import (
    build_memory,
    evaluate_ious,
    masked_logits,
    saliency_maps,
    train_task,
    unbiased_distillation,
)
from segxai.continual.losses import (
    ReplayMix,
    SeenClassLoss,
    UnbiasedDistillation,
    mib_init,
    seen_loss,
)
from segxai.continual.memory import ReplayMemory
from segxai.continual.metrics import confusion_matrix, iou_per_class, task_metrics
from segxai.continual.scenario import (
    eval_masks,
    parse_tasks,
    seen_classes,
    task_indices,
    task_masks,
    validate_tasks,
)

__all__ = [
    "COLUMNS",
    "COMPRESSED_STRATEGIES",
    "STRATEGIES",
    "ContinualConfig",
    "ReplayMemory",
    "ReplayMix",
    "SeenClassLoss",
    "UnbiasedDistillation",
    "build_memory",
    "compress",
    "confusion_matrix",
    "eval_masks",
    "evaluate_ious",
    "exemplar_nbytes",
    "iou_per_class",
    "load_results",
    "masked_logits",
    "mib_init",
    "nearest_resize",
    "parse_tasks",
    "plot_results",
    "quick_config",
    "reconstruct",
    "run_experiment",
    "saliency_box",
    "saliency_maps",
    "saliency_patch",
    "seen_classes",
    "seen_loss",
    "summarise",
    "task_indices",
    "task_masks",
    "task_metrics",
    "train_task",
    "unbiased_distillation",
    "validate_tasks",
]
