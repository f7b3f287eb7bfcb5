"""Integrated Gradients and Grad-CAM++ against their peers (Captum, pytorch-grad-cam) on the
same model, input and target, and the protocol features the base classes own (clean logits,
resolved layers, maps differentiable w.r.t. the parameters, no per-model caches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import segxai
from models_for_tests import TinySeg, calibrated
from segxai.explainers.integrated_gradients import _blur, quadrature
from segxai.models import UNet, UNetConfig


class OutOnly(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out["out"] if isinstance(out, dict) else out


def _case(name: str, dtype: torch.dtype = torch.float32,
          ) -> tuple[nn.Module, torch.Tensor, int, torch.Tensor, str | None]:
    torch.manual_seed(0)
    if name == "deeplab":
        tv = pytest.importorskip("torchvision.models.segmentation")
        model = tv.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                num_classes=5)
        for m in model.modules():  # cumulative BatchNorm statistics: outputs not constant
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None
        model = calibrated(model, size=64, steps=4)
        layer, size = "backbone.16", 64
    else:
        model = calibrated(UNet(UNetConfig(depth=2, base_width=8, num_classes=5)), size=32)
        layer, size = None, 32
    model = model.to(dtype)
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        pred = OutOnly(model)(x).argmax(1)[0]
    cls = int(torch.bincount(pred.flatten()).argmax())
    return model, x, cls, (pred == cls).to(dtype), layer


def _rel(ours: torch.Tensor, peer: torch.Tensor) -> float:
    return float((ours - peer).abs().max()) / float(ours.max() - ours.min())


@pytest.mark.parametrize("name", ["deeplab", "unet"])
@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right",
                                  "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(name: str, rule: str) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, cls, roi, _ = _case(name)
    wrapped = OutOnly(model).eval()
    target = segxai.Target.from_mask(roi.bool(), cls)
    ig = segxai.get_explainer("integrated-gradients")(method=rule, n_steps=12, batch_size=5)
    ours = ig(model, x, target).maps[0]

    def score(inp: torch.Tensor) -> torch.Tensor:
        return (wrapped(inp)[:, cls] * roi).flatten(1).sum(1)

    peer = captum.IntegratedGradients(score).attribute(
        x, baselines=torch.zeros_like(x), n_steps=12, method=rule)[0].sum(0)
    if rule == "riemann_trapezoid":
        peer = peer * 12 / 11  # Captum's trapezoid weights sum to (n − 1)/n; ours to 1
    assert _rel(ours, peer) <= 1e-5


@pytest.mark.parametrize("name", ["deeplab", "unet"])
def test_integrated_gradients_blur_baseline_matches_captum(name: str) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, cls, roi, _ = _case(name)
    wrapped = OutOnly(model).eval()
    target = segxai.Target.from_mask(roi.bool(), cls)
    ours = segxai.explain(model, x, target, method="integrated-gradients", baseline="blur",
                          n_steps=10).maps[0]

    def score(inp: torch.Tensor) -> torch.Tensor:
        return (wrapped(inp)[:, cls] * roi).flatten(1).sum(1)

    peer = captum.IntegratedGradients(score).attribute(x, baselines=_blur(x, 5.0),
                                                       n_steps=10)[0].sum(0)
    assert _rel(ours, peer) <= 1e-5


@pytest.mark.parametrize(("name", "dtype"), [("deeplab", torch.float64),
                                             ("unet", torch.float32)])
def test_grad_cam_plus_plus_matches_pytorch_grad_cam(name: str, dtype: torch.dtype) -> None:
    # DeepLab in float64: at backbone.16 some channels have 2g² + (ΣA)g³ ≈ 0 (α's denominator
    # cancels to ~1e-3 of its terms), so float32 rounding of ΣA alone moves those α by ~1e-4
    # of the map range whatever the implementation; float64 shows the formulas agree
    pgc = pytest.importorskip("pytorch_grad_cam")
    model, x, cls, roi, layer = _case(name, dtype)
    wrapped = OutOnly(model).eval()
    target = segxai.Target.from_mask(roi.bool(), cls)
    e = segxai.explain(model, x, target, method="grad-cam++", layer=layer)
    ours = e.extras["layer_maps"][0][0]
    module = dict(model.named_modules())[e.layers[0]]

    class RoiLogitSum:
        def __call__(self, out: torch.Tensor) -> torch.Tensor:
            return (out[cls] * roi).sum()

    cam = pgc.GradCAMPlusPlus(model=wrapped, target_layers=[module])
    cam(input_tensor=x, targets=[RoiLogitSum()])
    acts = cam.activations_and_grads.activations[0].cpu().numpy()
    grads = cam.activations_and_grads.gradients[0].cpu().numpy()
    # compared before pytorch-grad-cam's min-max and cv2 resize (ReLU applied as it does)
    peer = np.maximum(cam.get_cam_image(x, module, [RoiLogitSum()], acts, grads, False), 0)[0]
    assert float(ours.max()) > 0
    assert _rel(ours, torch.from_numpy(peer)) <= 1e-5
    assert e.maps.shape == (1, *x.shape[-2:])


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_quadrature_integrates_polynomials(rule: str) -> None:
    alphas, weights = quadrature(rule, 8)
    approx = sum(w * a ** 2 for a, w in zip(alphas, weights, strict=True))
    tol = 1e-12 if rule == "gausslegendre" else 1e-2
    assert abs(sum(weights) - 1) < 1e-12 and abs(approx - 1 / 3) < tol


def test_integrated_gradients_completeness() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 1)).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    t = segxai.Target.whole_image(1, size=(8, 8), n=2)
    maps = segxai.explain(net, x, t, method="integrated-gradients", n_steps=32).maps
    s = t.score_from_logits(net(x)) - t.score_from_logits(net(torch.zeros_like(x)))
    assert torch.allclose(maps.flatten(1).sum(1), s, rtol=1e-6)


def test_explanation_carries_clean_logits_and_layers() -> None:
    model = calibrated(TinySeg(classes=3, width=4), size=16)
    x = torch.rand(2, 3, 16, 16)
    t = segxai.Target.whole_image(1, size=(16, 16), n=2)
    with torch.no_grad():
        ref = model(x)
    for method, layers in [("gradient", []), ("seg-grad-cam", ["down"]),
                           ("grad-cam++", ["down"])]:
        e = segxai.explain(model, x, t, method=method, layer="down") if layers else \
            segxai.explain(model, x, t, method=method)
        assert e.layers == layers
        assert e.logits is not None and torch.allclose(e.logits, ref, atol=1e-5)
        assert not e.logits.requires_grad
    e = segxai.explain(model, x, t, method="occlusion", window=8, stride=8)
    assert e.logits is not None and torch.allclose(e.logits, ref, atol=1e-4)
    assert segxai.explain(model, x, t, method="seg-grad-cam").layers  # default layer named


def test_maps_differentiable_wrt_parameters() -> None:
    model = calibrated(TinySeg(classes=3, width=4, act=nn.Softplus), size=16).train()
    x = torch.rand(1, 3, 16, 16)
    t = segxai.Target.whole_image(1, size=(16, 16))
    params = {"seg-grad-cam": {"relu": False}, "grad-cam++": {"relu": False}, "gradient": {},
              "integrated-gradients": {"n_steps": 4}}
    for method, kwargs in params.items():
        e = segxai.explain(model, x, t, method=method, differentiable_wrt="params", **kwargs)
        assert e.maps.requires_grad
        grads = torch.autograd.grad(e.maps.sum(), list(model.parameters()), allow_unused=True)
        assert any(g is not None and float(g.abs().max()) > 0 for g in grads), method
        assert model.training  # the caller's mode is kept for training losses
    with pytest.raises(ValueError, match="create_graph"):
        segxai.explain(model, x, t, method="occlusion", differentiable_wrt="params")


def test_adapter_learns_classes_from_the_explainers_forward() -> None:
    net = nn.Conv2d(3, 1, 1)  # one-channel (sigmoid) model
    adapter = segxai.ModelAdapter(net)
    with pytest.raises(RuntimeError, match="binary"):
        _ = adapter.binary
    x = torch.rand(1, 3, 8, 8)
    e = segxai.explain(adapter, x, segxai.Target.whole_image(1, size=(8, 8)), method="gradient")
    assert adapter.binary and adapter.known_num_classes == 2
    assert e.cost.forward_passes == 1  # no probe forward
    fresh = segxai.ModelAdapter(net)  # nothing is cached per model object
    assert fresh.known_num_classes is None
