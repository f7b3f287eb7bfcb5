"""Read a TFLite flatbuffer into plain Python: tensors (constants as float32 arrays), operators
with their decoded options, and the graph's inputs and outputs.

The flatbuffer accessors come from the ``tflite`` package (the schema's generated classes over
``flatbuffers``; install with ``pip install segxai[selfie]``). Only what a float inference
graph needs is decoded: ``DEQUANTIZE`` operators whose input is a constant (float16 weights) are
folded away, so that every weight reaches the caller as a float32 array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segxai.core.errors import SegxaiError

__all__ = ["OpSpec", "TFLiteGraph", "TensorSpec", "read_tflite"]

_NUMPY_TYPES = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32,
                "INT64": np.int64, "INT8": np.int8, "UINT8": np.uint8}

# The custom op options of MediaPipe's ``Convolution2DTransposeBias`` are the C struct
# ``TfLiteTransposeConvParams {TfLitePadding padding; int stride_width; int stride_height;}``,
# whose padding enum (1 = SAME, 2 = VALID) differs from the schema's (0 = SAME, 1 = VALID).
_C_PADDING = {1: "SAME", 2: "VALID"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the graph.

    Attributes:
        index: its index in the subgraph.
        name: its name in the file (Keras layer names for converted Keras models).
        shape: its static shape (NHWC for images).
        dtype: the schema's type name (``"FLOAT32"``, ...); ``"FLOAT32"`` for folded constants.
        data: its value for constants (float16 weights already converted), else ``None``.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None


@dataclass(frozen=True)
class OpSpec:
    """One operator: its kind (builtin name such as ``"CONV_2D"`` or the custom code),
    input and output tensor indices (``-1`` marks an absent optional input) and options."""

    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The first subgraph of a model, with constants folded; ``ops`` are in execution order."""

    tensors: list[TensorSpec]
    ops: list[OpSpec]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    description: str = ""

    def constant(self, index: int) -> np.ndarray:
        """The value of constant tensor ``index`` (raises if it is computed at run time)."""
        data = self.tensors[index].data
        if data is None:
            raise SegxaiError(f"tensor {self.tensors[index].name!r}: expected a constant, "
                              "got a tensor computed at run time")
        return data

    def op_kinds(self) -> dict[str, int]:
        """How many operators of each kind the graph runs (folded ones not counted)."""
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.kind] = counts.get(op.kind, 0) + 1
        return counts


def _import_tflite() -> Any:
    try:
        import tflite
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SegxaiError("tflite: expected the 'tflite' package to read .tflite files, got "
                          "ImportError; install it with pip install 'segxai[selfie]'") from exc
    return tflite


def _enum_names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_")}


