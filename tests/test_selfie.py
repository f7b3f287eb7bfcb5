"""MediaPipe's selfie segmentation network in PyTorch: parity with the TFLite interpreter on
real photographs, gradients, Seg-Grad-CAM at a named layer, the fetch step and its errors.

The model-dependent tests skip when the file has not been fetched
(``python -m segxai.models.mediapipe_selfie``); the fetch step itself is tested offline with a
hand-made wheel.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import segxai
import segxai.models
from segxai.core.errors import SegxaiError
from segxai.models.mediapipe_selfie import fetch as fetch_mod
from segxai.models.mediapipe_selfie.ops import TransposeConv, build_op, same_padding
from segxai.models.mediapipe_selfie.parity import PHOTOS, compare_with_tflite, sample_images
from segxai.models.mediapipe_selfie.reader import OpSpec, TFLiteGraph

PARITY_TOL = 1e-4


def _fetched() -> Path | None:
    try:
        return fetch_mod.selfie_path()
    except SegxaiError:
        return None


MODEL_FILE = _fetched()
needs_model = pytest.mark.skipif(
    MODEL_FILE is None,
    reason="MediaPipe selfie model not fetched: run `python -m segxai.models.mediapipe_selfie`")


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return segxai.models.selfie()


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """astronaut, coffee, chelsea and noise as a (4, 3, 256, 256) batch."""
    x = np.stack(list(sample_images().values()))
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


@needs_model
def test_parity_with_tflite_interpreter(net) -> None:
    rows = compare_with_tflite(net, MODEL_FILE, sample_images())
    assert set(rows) == {*PHOTOS, "random"}
    errors = {name: row["max_abs_diff"] for name, row in rows.items()}
    assert max(errors.values()) <= PARITY_TOL, errors
    # real photographs give real masks: a person in the astronaut image, none in noise
    assert rows["astronaut"]["person_fraction"] > 0.3
    assert rows["random"]["person_fraction"] == 0.0


@needs_model
def test_adapter_sees_background_and_person(net, photos) -> None:
    x = photos
    adapter = segxai.ModelAdapter(net)
    with torch.no_grad():
        logits = adapter(x[:1])
        probs = adapter.probabilities(logits)
        z = net(x[:1])
    assert logits.shape == (1, 2, 256, 256)
    torch.testing.assert_close(logits[:, 1:], z)
    torch.testing.assert_close(logits[:, :1], -z)
    torch.testing.assert_close(probs[:, 1:], torch.sigmoid(z))
    assert segxai.models.selfie().class_names == ("background", "person")


@needs_model
def test_input_gradient_of_person_logits_is_finite_and_nonzero(net, photos) -> None:
    x = photos
    x = x[:1].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x).sum(), x)
    assert torch.isfinite(grad).all()
    assert grad.abs().sum() > 0


@needs_model
@pytest.mark.parametrize("layer", ["layers.add_4", "layers.add_13", None])
def test_seg_grad_cam_at_a_named_layer(net, photos, layer) -> None:
    x = photos
    x = x[:2]
    target = segxai.Target.from_prediction(net, x, class_index=1)
    expl = segxai.explain(net, x, target, method="seg-grad-cam", layer=layer)
    assert expl.maps.shape == (2, 256, 256)
    assert torch.isfinite(expl.maps).all()
    assert expl.maps.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


@needs_model
def test_other_sizes_run_and_bad_sizes_are_refused(net) -> None:
    with torch.no_grad():
        assert net(torch.rand(2, 3, 128, 192)).shape == (2, 1, 128, 192)
    with pytest.raises(SegxaiError, match="multiples of 16"):
        net(torch.rand(1, 3, 100, 100))
    with pytest.raises(SegxaiError, match=r"images: expected \(N, 3, H, W\)"):
        net(torch.rand(1, 1, 256, 256))


@needs_model
def test_graph_holds_the_documented_ops(net) -> None:
    from segxai.models.mediapipe_selfie.reader import read_tflite

    kinds = read_tflite(MODEL_FILE).op_kinds()
    assert kinds == {"CONV_2D": 43, "DEPTHWISE_CONV_2D": 11, "Convolution2DTransposeBias": 1,
                     "AVERAGE_POOL_2D": 10, "ADD": 14, "MUL": 10, "RESIZE_BILINEAR": 3,
                     "RELU": 22, "HARD_SWISH": 11, "LOGISTIC": 11}
    assert sum(p.numel() for p in net.parameters()) == 106_401
    assert net.output_activation == "LOGISTIC"  # the final sigmoid is stripped: logits out
    assert "layers.conv2d_31" in segxai.layer_names(net)


def test_same_padding_puts_the_extra_pixel_last() -> None:
    assert same_padding(128, 3, 2) == (0, 1)
    assert same_padding(32, 5, 2) == (1, 2)
    assert same_padding(32, 3, 1) == (1, 1)
    assert same_padding(16, 1, 1) == (0, 0)
    assert same_padding(10, 3, 1, dilation=2) == (2, 2)


@pytest.mark.parametrize(("kernel", "padding"), [(2, "SAME"), (3, "SAME"), (4, "SAME"),
                                                  (3, "VALID")])
def test_transpose_conv_matches_its_definition(kernel, padding) -> None:
    """out[y*s + ky - top, x*s + kx - left] += in[y, x] * w[ky, kx], cropped to s*n when SAME
    (TFLite's transposed convolution), against a direct loop."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64)
    w = torch.randn(2, 3, kernel, kernel, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    y = TransposeConv(w, b, (2, 2), padding)(x)
    full_h, full_w = (5 - 1) * 2 + kernel, (6 - 1) * 2 + kernel
    out_h, out_w = (10, 12) if padding == "SAME" else (full_h, full_w)
    top, left = (full_h - out_h) // 2, (full_w - out_w) // 2
    ref = torch.zeros(1, 3, full_h, full_w, dtype=torch.float64)
    for i in range(5):
        for j in range(6):
            ref[0, :, 2 * i:2 * i + kernel, 2 * j:2 * j + kernel] += \
                torch.einsum("c,cokl->okl", x[0, :, i, j], w)
    ref = ref[..., top:top + out_h, left:left + out_w] + b.view(1, 3, 1, 1)
    assert y.shape == (1, 3, out_h, out_w)
    torch.testing.assert_close(y, ref)


def test_unsupported_operator_is_named() -> None:
    graph = TFLiteGraph(tensors=[], ops=[], inputs=(), outputs=())
    with pytest.raises(SegxaiError, match="'SOFTMAX'"):
        build_op(OpSpec(0, "SOFTMAX", (0,), (1,)), graph)


def _fake_wheel(path: Path, model: bytes, licence: bytes = b"Apache License 2.0") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(fetch_mod.WHEEL_MEMBER, model)
        zf.writestr(fetch_mod.LICENSE_MEMBER, licence)
    return path


def test_fetch_from_a_wheel_verifies_and_stores(tmp_path, monkeypatch) -> None:
    payload = b"not really a model"
    monkeypatch.setattr(fetch_mod, "SELFIE_SHA256", hashlib.sha256(payload).hexdigest())
    wheel = _fake_wheel(tmp_path / "mediapipe-0.10.21-cp311-cp311-fake.whl", payload)
    path = fetch_mod.fetch_selfie(tmp_path / "cache", wheel=wheel)
    assert path.read_bytes() == payload
    assert path == fetch_mod.selfie_path(tmp_path / "cache")
    assert (path.parent / fetch_mod.LICENSE_FILE).read_bytes() == b"Apache License 2.0"
    source = json.loads((path.parent / "source.json").read_text())
    assert source["sha256"] == fetch_mod.SELFIE_SHA256 and source["license"] == "Apache-2.0"
    # present and verified: a second fetch needs no wheel
    assert fetch_mod.fetch_selfie(tmp_path / "cache", wheel=tmp_path / "absent.whl") == path


def test_fetch_refuses_a_wrong_checksum_and_stores_nothing(tmp_path) -> None:
    wheel = _fake_wheel(tmp_path / "mediapipe.whl", b"tampered")
    with pytest.raises(SegxaiError, match="expected SHA-256"):
        fetch_mod.fetch_selfie(tmp_path / "cache", wheel=wheel)
    assert not (fetch_mod.selfie_dir(tmp_path / "cache") / fetch_mod.MODEL_FILE).exists()


def test_missing_model_says_how_to_fetch(tmp_path) -> None:
    with pytest.raises(SegxaiError, match=r"python -m segxai\.models\.mediapipe_selfie"):
        segxai.models.selfie(cache_dir=tmp_path)


def test_a_changed_file_in_the_cache_is_refused(tmp_path) -> None:
    target = fetch_mod.selfie_dir(tmp_path) / fetch_mod.MODEL_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"corrupted")
    with pytest.raises(SegxaiError, match="delete it"):
        segxai.models.selfie(cache_dir=tmp_path)
