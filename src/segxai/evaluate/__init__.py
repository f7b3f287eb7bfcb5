"""Evaluation of explanations: faithfulness (deletion/insertion curves), cost, localisation,
sanity (cascading randomisation), complexity, robustness and the context-bias benchmark, and
a runner that evaluates methods × images into a tidy, resumable table."""

from segxai.evaluate.complexity import complexity, sparseness
from segxai.evaluate.context_bias import (
    bias_sanity,
    class_iou,
    context_bias_benchmark,
    context_bias_detection,
    context_bias_localisation,
    normalise_saliency,
    train_bias_model,
)
from segxai.evaluate.cost import cost_metrics
from segxai.evaluate.curves import (
    CURVE_SCORES,
    SUBSTRATES,
    CurveResult,
    auc,
    deletion_curve,
    deletion_insertion,
    gaussian_blur,
    insertion_curve,
    pixel_ranks,
    substrate_images,
)
from segxai.evaluate.localisation import energy_pointing_game, pointing_game
from segxai.evaluate.robustness import SensitivityResult, max_sensitivity
from segxai.evaluate.runner import (
    RANDOM_BASELINE,
    EvalConfig,
    EvalResult,
    choose_target,
    evaluate_methods,
    interpret,
    select_images,
    summarise,
)
from segxai.evaluate.sanity import (
    SanityResult,
    cascade_groups,
    cascading_randomization,
    randomize_modules,
    spearman,
    ssim,
)

__all__ = [
    "CURVE_SCORES",
    "RANDOM_BASELINE",
    "SUBSTRATES",
    "CurveResult",
    "EvalConfig",
    "EvalResult",
    "SanityResult",
    "SensitivityResult",
    "auc",
    "bias_sanity",
    "cascade_groups",
    "cascading_randomization",
    "choose_target",
    "class_iou",
    "complexity",
    "context_bias_benchmark",
    "context_bias_detection",
    "context_bias_localisation",
    "cost_metrics",
    "deletion_curve",
    "deletion_insertion",
    "energy_pointing_game",
    "evaluate_methods",
    "gaussian_blur",
    "insertion_curve",
    "interpret",
    "max_sensitivity",
    "normalise_saliency",
    "pixel_ranks",
    "pointing_game",
    "randomize_modules",
    "select_images",
    "sparseness",
    "train_bias_model",
    "spearman",
    "ssim",
    "substrate_images",
    "summarise",
]