def _decode_options(tfl: Any, op: Any, kind: str) -> dict[str, Any]:
    """The options of the operator kinds segxai implements; other kinds get ``{}``."""
    padding = _enum_names(tfl.Padding)
    act = _enum_names(tfl.ActivationFunctionType)

    def table(cls: Any) -> Any:
        raw = op.BuiltinOptions()
        obj = cls()
        obj.Init(raw.Bytes, raw.Pos)
        return obj

    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        cls = tfl.Conv2DOptions if kind == "CONV_2D" else tfl.DepthwiseConv2DOptions
        o = table(cls)
        out = {"padding": padding[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
               "dilation": (o.DilationHFactor(), o.DilationWFactor()),
               "activation": act[o.FusedActivationFunction()]}
        if kind == "DEPTHWISE_CONV_2D":
            out["depth_multiplier"] = o.DepthMultiplier()
        return out
    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = table(tfl.Pool2DOptions)
        return {"padding": padding[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
                "filter": (o.FilterHeight(), o.FilterWidth()),
                "activation": act[o.FusedActivationFunction()]}
    if kind in ("ADD", "MUL"):
        o = table(tfl.AddOptions if kind == "ADD" else tfl.MulOptions)
        return {"activation": act[o.FusedActivationFunction()]}
    if kind == "RESIZE_BILINEAR":
        o = table(tfl.ResizeBilinearOptions)
        return {"align_corners": bool(o.AlignCorners()),
                "half_pixel_centers": bool(o.HalfPixelCenters())}
    if kind == "Convolution2DTransposeBias":
        raw = op.CustomOptionsAsNumpy().tobytes()
        if len(raw) != 12:
            raise SegxaiError(f"{kind} options: expected 12 bytes (padding, stride_w, "
                              f"stride_h as int32), got {len(raw)}")
        pad, stride_w, stride_h = struct.unpack("<3i", raw)
        if pad not in _C_PADDING:
            raise SegxaiError(f"{kind} padding: expected 1 (SAME) or 2 (VALID), got {pad}")
        return {"padding": _C_PADDING[pad], "stride": (stride_h, stride_w)}
    return {}


def _buffer_array(model: Any, blob: bytes, tensor: Any, dtype: str) -> np.ndarray | None:
    buf = model.Buffers(tensor.Buffer())
    if buf is None:
        return None
    offset = buf.Offset() if hasattr(buf, "Offset") else 0
    if offset > 1:  # large models keep buffers after the flatbuffer, addressed by offset
        raw = blob[offset:offset + buf.Size()]
    elif buf.DataLength() > 0:
        raw = buf.DataAsNumpy().tobytes()
    else:
        return None
    if dtype not in _NUMPY_TYPES:
        raise SegxaiError(f"tensor {tensor.Name().decode()!r}: expected a type among "
                          f"{sorted(_NUMPY_TYPES)}, got {dtype}")
    shape = tuple(int(s) for s in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    return np.frombuffer(raw, dtype=np.dtype(_NUMPY_TYPES[dtype]).newbyteorder("<")).reshape(shape)


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Read the first subgraph of a ``.tflite`` file.

    Args:
        path: the model file.

    Returns:
        A :class:`TFLiteGraph` whose float16 weights are float32 constants and whose
        ``DEQUANTIZE`` operators on constants are folded away.

    Raises:
        SegxaiError: the file is missing, is not a TFLite model, or holds quantised
            (int8) weights, which this reader does not dequantise.
    """
    tfl = _import_tflite()
    path = Path(path)
    if not path.is_file():
        raise SegxaiError(f"path: expected a .tflite file, got {str(path)!r} (not found)")
    blob = path.read_bytes()
    if blob[4:8] != b"TFL3":
        raise SegxaiError(f"path: expected a TFLite flatbuffer (identifier TFL3), got "
                          f"{blob[4:8]!r} in {str(path)!r}")
    model = tfl.Model.GetRootAsModel(blob, 0)
    graph = model.Subgraphs(0)
    type_names = _enum_names(tfl.TensorType)
    builtin_names = _enum_names(tfl.BuiltinOperator)

    tensors: list[TensorSpec] = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        dtype = type_names[t.Type()]
        quant = t.Quantization()
        data = _buffer_array(model, blob, t, dtype)
        if data is not None and quant is not None and quant.ScaleLength() > 0:
            raise SegxaiError(f"tensor {t.Name().decode()!r}: expected float or float16 "
                              "weights, got a quantised tensor (not supported)")
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensors.append(TensorSpec(i, t.Name().decode(), shape, dtype, data))

    kinds = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        custom = code.CustomCode()
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        kinds.append(custom.decode() if custom is not None else builtin_names[builtin])

    ops: list[OpSpec] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        kind = kinds[op.OpcodeIndex()]
        ins = tuple(int(op.Inputs(j)) for j in range(op.InputsLength()))
        outs = tuple(int(op.Outputs(j)) for j in range(op.OutputsLength()))
        if kind == "DEQUANTIZE" and tensors[ins[0]].data is not None:
            src = tensors[ins[0]]
            if src.dtype != "FLOAT16":
                raise SegxaiError(f"tensor {src.name!r}: expected float16 weights behind "
                                  f"DEQUANTIZE, got {src.dtype}")
            dst = tensors[outs[0]]
            assert src.data is not None
            tensors[outs[0]] = TensorSpec(dst.index, dst.name, dst.shape, "FLOAT32",
                                          src.data.astype(np.float32))
            continue
        ops.append(OpSpec(i, kind, ins, outs, _decode_options(tfl, op, kind)))

    desc = model.Description()
    return TFLiteGraph(
        tensors=tensors, ops=ops,
        inputs=tuple(int(graph.Inputs(j)) for j in range(graph.InputsLength())),
        outputs=tuple(int(graph.Outputs(j)) for j in range(graph.OutputsLength())),
        description=desc.decode() if desc else "")
