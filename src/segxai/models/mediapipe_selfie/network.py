"""A TFLite graph as an ``nn.Module``: one named sub-module per operator, run in graph order.

Sub-modules live in ``layers`` under the name of the tensor they produce, which for a
converted Keras model is the Keras layer name (``layers.conv2d_31``, ``layers.re_lu_12``,
``layers.add_4``): any of them can be hooked, e.g. as the layer of a CAM. A final ``LOGISTIC``
is left out, so that the module returns logits, as segxai expects.
"""

from __future__ import annotations

import re

from torch import Tensor, nn

from segxai.core.errors import SegxaiError
from segxai.models.mediapipe_selfie.ops import build_op
from segxai.models.mediapipe_selfie.reader import TFLiteGraph

__all__ = ["TFLiteNetwork", "layer_key"]


def layer_key(tensor_name: str) -> str:
    """The sub-module name for a tensor name: the converter's ``__xeno_compat__`` suffix
    dropped, characters other than letters, digits and ``_`` replaced by ``_``."""
    name = re.sub(r"__xeno_compat__\d*$", "", tensor_name)
    return re.sub(r"\W", "_", name) or "op"


class TFLiteNetwork(nn.Module):
    """The float graph of a TFLite model, converted to PyTorch (NCHW).

    Args:
        graph: a graph from :func:`~segxai.models.mediapipe_selfie.reader.read_tflite` with
            one image input and one output.
        strip_output_sigmoid: when the output is made by ``LOGISTIC``, return its input (the
            logits) instead.

    Attributes:
        layers: the operators, named by their output tensors, in execution order.
        output_activation: ``"LOGISTIC"`` when a final sigmoid was stripped, else ``"NONE"``.
        size_multiple: image height and width must be multiples of this (the total stride).

    Shape:
        - Input: ``(N, C, H, W)``, ``C`` the graph's input channels.
        - Output: ``(N, K, H', W')`` as the graph's NHWC output, moved to NCHW.
    """

    def __init__(self, graph: TFLiteGraph, strip_output_sigmoid: bool = True) -> None:
        super().__init__()
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise SegxaiError(f"graph: expected one input and one output, got "
                              f"{len(graph.inputs)} and {len(graph.outputs)}")
        self.input_index = graph.inputs[0]
        in_shape = graph.tensors[self.input_index].shape
        if len(in_shape) != 4:
            raise SegxaiError(f"graph input: expected an NHWC image, got shape {in_shape}")
        self.in_channels = in_shape[3]
        self.output_index = graph.outputs[0]
        ops = list(graph.ops)
        self.output_activation = "NONE"
        if strip_output_sigmoid and ops and ops[-1].kind == "LOGISTIC" \
                and ops[-1].outputs == (self.output_index,):
            self.output_index = ops[-1].inputs[0]
            self.output_activation = "LOGISTIC"
            ops = ops[:-1]
        self.layers = nn.ModuleDict()
        self._plan: list[tuple[str, tuple[int, ...], int]] = []
        for op in ops:
            module, inputs = build_op(op, graph)
            key = layer_key(graph.tensors[op.outputs[0]].name)
            if key in self.layers:
                key = f"{key}_{op.outputs[0]}"
            self.layers[key] = module
            self._plan.append((key, inputs, op.outputs[0]))
        self._release = self._last_uses()
        self.size_multiple = self._total_stride(graph)

    def _last_uses(self) -> list[tuple[int, ...]]:
        """Per step, the tensors no later step reads (dropped to save memory)."""
        last: dict[int, int] = {}
        for step, (_, inputs, _) in enumerate(self._plan):
            for i in inputs:
                last[i] = step
        release: list[list[int]] = [[] for _ in self._plan]
        for i, step in last.items():
            if i != self.output_index:
                release[step].append(i)
        return [tuple(r) for r in release]

    def _total_stride(self, graph: TFLiteGraph) -> int:
        """Input size over the smallest feature map larger than 1x1."""
        height = graph.tensors[self.input_index].shape[1]
        sizes = [graph.tensors[out].shape[1] for _, _, out in self._plan
                 if len(graph.tensors[out].shape) == 4 and graph.tensors[out].shape[1] > 1]
        return max(1, height // min(sizes)) if sizes else 1

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise SegxaiError(f"images: expected (N, {self.in_channels}, H, W), got shape "
                              f"{tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            raise SegxaiError(f"images: expected height and width multiples of "
                              f"{self.size_multiple}, got {h}x{w}")
        env: dict[int, Tensor] = {self.input_index: images}
        for (key, inputs, out), release in zip(self._plan, self._release):
            env[out] = self.layers[key](*(env[i] for i in inputs))
            for i in release:
                env.pop(i, None)
        return env[self.output_index]
