"""Grad-CAM++ (Chattopadhay, Sarkar, Howlader, Balasubramanian, WACV 2018) for segmentation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.core.layers import layer_param
from segxai.core.registry import register_explainer
from segxai.explainers.base import CAMExplainer

__all__ = ["GradCAMPlusPlus"]


@register_explainer("grad-cam++")
class GradCAMPlusPlus(CAMExplainer):
    """Grad-CAM++ (Chattopadhay et al., "Grad-CAM++: generalized gradient-based visual
    explanations for deep convolutional networks", WACV 2018), segmentation form.

    The score ``S`` is the target's (the class's logits summed over the ROI). As in the
    paper, the class score is taken as ``Y = exp(S)``; ``S`` being piecewise linear in the
    activations ``A``, the higher derivatives of ``Y`` become powers of ``g = ∂S/∂A`` and the
    common factor ``exp(S)`` cancels, giving the closed form

    ``α^k_ij = g² / (2g² + Σ_ab A^k_ab · g³)``,   ``w_k = Σ_ij α^k_ij · ReLU(g^k_ij)``,

    and the map ``ReLU(Σ_k w_k A^k)`` upsampled bilinearly to the input size (``α = 0`` where
    ``g = 0``). One forward and one backward per image, like Seg-Grad-CAM.

    Args:
        layer: dotted name, module, or a list of them; ``None`` picks the faithful
            default (:func:`segxai.core.layers.default_cam_layer`).
        relu: apply the final ReLU (default True).
        eps: added to the denominator of ``α`` against division by zero.
    """

    def __init__(self, layer: Any = None, relu: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) \
                or not math.isfinite(eps) or eps < 0:
            raise SegxaiError(f"eps: expected a non-negative number, got {eps!r}")
        self.layer = layer
        self.params = {"layer": layer_param(layer), "relu": bool(relu), "eps": float(eps)}

    def layer_cam(self, activation: Tensor, grad: Tensor) -> Tensor:
        g2 = grad * grad
        denom = 2 * g2 + activation.sum(dim=(2, 3), keepdim=True) * g2 * grad + self.params["eps"]
        safe = torch.where(denom == 0, torch.ones_like(denom), denom)
        alpha = torch.where(grad != 0, g2 / safe, torch.zeros_like(g2))
        weights = (alpha * F.relu(grad)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * activation).sum(1)
        return F.relu(cam) if self.params["relu"] else cam
