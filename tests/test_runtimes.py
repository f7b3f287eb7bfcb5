"""ONNX and TFLite files as black-box models through ``load_model`` (so every command's
``--model``): real files made in the test (``torch.onnx.export``) and the real MediaPipe
selfie TFLite file, compared with the PyTorch models they come from; bad files give errors
that name the file and the expected shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import segxai
from segxai.core.errors import SegxaiError
from segxai.models.zoo import load_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
SIZE = 16


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 3, 3, padding=1)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A tiny conv net exported with a fixed 1×3×16×16 input (a fixed-size network)."""
    pytest.importorskip("onnxscript")
    net, path = _net(), tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    torch.onnx.export(net, (torch.rand(1, 3, SIZE, SIZE),), str(path), verbose=False)
    return net, path


def _target(n: int = 2, size: int = SIZE, score: str = "logit_sum") -> segxai.Target:
    roi = torch.zeros(n, size, size, dtype=torch.bool)
    roi[:, size // 4:size // 2, size // 4:3 * size // 4] = True
    return segxai.Target.from_mask(roi, class_index=1).with_score(score)


def test_onnx_model_matches_the_network_and_its_occlusion(exported) -> None:
    net, path = exported
    loaded = load_model(str(path))
    assert loaded.kind == "onnx" and isinstance(loaded.model, segxai.BlackBox)
    box = loaded.model
    assert box.layout == "NCHW" and box.output == "logits" and box.batch_size == 1
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(box(x), net(x), atol=1e-5, rtol=1e-5)
        ours = segxai.explain(box, x, _target(3), method="occlusion", window=4, stride=2)
        ref = segxai.explain(net, x, _target(3), method="occlusion", window=4, stride=2)
    torch.testing.assert_close(ours.maps, ref.maps, atol=1e-4, rtol=1e-4)


def test_onnx_refusals_name_the_file_and_shape(exported) -> None:
    _, path = exported
    box = load_model(str(path)).model
    with pytest.raises(SegxaiError, match=r"\(N, 3, 16, 16\) for .*tiny\.onnx.*\(1, 3, 32, 32\)"):
        segxai.explain(box, torch.rand(1, 3, 32, 32), _target(1, 32), method="occlusion")
    with pytest.raises(SegxaiError, match="'gradient' method needs gradients.*occlusion"):
        segxai.explain(box, torch.rand(1, 3, SIZE, SIZE), _target(1), method="gradient")


def _save(tmp: Path, name: str, nodes: list, inp: list[int], out: list, outname: str = "y",
          elem: int = 1) -> Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", elem, inp)],
        [helper.make_tensor_value_info(outname, TensorProto.FLOAT, out)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp / name
    onnx.save(model, str(path))
    return path


def test_onnx_nhwc_sigmoid_output_is_read_from_the_graph(tmp_path: Path) -> None:
    from onnx import helper

    # NHWC input (a converted TensorFlow model), NCHW sigmoid output: layout and
    # probabilities are both detected
    path = _save(tmp_path, "nhwc.onnx",
                 [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                  helper.make_node("ReduceMean", ["t"], ["m"], axes=[1], keepdims=1),
                  helper.make_node("Sigmoid", ["m"], ["y"])],
                 ["n", 8, 8, 3], ["n", 1, 8, 8])
    box = load_model(str(path)).model
    assert (box.layout, box.output_layout, box.output) == ("NHWC", "NCHW", "probabilities")
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(box(x), x.mean(1, keepdim=True), atol=1e-4, rtol=1e-4)


def test_onnx_output_not_a_map(tmp_path: Path) -> None:
    from onnx import helper

    path = _save(tmp_path, "pooled.onnx",
                 [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                  helper.make_node("Flatten", ["p"], ["y"])], [1, 3, 8, 8], [1, 3])
    with pytest.raises(SegxaiError, match=r"pooled\.onnx.*N×K×H×W.*\(1, 3\)"):
        load_model(str(path))


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_and_missing_files(tmp_path: Path, suffix: str) -> None:
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a model" * 10)
    with pytest.raises(SegxaiError, match=rf"bad\{suffix}"):
        load_model(str(bad))
    with pytest.raises(SegxaiError, match=rf"missing file .*nothere\{suffix}"):
        load_model(str(tmp_path / f"nothere{suffix}"))


def test_onnx_integer_input_unsupported(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    path = _save(tmp_path, "int.onnx", [helper.make_node("Cast", ["x"], ["y"], to=1)],
                 [1, 3, 8, 8], [1, 3, 8, 8], elem=TensorProto.UINT8)
    with pytest.raises(SegxaiError, match=r"int\.onnx.*tensor\(uint8\)"):
        load_model(str(path))


# ---------------------------------------------------------------------------- TFLite
def _selfie_file() -> Path | None:
    from segxai.models.mediapipe_selfie import selfie_path

    try:
        return selfie_path()
    except SegxaiError:
        return None


SELFIE = _selfie_file()


@pytest.mark.skipif(SELFIE is None, reason="selfie model not fetched "
                    "(python -m segxai.models.mediapipe_selfie)")
def test_tflite_selfie_black_box_matches_the_pytorch_conversion() -> None:
    pytest.importorskip("ai_edge_litert")
    from segxai.models.mediapipe_selfie.parity import sample_images

    loaded = load_model(str(SELFIE))
    box = loaded.model
    assert loaded.kind == "tflite"
    assert (box.layout, box.output, box.input_shape, box.batch_size) == \
        ("NHWC", "probabilities", (3, 256, 256), 1)
    net = segxai.models.selfie()
    x = torch.from_numpy(np.stack([sample_images()["astronaut"]])).permute(0, 3, 1, 2)
    x = x.contiguous()
    # the person probability: a float32 probability cannot recover logits beyond ±16.6, so
    # the logit-sum score of saturated pixels differs by design (see BlackBox)
    target = _target(1, 256, score="prob_mean")
    kw = {"window": 64, "stride": 64, "fill": "grey"}
    ours = segxai.explain(box, x, target, method="occlusion", **kw).maps
    ref = segxai.explain(net, x, target, method="occlusion", **kw).maps
    span = float(ref.max() - ref.min())
    assert span > 0
    assert float((ours - ref).abs().max()) <= 1e-3 * span
    with pytest.raises(SegxaiError, match=r"\(N, 3, 256, 256\) for .*selfie.*\(1, 256, 256, 3\)"):
        box(torch.rand(1, 3, 128, 128))
    with pytest.raises(SegxaiError, match="'seg-grad-cam' method needs gradients"):
        segxai.explain(box, x, target, method="seg-grad-cam")
