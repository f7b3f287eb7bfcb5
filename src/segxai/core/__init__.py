"""Core types shared by every part of segxai: model adapter, target, explanation, registry."""

from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.blackbox import BlackBox
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.explanation import Cost, Explanation
from segxai.core.layers import capture_activations, find_layer, layer_names
from segxai.core.postprocess import minmax, overlay, top_p, zscore
from segxai.core.registry import (
    Explainer,
    explain,
    get_explainer,
    list_explainers,
    register_explainer,
)
from segxai.core.runstore import RunStore
from segxai.core.target import Target

__all__ = [
    "BlackBox",
    "Cost",
    "Explainer",
    "Explanation",
    "ModelAdapter",
    "RunStore",
    "SegxaiError",
    "SegxaiTypeError",
    "Target",
    "adapt",
    "capture_activations",
    "explain",
    "find_layer",
    "get_explainer",
    "layer_names",
    "list_explainers",
    "minmax",
    "overlay",
    "register_explainer",
    "top_p",
    "zscore",
]
