"""Seg-Grad-CAM and its weightings (Grad-CAM, HiResCAM, XGrad-CAM) for segmentation."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from segxai.core.checks import check_choice
from segxai.core.layers import layer_param
from segxai.core.registry import register_explainer
from segxai.explainers.base import CAMExplainer

__all__ = ["SegGradCAM", "cam_from_gradients"]

WEIGHTINGS = ("gradcam", "hirescam", "xgradcam")
Weighting = Literal["gradcam", "hirescam", "xgradcam"]


def cam_from_gradients(activation: Tensor, grad: Tensor, weighting: Weighting,
                       relu: bool) -> Tensor:
    """Layer-resolution CAM ``(N, h, w)`` from activations and gradients ``(N, K, h, w)``."""
    if weighting == "gradcam":
        cam = (grad.mean(dim=(2, 3), keepdim=True) * activation).sum(1)
    elif weighting == "hirescam":
        cam = (grad * activation).sum(1)
    else:  # xgradcam
        denom = activation.sum(dim=(2, 3), keepdim=True) + 1e-7
        weights = (activation * grad).sum(dim=(2, 3), keepdim=True) / denom
        cam = (weights * activation).sum(1)
    return F.relu(cam) if relu else cam


@register_explainer("seg-grad-cam")
class SegGradCAM(CAMExplainer):
    """Seg-Grad-CAM (Vinogradova, Dibrov, Myers, AAAI 2020).

    For layer activations ``A^k`` and target score ``S`` (ROI logit sum by default),
    ``α_k = mean_uv ∂S/∂A^k_uv`` and the map is ``ReLU(Σ_k α_k A^k)`` upsampled bilinearly to
    the input size. ``weighting="hirescam"`` uses the element-wise product ``Σ_k ∂S/∂A^k ⊙ A^k``
    (Draelos & Carin 2020; Seg-HiRes-Grad-CAM, Rheude et al. 2024); ``"xgradcam"`` uses XGrad-CAM
    weights ``Σ_uv (A^k_uv / Σ A^k) ∂S/∂A^k_uv`` (Fu et al. 2020). Several layers give the mean
    of their upsampled maps. The gradient is taken only down to the layer(s).

    Args:
        layer: dotted name, module, or a list of them; ``None`` picks the faithful
            default (:func:`segxai.core.layers.default_cam_layer`).
        weighting: ``"gradcam"`` (default), ``"hirescam"`` or ``"xgradcam"``.
        relu: apply the ReLU (default True).
    """

    def __init__(self, layer: Any = None,
                 weighting: Literal["gradcam", "hirescam", "xgradcam"] = "gradcam",
                 relu: bool = True) -> None:
        super().__init__()
        self.layer = layer
        self.params = {"layer": layer_param(layer),
                       "weighting": check_choice(weighting, "weighting", WEIGHTINGS),
                       "relu": bool(relu)}

    def layer_cam(self, activation: Tensor, grad: Tensor) -> Tensor:
        return cam_from_gradients(activation, grad, self.params["weighting"], self.params["relu"])
