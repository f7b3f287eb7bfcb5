"""ONNX and TFLite files as :class:`~segxai.core.BlackBox` models.

``load_onnx`` runs a file with onnxruntime, ``load_tflite`` with the LiteRT interpreter
(``ai-edge-litert``); both need the ``runtimes`` extra (``pip install segxai[runtimes]``).
The input layout is read from the model's input shape (a dimension of 1, 3 or 4 next to the
batch is the channel axis; ambiguous shapes default to NCHW for ONNX and NHWC for TFLite); the
output must be ``N×K×H×W`` (ONNX) or ``N×H×W×K`` (TFLite), unless its static shape shows
the other layout (the input's height and width in the other place). Whether the
output holds probabilities is read from the graph (a final ``Sigmoid``/``Softmax`` or
``LOGISTIC``/``SOFTMAX`` operator) unless given. Fixed input sizes and batch sizes are kept:
an image of another size raises an error naming the file and the expected shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from segxai.core.blackbox import BlackBox, Layout
from segxai.core.errors import SegxaiError

__all__ = ["detect_layout", "load_onnx", "load_tflite"]

Output = Literal["auto", "logits", "probabilities"]
_CHANNELS = (1, 3, 4)


def detect_layout(shape: Sequence[int | None], default: Layout) -> Layout:
    """``"NCHW"`` or ``"NHWC"`` from a 4-D input shape (``None``: a free dimension)."""
    first = shape[1] in _CHANNELS
    last = shape[3] in _CHANNELS
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    return default


def _static(dim: Any) -> int | None:
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else None


def _need(module: str, path: Path) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SegxaiError(f"model: expected {module} to run {str(path)!r}, got it not "
                          "installed (pip install segxai[runtimes])") from exc


def _input_geometry(path: Path, shape: Sequence[int | None],
                    default: Layout) -> tuple[Layout, tuple[int | None, ...], int | None]:
    if len(shape) != 4:
        raise SegxaiError(f"model: expected {str(path)!r} to take N×C×H×W or N×H×W×C images, "
                          f"got an input of shape {tuple(shape)}")
    layout = detect_layout(shape, default)
    n, *rest = shape
    chw = tuple(rest) if layout == "NCHW" else (rest[2], rest[0], rest[1])
    return layout, chw, n


def _output_layout(path: Path, shape: Sequence[Any], chw: Sequence[int | None],
                   default: Layout) -> Layout:
    """The output layout: ``default`` unless the static shape puts the input's height and
    width in the other layout's place."""
    want = "N×K×H×W" if default == "NCHW" else "N×H×W×K"
    if len(shape) != 4:
        raise SegxaiError(f"model: expected {str(path)!r} to output {want} class scores, got "
                          f"an output of shape {tuple(shape)}")
    dims = [_static(d) for d in shape]
    hw = tuple(chw[1:])
    if None not in hw:
        if tuple(dims[2:]) == hw:
            return "NCHW"
        if tuple(dims[1:3]) == hw:
            return "NHWC"
    return default


def load_onnx(path: str | Path, *, output: Output = "auto",
              num_classes: int | None = None) -> BlackBox:
    """An ONNX segmentation model as a :class:`~segxai.core.BlackBox` (onnxruntime, CPU).

    Args:
        path: the ``.onnx`` file (one float image input, first output ``N×K×H×W``).
        output: ``"logits"``, ``"probabilities"`` or ``"auto"`` (probabilities when the
            output is made by a ``Sigmoid`` or ``Softmax`` node).
        num_classes: checked against the output's channels when given.

    Raises:
        SegxaiError: the file is missing, corrupt or unsupported, or its output is not
            ``N×K×H×W``; each message names the file.
    """
    path = Path(path)
    ort = _need("onnxruntime", path)
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise SegxaiError(f"model: expected an ONNX model in {str(path)!r}, got a file "
                          f"onnxruntime cannot load: {str(exc).splitlines()[0][:300]}") from exc
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if inp.type not in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        raise SegxaiError(f"model: expected a float image input in {str(path)!r}, got "
                          f"{inp.type} (quantised or non-image models are not supported)")
    shape = [_static(d) for d in inp.shape]
    layout, chw, batch = _input_geometry(path, shape, "NCHW")
    out_layout = _output_layout(path, out.shape, chw, "NCHW")
    kind = output if output != "auto" else _onnx_output_kind(path, out.name)
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}.get(inp.type,
                                                                           np.float32)

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([out.name], {inp.name: x.astype(dtype)})[0].astype(np.float32)

    return BlackBox(run, num_classes=num_classes, output=kind, layout=layout,
                    output_layout=out_layout, array="numpy",
                    input_shape=chw, batch_size=batch, name=str(path))


