"""Gradient explainers against independent references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segxai
from models_for_tests import LinearHead, TinySeg, calibrated


def _smooth_model() -> nn.Module:
    torch.manual_seed(1)
    return calibrated(TinySeg(act=nn.Tanh), size=12).double()


def test_vanilla_gradient_equals_central_finite_differences() -> None:
    model = _smooth_model()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    roi = torch.zeros(2, 12, 12)
    roi[:, 3:8, 4:9] = 1
    target = segxai.Target.from_mask(roi.bool(), class_index=[1, 2])
    exp = segxai.explain(model, x, target, method="gradient", abs=False, reduce="sum")

    def score(z: torch.Tensor) -> torch.Tensor:
        return target.score_from_logits(model(z).double())

    g = torch.Generator().manual_seed(0)
    h = 1e-6
    for _ in range(12):
        n, i, j = (int(torch.randint(0, s, (1,), generator=g)) for s in (2, 12, 12))
        fd = 0.0
        for c in range(3):
            xp, xm = x.clone(), x.clone()
            xp[n, c, i, j] += h
            xm[n, c, i, j] -= h
            with torch.no_grad():
                fd += float((score(xp)[n] - score(xm)[n]) / (2 * h))
        assert exp.maps[n, i, j].item() == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_gradient_channel_reductions() -> None:
    model = _smooth_model()
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    t = segxai.Target.whole_image(0, size=(12, 12))
    raw = segxai.explain(model, x, t, method="gradient", abs=False, reduce="sum").maps
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t.score_from_logits(model(xr)).sum(), xr)
    assert torch.allclose(raw, g.sum(1))
    mx = segxai.explain(model, x, t, method="gradient").maps
    assert torch.allclose(mx, g.abs().amax(1))


def test_smoothgrad_n1_sigma0_equals_gradient() -> None:
    model = _smooth_model()
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    t = segxai.Target.whole_image([0, 2], size=(12, 12), n=2)
    sg = segxai.explain(model, x, t, method="smoothgrad", n_samples=1, noise=0.0)
    vg = segxai.explain(model, x, t, method="gradient")
    assert torch.allclose(sg.maps, vg.maps, atol=1e-12)
    assert sg.cost.forward_passes == 2 and sg.cost.backward_passes == 2


def test_smoothgrad_equals_loop_over_noisy_copies() -> None:
    model = _smooth_model()
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    t = segxai.Target.whole_image(1, size=(12, 12))
    explainer = segxai.get_explainer("smoothgrad")(n_samples=5, noise=0.2, batch_size=2, seed=3)
    eps = explainer.draws(x)
    acc = torch.zeros_like(x)
    for k in range(5):
        xn = (x + eps[k]).requires_grad_(True)
        acc += torch.autograd.grad(t.score_from_logits(model(xn)).sum(), xn)[0]
    expected = (acc / 5).abs().amax(1)
    got = explainer(model, x, t).maps
    assert torch.allclose(got, expected, atol=1e-10)
    # batch size does not change the result
    other = segxai.get_explainer("smoothgrad")(n_samples=5, noise=0.2, batch_size=5, seed=3)
    assert torch.allclose(other(model, x, t).maps, got, atol=1e-10)


class ViewsInput(nn.Module):
    """Calls ``view`` on its input: a channels-last input cannot be viewed this way."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.view(x.shape[0], -1)
        return self.conv(x) * flat.mean(1).view(-1, 1, 1, 1)


def test_smoothgrad_channels_last_equals_contiguous_and_falls_back() -> None:
    torch.manual_seed(0)
    model = calibrated(TinySeg(), size=16)
    x = torch.rand(2, 3, 16, 16)
    t = segxai.Target.whole_image(1, size=(16, 16), n=2)
    kw = {"n_samples": 4, "batch_size": 2, "seed": 1}
    fast = segxai.explain(model, x, t, method="smoothgrad", **kw)
    plain = segxai.explain(model, x, t, method="smoothgrad", channels_last=False, **kw)
    assert fast.params["channels_last"] is True
    scale = float(plain.maps.abs().max())
    assert float((fast.maps - plain.maps).abs().max()) <= 1e-5 * scale
    viewing = ViewsInput().eval()
    got = segxai.explain(viewing, x, t, method="smoothgrad", **kw)
    ref = segxai.explain(viewing, x, t, method="smoothgrad", channels_last=False, **kw)
    torch.testing.assert_close(got.maps, ref.maps)


