"""PyTorch modules for the TFLite operators of the selfie model, in NCHW layout.

Each module reproduces one operator of the TFLite reference kernels: TFLite stores images as
NHWC and kernels as ``[out, kh, kw, in]``; here activations are NCHW and kernels are permuted
once at build time. TFLite's ``SAME`` padding puts the odd extra row/column at the bottom/right,
which PyTorch's symmetric ``padding`` cannot express, so it is computed per input size and
applied with ``F.pad`` when asymmetric.

:func:`build_op` turns one :class:`~segxai.models.mediapipe_selfie.reader.OpSpec` into a module
and says which of the operator's inputs are run-time tensors (constants become parameters or
settings).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.errors import SegxaiError
from segxai.models.mediapipe_selfie.reader import OpSpec, TFLiteGraph

__all__ = ["SUPPORTED_OPS", "Activation", "Binary", "Conv", "Pool", "Resize", "TransposeConv",
           "build_op", "same_padding"]

_ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1", "HARD_SWISH", "LOGISTIC")


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TFLite ``SAME`` padding of one spatial axis: ``(before, after)``, extra at the end.

    The output has ``ceil(size / stride)`` positions; the padding is whatever the (dilated)
    kernel needs to produce them, split with the odd one after.
    """
    effective = (kernel - 1) * dilation + 1
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _activate(x: Tensor, kind: str) -> Tensor:
    if kind == "NONE":
        return x
    if kind == "RELU":
        return F.relu(x)
    if kind == "RELU6":
        return F.relu6(x)
    if kind == "RELU_N1_TO_1":
        return x.clamp(-1.0, 1.0)
    if kind == "HARD_SWISH":
        return F.hardswish(x)
    if kind == "LOGISTIC":
        return torch.sigmoid(x)
    raise SegxaiError(f"activation: expected one of {_ACTIVATIONS}, got {kind!r}")


def _check_activation(kind: str) -> str:
    if kind not in _ACTIVATIONS:
        raise SegxaiError(f"fused activation: expected one of {_ACTIVATIONS}, got {kind!r}")
    return kind