def _onnx_output_kind(path: Path, name: str) -> Literal["logits", "probabilities"]:
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - only a hint; onnxruntime already loaded the file
        return "logits"
    for node in graph.node:
        if name in node.output:
            return "probabilities" if node.op_type in ("Sigmoid", "Softmax") else "logits"
    return "logits"


def load_tflite(path: str | Path, *, output: Output = "auto",
                num_classes: int | None = None) -> BlackBox:
    """A TFLite segmentation model as a :class:`~segxai.core.BlackBox` (LiteRT interpreter).

    Args:
        path: the ``.tflite`` file (one float image input, first output ``N×H×W×K``).
        output: ``"logits"``, ``"probabilities"`` or ``"auto"`` (probabilities when the
            output is made by ``LOGISTIC`` or ``SOFTMAX``).
        num_classes: checked against the output's channels when given.

    Raises:
        SegxaiError: the file is missing, corrupt or unsupported, or its output is not
            4-D; each message names the file.
    """
    path = Path(path)
    litert = _need("ai_edge_litert.interpreter", path)
    try:
        interpreter = litert.Interpreter(model_path=str(path),
                                         num_threads=torch.get_num_threads())
        interpreter.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError for bad files
        raise SegxaiError(f"model: expected a TFLite model in {str(path)!r}, got a file the "
                          f"interpreter cannot load: {str(exc).splitlines()[0][:300]}") from exc
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if inp["dtype"] != np.float32 or out["dtype"] != np.float32:
        raise SegxaiError(f"model: expected float32 input and output in {str(path)!r}, got "
                          f"{np.dtype(inp['dtype']).name} and {np.dtype(out['dtype']).name} "
                          "(quantised models are not supported)")
    signature = inp.get("shape_signature", inp["shape"])
    shape = [_static(d) for d in signature]
    layout, chw, batch = _input_geometry(path, shape, "NHWC")
    out_layout = _output_layout(path, list(out["shape"]), chw, "NHWC")
    kind = output if output != "auto" else _tflite_output_kind(interpreter, out["index"])
    current = [tuple(int(d) for d in inp["shape"])]

    def run(x: np.ndarray) -> np.ndarray:
        if tuple(x.shape) != current[0]:  # free dimensions: resize to this input
            interpreter.resize_tensor_input(inp["index"], list(x.shape))
            interpreter.allocate_tensors()
            current[0] = tuple(x.shape)
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(out["index"]).copy()

    return BlackBox(run, num_classes=num_classes, output=kind, layout=layout,
                    output_layout=out_layout, array="numpy",
                    input_shape=chw, batch_size=batch, name=str(path))


def _tflite_output_kind(interpreter: Any,
                        index: int) -> Literal["logits", "probabilities"]:
    try:
        ops = interpreter._get_ops_details()  # the only way the interpreter lists operators
    except Exception:  # noqa: BLE001 - only a hint; default to logits
        return "logits"
    for op in ops:
        if index in list(op.get("outputs", ())):
            return "probabilities" if op.get("op_name") in ("LOGISTIC", "SOFTMAX") \
                else "logits"
    return "logits"
