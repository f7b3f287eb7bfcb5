"""Explanation attacks: keep the segmentation, move the explanation.

* :func:`attack` (Dombrowski et al. 2019 generalised to segmentation; Gipiškis et al. 2023):
  Adam in pixel space, L∞ ball, ReLU → Softplus(β) with growing β, evaluation on the ReLU model.
* :mod:`segxai.attack.config`: :class:`AttackConfig` (``AttackConfig.preset("dombrowski")``:
  the paper's 1,500 steps, valid-range clamp only), :class:`AttackResult`.
* :mod:`segxai.attack.loss`: :func:`attack_loss`, the loss whose input gradient the attack
  follows.
* :func:`evaluate_attack` (:mod:`segxai.attack.evaluation`): the same metrics for any explainer, e.g. perturbation explainers
  measured on the x_adv transferred from a gradient attack.
* :mod:`segxai.attack.targets`: target maps (shift, mirror, box, other image).
* :mod:`segxai.attack.softplus`: the in-place, always-restored Softplus(β) surgery.
* :mod:`segxai.attack.study`: attack success rates per explainer, with the β-smoothing defence.
* :mod:`segxai.attack.robustness`: the robustness map (explainers × ε, transfer, defences
  against non-adaptive and adaptive attackers; resumable) of ``segxai attack --study``.
* :mod:`segxai.attack.manipulate`: model manipulation (Heo et al. 2019), the positive control
  for CAMs.
"""

from segxai.attack.attack import attack
from segxai.attack.config import PRESETS, AttackConfig, AttackResult, parse_epsilon
from segxai.attack.evaluation import evaluate_attack, make_explainer
from segxai.attack.loss import attack_loss
from segxai.attack.metrics import (
    argmax_iou,
    map_mse,
    map_pearson,
    map_ssim,
    max_prob_change,
    normalize_map,
    perturbation_sizes,
    pixel_agreement,
)
from segxai.attack.softplus import SoftplusBeta, SoftplusSwap, count_replaceable, softplus_model
from segxai.attack.targets import (
    TARGET_KINDS,
    box_map,
    make_target_map,
    mirror_map,
    shift_map,
)

__all__ = [
    "PRESETS",
    "TARGET_KINDS",
    "AttackConfig",
    "AttackResult",
    "SoftplusBeta",
    "SoftplusSwap",
    "argmax_iou",
    "attack",
    "attack_loss",
    "box_map",
    "count_replaceable",
    "evaluate_attack",
    "make_explainer",
    "make_target_map",
    "map_mse",
    "map_pearson",
    "map_ssim",
    "max_prob_change",
    "mirror_map",
    "normalize_map",
    "parse_epsilon",
    "perturbation_sizes",
    "pixel_agreement",
    "shift_map",
    "softplus_model",
]
