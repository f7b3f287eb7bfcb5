"""Seg-Grad-CAM and its weightings (Grad-CAM, HiResCAM, XGrad-CAM) for segmentation."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.adapter import ModelAdapter
from segxai.core.checks import check_choice
from segxai.core.explanation import CostMeter
from segxai.core.layers import default_cam_layer, find_layer, module_name
from segxai.core.registry import Explainer, register_explainer
from segxai.core.target import Target
from segxai.explainers._autograd import vjp_many

__all__ = ["SegGradCAM", "cam_from_gradients", "resolve_layers"]

WEIGHTINGS = ("gradcam", "hirescam", "xgradcam")
_DEFAULT_LAYERS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def resolve_layers(adapter: ModelAdapter, images: Tensor,
                   layer: str | nn.Module | Sequence[str | nn.Module] | None) -> list[nn.Module]:
    """Modules for ``layer`` (a name, a module, a list of them, or None for the bottleneck)."""
    model = adapter.module
    if model is None:
        raise ValueError("model: layer-based explainers need an nn.Module, not a plain callable")
    if layer is None:
        if model not in _DEFAULT_LAYERS:
            with adapter.explaining():
                _DEFAULT_LAYERS[model] = default_cam_layer(model, images)
        return [_DEFAULT_LAYERS[model]]
    if isinstance(layer, (str, nn.Module)):
        return [find_layer(model, layer)]
    layers = [find_layer(model, item) for item in layer]
    if not layers:
        raise ValueError("layer: expected at least one layer")
    return layers


@contextlib.contextmanager
def differentiable_activations(modules: Sequence[nn.Module]) -> Iterator[list[Tensor | None]]:
    """Hooks that expose each module's output as a tensor we can differentiate to.

    If the output carries no autograd history (parameters frozen, input without grad), it is
    replaced by a detached leaf that requires grad, so that only the part of the network
    after the layer records a graph. The rest of the network receives a clone, so in-place
    operations downstream cannot overwrite the stored activation. Hooks are removed on exit.
    """
    store: list[Tensor | None] = [None] * len(modules)
    handles = []

    def make_hook(i: int):
        def hook(_m: nn.Module, _inp: object, out: object) -> Tensor:
            if not isinstance(out, Tensor) or out.dim() != 4:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"layer: expected an (N, C, h, w) tensor output, got {shape}")
            a = out if out.requires_grad else out.detach().requires_grad_(True)
            store[i] = a
            return a.clone()
        return hook

    try:
        for i, m in enumerate(modules):
            handles.append(m.register_forward_hook(make_hook(i)))
        yield store
    finally:
        for h in handles:
            h.remove()


def cam_from_gradients(activation: Tensor, grad: Tensor, weighting: str, relu: bool) -> Tensor:
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
class SegGradCAM(Explainer):
    """Seg-Grad-CAM (Vinogradova, Dibrov, Myers, AAAI 2020).

    For layer activations ``A^k`` and target score ``S`` (ROI logit sum by default),
    ``α_k = mean_uv ∂S/∂A^k_uv`` and the map is ``ReLU(Σ_k α_k A^k)`` upsampled bilinearly to
    the input size. ``weighting="hirescam"`` uses the element-wise product ``Σ_k ∂S/∂A^k ⊙ A^k``
    (Draelos & Carin 2020; Seg-HiRes-Grad-CAM, Rheude et al. 2024); ``"xgradcam"`` uses XGrad-CAM
    weights ``Σ_uv (A^k_uv / Σ A^k) ∂S/∂A^k_uv`` (Fu et al. 2020). Several layers give the mean
    of their upsampled maps. The gradient is taken only down to the layer(s).

    Args:
        layer: dotted name, module, or a list of them; ``None`` picks the bottleneck.
        weighting: ``"gradcam"`` (default), ``"hirescam"`` or ``"xgradcam"``.
        relu: apply the ReLU (default True).
    """

    differentiable = True

    def __init__(self, layer: Any = None, weighting: str = "gradcam", relu: bool = True) -> None:
        super().__init__()
        self.layer = layer
        self.params = {"layer": _layer_param(layer),
                       "weighting": check_choice(weighting, "weighting", WEIGHTINGS),
                       "relu": bool(relu)}

    def _explain_many(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
                      meter: CostMeter, create_graph: bool) -> list[tuple[Tensor, dict[str, Any]]]:
        layers = resolve_layers(adapter, images, self.layer)
        model = adapter.module
        assert model is not None
        names = [module_name(model, m) for m in layers]
        x = images if (create_graph and images.requires_grad) else images.detach()
        with adapter.frozen_parameters(), differentiable_activations(layers) as store:
            logits = adapter(x)
            acts = [a for a in store if a is not None]
            if len(acts) != len(layers):
                raise ValueError(f"layer: {names} not all run by the model's forward pass")
            scores = [t.score_from_logits(logits, binary=adapter.binary).sum() for t in targets]
            grads = vjp_many(scores, acts, create_graph=create_graph)
        meter.add_backward(images.shape[0] * len(targets))
        size = images.shape[-2:]
        out = []
        for per_target in grads:
            maps = []
            for a, g in zip(acts, per_target, strict=True):
                cam = cam_from_gradients(a, g, self.params["weighting"], self.params["relu"])
                maps.append(F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear",
                                          align_corners=False)[:, 0])
            out.append((torch.stack(maps).mean(0), {"layers": names}))
        return out


def _layer_param(layer: Any) -> Any:
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return [_layer_param(item) for item in layer]
