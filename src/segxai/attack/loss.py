"""The loss of an explanation attack (Dombrowski et al. 2019, generalised to segmentation).

Per image, with ``h`` the explainer's map normalised to sum 1 and ``h_t`` the target map:

    λ_e · H·W · ‖h(x_adv) − h_t‖²  (or λ_e · (1 − r(h, h_t)))
    + λ_o · output term  +  λ_p · mean (x_adv − x)²        (pixel space)

The output term is the squared change of the softmax map, summed over classes and averaged
over pixels (``output_reduction="sum"``) or averaged over both (``"mean"``, the paper's
``MSE(softmax)``). One function builds the whole graph, so the attack and the test that its
input gradient is non-zero (``tests/test_attack_gradients.py``) use the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from segxai.attack.config import AttackConfig
from segxai.attack.evaluation import explain_with_logits
from segxai.attack.metrics import normalize_map
from segxai.core.adapter import ModelAdapter
from segxai.core.registry import Explainer
from segxai.core.stats import pearson
from segxai.core.target import Target

__all__ = ["AttackLoss", "attack_loss"]


@dataclass
class AttackLoss:
    """The per-image loss and its parts (all ``(N,)``), the map ``h`` (sum 1) and logits."""

    total: Tensor
    explanation: Tensor
    output: Tensor
    input: Tensor
    maps: Tensor
    logits: Tensor


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Differentiable per-image Pearson correlation of ``(N, H, W)`` maps (0 if constant)."""
    return torch.nan_to_num(pearson(a.flatten(1), b.flatten(1), dim=1), nan=0.0)


def attack_loss(adapter: ModelAdapter, explainer: Explainer, pixels: Tensor, clean_pixels: Tensor,
                target: Target, target_map: Tensor, clean_probs: Tensor,
                cfg: AttackConfig) -> AttackLoss:
    """The attack loss of pixel-space images ``pixels`` (kept in the graph).

    Args:
        adapter: the model (its ReLUs smoothed by the caller, for a non-zero second
            derivative).
        explainer: a differentiable explainer (maps built with ``create_graph=True``).
        pixels: ``(N, C, H, W)`` pixel-space images being optimised.
        clean_pixels: the clean pixel-space images.
        target: the explained target.
        target_map: ``(N, H, W)`` sum-1 target maps.
        clean_probs: the clean softmax maps (detached).
        cfg: the weights and the form of each term.
    """
    _, _, h, w = pixels.shape
    z = adapter.from_pixels(pixels)
    maps, logits, _ = explain_with_logits(adapter, explainer, z, target, create_graph=True)
    hm = normalize_map(maps)
    if cfg.explanation_loss == "mse":
        l_e = (h * w) * ((hm - target_map) ** 2).flatten(1).sum(1)
    else:
        l_e = 1.0 - _pearson(hm, target_map)
    d2 = (adapter.probabilities(logits) - clean_probs) ** 2
    l_o = (d2.sum(1) if cfg.output_reduction == "sum" else d2.mean(1)).flatten(1).mean(1)
    l_p = ((pixels - clean_pixels) ** 2).flatten(1).mean(1)
    total = cfg.lambda_explanation * l_e + cfg.lambda_output * l_o + cfg.lambda_input * l_p
    return AttackLoss(total, l_e, l_o, l_p, hm, logits)
