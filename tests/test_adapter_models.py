"""The adapter and the gradient explainers work unchanged on common segmentation models."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import segxai
from models_for_tests import TinySeg, calibrated


def _torchvision(name: str) -> nn.Module:
    from torchvision.models import segmentation as seg

    return getattr(seg, name)(weights=None, weights_backbone=None, num_classes=4)


def _smp(name: str) -> nn.Module:
    smp = pytest.importorskip("segmentation_models_pytorch")
    return getattr(smp, name)(encoder_name="resnet18", encoder_weights=None, classes=4)


def _builtin() -> nn.Module:
    from segxai.models import UNet, UNetConfig

    return UNet(UNetConfig(num_classes=4))


ZOO = {
    "fcn_resnet50": lambda: _torchvision("fcn_resnet50"),
    "deeplabv3_mobilenet_v3_large": lambda: _torchvision("deeplabv3_mobilenet_v3_large"),
    "lraspp_mobilenet_v3_large": lambda: _torchvision("lraspp_mobilenet_v3_large"),
    "smp_unet": lambda: _smp("Unet"),
    "smp_fpn": lambda: _smp("FPN"),
    "builtin_unet": _builtin,
}


@pytest.mark.parametrize("name", list(ZOO))
def test_model_zoo(name: str) -> None:
    torch.manual_seed(0)
    model = calibrated(ZOO[name](), size=64, steps=2)
    x = torch.rand(1, 3, 64, 64)
    adapter = segxai.adapt(model)
    logits = adapter(x)
    assert logits.shape == (1, 4, 64, 64)
    target = segxai.Target.whole_image(2, size=(64, 64))
    for method, params in [("gradient", {}), ("seg-grad-cam", {}),
                           ("smoothgrad", {"n_samples": 2})]:
        e = segxai.explain(model, x, target, method=method, **params)
        assert e.maps.shape == (1, 64, 64)
        assert torch.isfinite(e.maps).all()
    grads = segxai.explain(model, x, target, method="gradient").maps
    assert grads.abs().sum() > 0


def test_output_conventions() -> None:
    conv = nn.Conv2d(3, 3, 1)
    x = torch.rand(2, 3, 8, 8)
    ref = conv(x)

    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = conv

        def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"out": self.c(z), "aux": torch.zeros(1)}

    class ObjOut(DictOut):
        def forward(self, z: torch.Tensor) -> SimpleNamespace:  # type: ignore[override]
            return SimpleNamespace(logits=self.c(z))

    class TupleOut(DictOut):
        def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
            return self.c(z), torch.zeros(1)

    class LowRes(DictOut):
        def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.c(z)[..., ::2, ::2]

    for cls in (DictOut, ObjOut, TupleOut):
        assert torch.allclose(segxai.adapt(cls())(x), ref)
    up = segxai.adapt(LowRes())(x)
    assert up.shape == (2, 3, 8, 8)
    expected = torch.nn.functional.interpolate(ref[..., ::2, ::2], size=(8, 8), mode="bilinear",
                                               align_corners=False)
    assert torch.allclose(up, expected)


def test_pixel_space_conversions() -> None:
    adapter = segxai.ModelAdapter(nn.Conv2d(3, 2, 1), mean="imagenet", std="imagenet")
    px = torch.rand(1, 3, 4, 4)
    assert torch.allclose(adapter.to_pixels(adapter.from_pixels(px)), px, atol=1e-6)
    lo, hi = adapter.pixel_bounds(px)
    assert torch.allclose(adapter.to_pixels(lo), torch.zeros(1, 3, 1, 1), atol=1e-6)
    assert torch.allclose(adapter.to_pixels(hi), torch.ones(1, 3, 1, 1), atol=1e-6)
    # 0 in normalised space is the mean colour, not black
    mean_colour = adapter.colour((0.485, 0.456, 0.406), px)
    assert torch.allclose(mean_colour, torch.zeros(1, 3, 1, 1), atol=1e-6)
    assert adapter.colour(0.0, px)[0, 0, 0, 0] < -2


def test_eval_mode_is_restored_per_module() -> None:
    model = TinySeg()
    model.train()
    model.enc[1].eval()  # a mixed state must come back exactly
    adapter = segxai.adapt(model)
    with adapter.explaining():
        assert not any(m.training for m in model.modules())
    assert model.training and not model.enc[1].training and model.head.training


def test_from_prediction_roi_kinds() -> None:
    def fake(z: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(z.shape[0], 3, 8, 8)
        out[:, 1, 0:2, 0:2] = 5  # small blob of class 1
        out[:, 1, 4:8, 4:8] = 5  # large blob of class 1
        return out

    x = torch.rand(1, 3, 8, 8)
    t = segxai.Target.from_prediction(fake, x, 1)
    assert t.roi.sum() == 4 + 16
    big = segxai.Target.from_prediction(fake, x, 1, roi="largest_component")
    assert big.roi.sum() == 16 and big.roi[0, 5, 5] == 1
    boxed = segxai.Target.from_prediction(fake, x, 1, box=(0, 0, 3, 3))
    assert boxed.roi.sum() == 4


def test_scores() -> None:
    logits = torch.randn(2, 3, 5, 5)
    roi = torch.zeros(2, 5, 5)
    roi[:, 1:3, 1:4] = 1
    t = segxai.Target(torch.tensor([0, 2]), roi)
    expected = torch.stack([(logits[0, 0] * roi[0]).sum(), (logits[1, 2] * roi[1]).sum()])
    assert torch.allclose(t.score_from_logits(logits), expected)
    p = logits.softmax(1)
    tp = t.with_score("prob_mean")
    expected_p = torch.stack([(p[0, 0] * roi[0]).sum() / 6, (p[1, 2] * roi[1]).sum() / 6])
    assert torch.allclose(tp.score_from_logits(logits), expected_p)


def test_postprocessing() -> None:
    maps = torch.arange(100.0).view(1, 10, 10)
    assert segxai.minmax(maps).min() == 0 and segxai.minmax(maps).max() == 1
    z = segxai.zscore(maps)
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std(unbiased=False)) - 1) < 1e-5
    kept = segxai.top_p(maps, 10)
    assert int((kept > 0).sum()) == 10 and kept[0, 9, 9] == 99
    assert torch.equal(segxai.minmax(torch.ones(1, 3, 3)), torch.zeros(1, 3, 3))
    rgb = segxai.overlay(torch.rand(3, 10, 10), maps[0])
    assert rgb.shape == (10, 10, 3) and 0 <= rgb.min() and rgb.max() <= 1
