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

from segxai.continual.cim import box_exemplar, box_of_mask, outside_low_pixels, random_box
from segxai.continual.compress import (
    BOX_STRATEGIES,
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
    bg_sets,
    mib_init,
    seen_loss,
    unbiased_cross_entropy,
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
from segxai.continual.selection import class_features, herding_order, probability_maps
from segxai.continual.study import ARMS, format_rq3, load_rq3, rq3_analysis, rq3_configs, run_rq3

__all__ = [
    "ARMS",
    "BOX_STRATEGIES",
    "COLUMNS",
    "COMPRESSED_STRATEGIES",
    "STRATEGIES",
    "ContinualConfig",
    "ReplayMemory",
    "ReplayMix",
    "SeenClassLoss",
    "UnbiasedDistillation",
    "bg_sets",
    "box_exemplar",
    "box_of_mask",
    "build_memory",
    "class_features",
    "compress",
    "confusion_matrix",
    "eval_masks",
    "evaluate_ious",
    "exemplar_nbytes",
    "format_rq3",
    "herding_order",
    "iou_per_class",
    "load_results",
    "load_rq3",
    "masked_logits",
    "mib_init",
    "nearest_resize",
    "outside_low_pixels",
    "parse_tasks",
    "plot_results",
    "probability_maps",
    "quick_config",
    "random_box",
    "reconstruct",
    "rq3_analysis",
    "rq3_configs",
    "run_experiment",
    "run_rq3",
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
    "unbiased_cross_entropy",
    "unbiased_distillation",
    "validate_tasks",
]