class Activation(nn.Module):
    """An element-wise activation operator (``RELU``, ``HARD_SWISH``, ``LOGISTIC``, ...)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = _check_activation(kind)

    def forward(self, x: Tensor) -> Tensor:
        return _activate(x, self.kind)

    def extra_repr(self) -> str:
        return self.kind


class Conv(nn.Module):
    """``CONV_2D`` / ``DEPTHWISE_CONV_2D``: convolution + bias + fused activation.

    Args:
        weight: the kernel in PyTorch layout ``(out, in / groups, kh, kw)``.
        bias: ``(out,)``.
        stride, dilation: ``(h, w)``.
        padding: ``"SAME"`` or ``"VALID"`` (TFLite semantics).
        groups: 1, or the input channels for a depthwise convolution.
        activation: the fused activation.
    """

    def __init__(self, weight: Tensor, bias: Tensor, stride: tuple[int, int],
                 dilation: tuple[int, int], padding: str, groups: int = 1,
                 activation: str = "NONE") -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.stride = tuple(stride)
        self.dilation = tuple(dilation)
        self.padding = padding
        self.groups = groups
        self.activation = _check_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        pad: tuple[int, int] | str = (0, 0)
        if self.padding == "SAME":
            kh, kw = self.weight.shape[-2:]
            top, bottom = same_padding(x.shape[-2], kh, self.stride[0], self.dilation[0])
            left, right = same_padding(x.shape[-1], kw, self.stride[1], self.dilation[1])
            if top == bottom and left == right:
                pad = (top, left)
            else:
                x = F.pad(x, (left, right, top, bottom))
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, self.groups)
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        out, per_group, kh, kw = self.weight.shape
        kind = "depthwise, " if self.groups > 1 else ""
        return (f"{per_group * self.groups}->{out}, {kind}kernel=({kh}, {kw}), "
                f"stride={self.stride}, padding={self.padding}, activation={self.activation}")


class TransposeConv(nn.Module):
    """MediaPipe's custom ``Convolution2DTransposeBias``: transposed convolution + bias.

    With ``SAME`` padding the output is ``stride`` times the input; the full transposed
    convolution is cropped to it, dropping ``total // 2`` rows/columns at the top/left.

    Args:
        weight: ``(in, out, kh, kw)`` (PyTorch's transposed-convolution layout).
        bias: ``(out,)``.
        stride: ``(h, w)``.
        padding: ``"SAME"`` or ``"VALID"``.
    """

    def __init__(self, weight: Tensor, bias: Tensor, stride: tuple[int, int],
                 padding: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)
        self.stride = tuple(stride)
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(x, self.weight, self.bias, self.stride)
        if self.padding == "VALID":
            return y
        out_h, out_w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        top = (y.shape[-2] - out_h) // 2
        left = (y.shape[-1] - out_w) // 2
        return y[..., top:top + out_h, left:left + out_w]

    def extra_repr(self) -> str:
        cin, out, kh, kw = self.weight.shape
        return f"{cin}->{out}, kernel=({kh}, {kw}), stride={self.stride}, padding={self.padding}"


class Pool(nn.Module):
    """``AVERAGE_POOL_2D`` with ``VALID`` padding; a window as large as the graph's input is a
    global average (so that the module also runs on other image sizes)."""

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], global_pool: bool,
                 activation: str = "NONE") -> None:
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.global_pool = global_pool
        self.activation = _check_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean(dim=(2, 3), keepdim=True) if self.global_pool else \
            F.avg_pool2d(x, self.kernel, self.stride)
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        return "global" if self.global_pool else f"kernel={self.kernel}, stride={self.stride}"


class Binary(nn.Module):
    """``ADD`` / ``MUL`` of two run-time tensors (broadcasting) + fused activation."""

    def __init__(self, kind: str, activation: str = "NONE") -> None:
        super().__init__()
        self.kind = kind
        self.activation = _check_activation(activation)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        y = a + b if self.kind == "ADD" else a * b
        return _activate(y, self.activation)

    def extra_repr(self) -> str:
        return self.kind


class Resize(nn.Module):
    """``RESIZE_BILINEAR`` with half-pixel centres (PyTorch's ``align_corners=False``) by an
    integer factor read from the graph's shapes."""

    def __init__(self, factor: tuple[int, int]) -> None:
        super().__init__()
        self.factor = tuple(factor)

    def forward(self, x: Tensor) -> Tensor:
        size = (x.shape[-2] * self.factor[0], x.shape[-1] * self.factor[1])
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


SUPPORTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "Convolution2DTransposeBias", "AVERAGE_POOL_2D",
                 "ADD", "MUL", "RESIZE_BILINEAR", "RELU", "RELU6", "HARD_SWISH", "LOGISTIC")
"""Operator kinds :func:`build_op` converts (``DEQUANTIZE`` of constants is folded on read)."""


def _param(array: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _hw(graph: TFLiteGraph, index: int) -> tuple[int, int]:
    shape = graph.tensors[index].shape
    if len(shape) != 4:
        raise SegxaiError(f"tensor {graph.tensors[index].name!r}: expected an NHWC image "
                          f"tensor, got shape {shape}")
    return shape[1], shape[2]


def build_op(op: OpSpec, graph: TFLiteGraph) -> tuple[nn.Module, tuple[int, ...]]:
    """The module for ``op`` and the indices of its run-time inputs, in call order.

    Raises:
        SegxaiError: the kind is not in :data:`SUPPORTED_OPS`, or its options are not
            supported (named in the message).
    """
    kind, opts = op.kind, op.options
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        kernel = graph.constant(op.inputs[1])  # [out, kh, kw, in] or [1, kh, kw, in * mult]
        if kind == "CONV_2D":
            weight, groups = kernel.transpose(0, 3, 1, 2), 1
        else:
            groups = graph.tensors[op.inputs[0]].shape[-1]
            weight = kernel.transpose(3, 0, 1, 2)  # (in * mult, 1, kh, kw), grouped per input
        has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
        bias = graph.constant(op.inputs[2]) if has_bias else np.zeros(weight.shape[0])
        module: nn.Module = Conv(_param(weight), _param(bias), opts["stride"], opts["dilation"],
                                 opts["padding"], groups, opts["activation"])
        return module, (op.inputs[0],)
    if kind == "Convolution2DTransposeBias":
        kernel = graph.constant(op.inputs[1])  # [out, kh, kw, in]
        weight = kernel.transpose(3, 0, 1, 2)  # (in, out, kh, kw)
        return TransposeConv(_param(weight), _param(graph.constant(op.inputs[2])),
                             opts["stride"], opts["padding"]), (op.inputs[0],)
    if kind == "AVERAGE_POOL_2D":
        in_hw = _hw(graph, op.inputs[0])
        global_pool = tuple(opts["filter"]) == in_hw and _hw(graph, op.outputs[0]) == (1, 1)
        if opts["padding"] != "VALID" and not global_pool:
            raise SegxaiError(f"AVERAGE_POOL_2D padding: expected VALID, got {opts['padding']}")
        return Pool(opts["filter"], opts["stride"], global_pool, opts["activation"]), \
            (op.inputs[0],)
    if kind in ("ADD", "MUL"):
        for i in op.inputs:
            if graph.tensors[i].data is not None:
                raise SegxaiError(f"{kind} inputs: expected two run-time tensors, got constant "
                                  f"{graph.tensors[i].name!r}")
        return Binary(kind, opts["activation"]), op.inputs
    if kind == "RESIZE_BILINEAR":
        if opts["align_corners"] or not opts["half_pixel_centers"]:
            raise SegxaiError("RESIZE_BILINEAR options: expected half_pixel_centers=True and "
                              f"align_corners=False, got {opts}")
        (h, w), (oh, ow) = _hw(graph, op.inputs[0]), _hw(graph, op.outputs[0])
        if oh % h or ow % w:
            raise SegxaiError(f"RESIZE_BILINEAR: expected an integer factor, got {h}x{w} -> "
                              f"{oh}x{ow}")
        return Resize((oh // h, ow // w)), (op.inputs[0],)
    if kind in ("RELU", "RELU6", "HARD_SWISH", "LOGISTIC"):
        return Activation(kind), (op.inputs[0],)
    raise SegxaiError(f"operator: expected one of {SUPPORTED_OPS}, got {kind!r}")