def test_seg_grad_cam_closed_form_on_linear_head() -> None:
    torch.manual_seed(0)
    model = LinearHead(channels=4, classes=3).eval()
    x = torch.rand(1, 3, 10, 10)
    roi = torch.zeros(1, 10, 10, dtype=torch.bool)
    roi[0, 2:6, 3:9] = True
    t = segxai.Target.from_mask(roi, class_index=2)
    with torch.no_grad():
        y = model(x)[0, 2]
        a = model.features(x)[0]
    m = roi[0].float()
    # Grad-CAM: alpha_k = W_ck |M| / (h w)  =>  cam = ReLU(|M|/(hw) * Y_c)
    expected = torch.relu(m.sum() / 100.0 * y)
    got = segxai.explain(model, x, t, method="seg-grad-cam", layer="features").maps[0]
    assert torch.allclose(got, expected, atol=1e-5)
    # HiResCAM: ReLU(M * Y_c)  (no bias in the head)
    got_hr = segxai.explain(model, x, t, method="seg-grad-cam", layer="features",
                            weighting="hirescam").maps[0]
    assert torch.allclose(got_hr, torch.relu(m * y), atol=1e-5)
    # XGrad-CAM: w_k = W_ck * sum_M A_k / sum A_k
    w = model.head.weight[2, :, 0, 0].detach()
    wk = w * (a * m).sum((1, 2)) / (a.sum((1, 2)) + 1e-7)
    got_x = segxai.explain(model, x, t, method="seg-grad-cam", layer="features",
                           weighting="xgradcam").maps[0]
    assert torch.allclose(got_x, torch.relu((wk.view(-1, 1, 1) * a).sum(0)), atol=1e-4)


def test_seg_grad_cam_matches_pytorch_grad_cam() -> None:
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = calibrated(deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                  num_classes=5), size=128)

    class OutOnly(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(x)["out"]

    wrapped = OutOnly(net).eval()
    x = torch.rand(1, 3, 128, 128)
    compared = 0
    for cls in range(5):
        t = segxai.Target.whole_image(cls, size=(128, 128))
        ours = segxai.explain(net, x, t, method="seg-grad-cam", layer="backbone.16").maps[0]
        with GradCAM(model=wrapped, target_layers=[net.backbone["16"]]) as cam:
            theirs = cam(input_tensor=x,
                         targets=[SemanticSegmentationTarget(cls, t.roi[0].numpy())])[0]
        theirs_t = torch.from_numpy(theirs).float()
        if float(theirs_t.max()) == 0.0:  # all-negative CAM: both must be zero after ReLU
            assert float(ours.abs().max()) == 0.0
            continue
        corr = torch.corrcoef(torch.stack([ours.flatten(), theirs_t.flatten()]))[0, 1]
        assert corr >= 0.999, (cls, float(corr))
        compared += 1
    assert compared >= 2


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "seg-grad-cam"])
def test_several_targets_in_one_call_equal_separate_calls(method: str) -> None:
    torch.manual_seed(0)
    model = calibrated(TinySeg(classes=4), size=16)
    x = torch.rand(2, 3, 16, 16)
    targets = [segxai.Target.whole_image(k, size=(16, 16), n=2) for k in range(4)]
    params = {"n_samples": 4, "batch_size": 2} if method == "smoothgrad" else {}
    together = segxai.explain(model, x, targets, method=method, **params)
    for t, e in zip(targets, together, strict=True):
        alone = segxai.explain(model, x, t, method=method, **params)
        assert torch.allclose(e.maps, alone.maps, atol=1e-5, rtol=1e-4)
    assert together[0].cost.forward_passes < 2 * len(targets) * (4 if method == "smoothgrad" else 1)


@pytest.mark.parametrize("method", ["gradient", "smoothgrad", "seg-grad-cam"])
def test_maps_stay_differentiable_with_create_graph(method: str) -> None:
    model = _smooth_model().float()
    x = torch.rand(1, 3, 12, 12, requires_grad=True)
    t = segxai.Target.whole_image(1, size=(12, 12))
    params = {"n_samples": 2} if method == "smoothgrad" else {}
    e = segxai.explain(model, x, t, method=method, create_graph=True, **params)
    assert e.maps.requires_grad
    (g,) = torch.autograd.grad(e.maps.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_one_channel_sigmoid_model() -> None:
    torch.manual_seed(0)
    model = nn.Conv2d(3, 1, 3, padding=1).eval()
    x = torch.rand(1, 3, 8, 8)
    fg = segxai.Target.whole_image(1, size=(8, 8))
    bg = segxai.Target.whole_image(0, size=(8, 8))
    gf = segxai.explain(model, x, fg, method="gradient", abs=False, reduce="sum").maps
    gb = segxai.explain(model, x, bg, method="gradient", abs=False, reduce="sum").maps
    assert torch.allclose(gf, -gb)
    logits = segxai.adapt(model)(x)
    assert logits.shape == (1, 2, 8, 8)
    p = segxai.Target.whole_image(1, size=(8, 8), score="prob_mean")
    expected = torch.sigmoid(model(x)).mean()
    assert p.score_from_logits(logits, binary=True).item() == pytest.approx(expected.item())
