"""Incremental occlusion: the maps equal full recomputation on layers of every supported kind,
on the built-in U-Net, FCN-ResNet50 and DeepLabV3, and the fall-backs (untraceable model,
global context, hard-coded batch size, no gain) are taken and reported."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segxai
from models_for_tests import calibrated
from segxai import Target
from segxai.explainers._patches import conv_footprint, transposed_footprint

OCC = {"method": "occlusion", "fill": "black"}


def both(model: nn.Module, images: torch.Tensor, target: Target, **kw):
    """(incremental, full) explanations with the same settings."""
    inc = segxai.explain(model, images, target, incremental=True, **OCC, **kw)
    full = segxai.explain(model, images, target, incremental=False, **OCC, **kw)
    return inc, full


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    span = float(b.max() - b.min())
    assert span > 0
    return float((a - b).abs().max()) / span


# ---------------------------------------------------------------- footprints, brute force
@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1), (3, 1, 2, 2),
                                     (2, 2, 0, 1), (3, 3, 0, 1), (1, 1, 0, 1)])
def test_conv_footprint_contains_every_changed_output(k: int, s: int, p: int, d: int) -> None:
    n = 23
    w = torch.randn(1, 1, k)
    x = torch.randn(1, 1, n, dtype=torch.float64)
    base = F.conv1d(x, w.double(), stride=s, padding=p, dilation=d)[0, 0]
    m = base.shape[0]
    for t in range(0, n - 4):
        y = x.clone()
        y[..., t:t + 5] += 1.0
        out = F.conv1d(y, w.double(), stride=s, padding=p, dilation=d)[0, 0]
        changed = (out != base).nonzero().flatten().tolist()
        starts, length, in_starts, in_len = conv_footprint([t], 5, m, k, s, p, d)
        assert all(starts[0] <= c < starts[0] + length for c in changed)
        padded = F.pad(y, (p, p + in_len))  # the box's input rows, zeros outside the map
        crop = padded[..., in_starts[0] + p:in_starts[0] + p + in_len]
        local = F.conv1d(crop, w.double(), stride=s, dilation=d)[0, 0]
        torch.testing.assert_close(local, out[starts[0]:starts[0] + length])


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (4, 2, 1), (3, 1, 1)])
def test_transposed_footprint_contains_every_changed_output(k: int, s: int, p: int) -> None:
    n = 11
    w = torch.randn(1, 1, k, dtype=torch.float64)
    x = torch.randn(1, 1, n, dtype=torch.float64)
    base = F.conv_transpose1d(x, w, stride=s, padding=p)[0, 0]
    m = base.shape[0]
    for t in range(0, n - 2):
        y = x.clone()
        y[..., t:t + 3] += 1.0
        out = F.conv_transpose1d(y, w, stride=s, padding=p)[0, 0]
        changed = (out != base).nonzero().flatten().tolist()
        starts, length, first, in_len, offs = transposed_footprint([t], 3, m, k, s, p, 1)
        assert all(starts[0] <= c < starts[0] + length for c in changed)
        padded = F.pad(y, (in_len, in_len))
        crop = padded[..., first[0] + in_len:first[0] + 2 * in_len]
        local = F.conv_transpose1d(crop, w, stride=s)[0, 0]
        torch.testing.assert_close(local[offs[0]:offs[0] + length],
                                   out[starts[0]:starts[0] + length])


# ---------------------------------------------------------------- layer kinds, end to end
class Zoo(nn.Module):
    """Every supported layer kind once: strided / dilated / grouped convolutions, max pooling
    (ceil mode), average pooling, a residual addition, a transposed convolution, nearest and
    bilinear up-sampling, a skip concatenation and in-place activations."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.BatchNorm2d(8),
                                  nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.avg = nn.AvgPool2d(2)
        self.up_t = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)                                  # /2
        p = self.pool(s)                                  # /4
        p = F.hardswish(p + self.dil(p))                  # residual
        a = self.avg(p)                                   # /8
        u = F.interpolate(a, scale_factor=2, mode="nearest")      # /4
        u = self.up_t(u * torch.sigmoid(u))               # /2
        u = torch.cat([u[..., :s.shape[-2], :s.shape[-1]], s], dim=1)
        return F.interpolate(self.head(u), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


@pytest.mark.parametrize("window,stride", [(5, 3), (8, 8), (7, 5), (3, 2)])
def test_zoo_equals_full_recomputation_float64(window: int, stride: int) -> None:
    torch.manual_seed(0)
    net = calibrated(Zoo(), size=32).double()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = Target.from_box((4, 6, 20, 26), class_index=[1, 2], size=(32, 32), n=2)
    inc, full = both(net, images, target, window=window, stride=stride, batch_size=6)
    assert inc.extras["incremental"] is True and full.extras["incremental"] is False
    assert rel_diff(inc.maps, full.maps) <= 1e-9
    assert inc.extras["incremental_work"] < 1.0
    # the same forwards plus one full forward checking the first window
    assert inc.cost.forward_passes == full.cost.forward_passes + 1


def test_builtin_unet_equals_full_recomputation() -> None:
    from segxai.models import UNet, UNetConfig

    torch.manual_seed(0)
    net = calibrated(UNet(UNetConfig(depth=3, base_width=8, block="residual")), size=64)
    images = torch.rand(1, 3, 64, 64)
    target = Target.from_box((10, 12, 40, 50), class_index=2, size=(64, 64))
    inc, full = both(net, images, target, window=8, stride=4, batch_size=16)
    assert inc.extras["incremental"] is True
    # nothing global in a U-Net: whole maps only where the footprint covers the map
    assert inc.extras["incremental_full_from"].endswith("covers the whole map")
    assert 0 < inc.extras["incremental_work"] < 0.8
    assert rel_diff(inc.maps, full.maps) <= 1e-4
    exact = segxai.explain(net.double(), images.double(), target, incremental=True,
                           window=8, stride=4, **OCC)
    ref = segxai.explain(net, images.double(), target, incremental=False, window=8,
                         stride=4, **OCC)
    assert rel_diff(exact.maps, ref.maps) <= 1e-9


def _resnet_seg(name: str) -> nn.Module:
    from torchvision.models import segmentation

    torch.manual_seed(0)
    model = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=3)
    return calibrated(model, size=48, steps=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_resnet50_models_equal_full_recomputation(name: str) -> None:
    net = _resnet_seg(name)
    images = torch.rand(1, 3, 48, 48)
    target = Target.from_box((8, 8, 40, 40), class_index=1, size=(48, 48))
    inc, full = both(net, images, target, window=12, stride=12, batch_size=16)
    assert inc.extras["incremental"] is True
    # whole maps from the dilated layers on (for DeepLabV3 before the ASPP image pooling,
    # which would force them anyway; a global branch alone is tested below)
    assert inc.extras["incremental_full_from"] is not None
    assert rel_diff(inc.maps, full.maps) <= 1e-4


class GlobalBranch(nn.Module):
    """Local features plus a global-average-pooled context vector broadcast back."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.context = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        g = self.context(F.adaptive_avg_pool2d(f, 1))
        return self.head(f + g)


def test_global_pooling_branch_recomputes_fully_after_it() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 24, 24)
    target = Target.from_box((2, 2, 20, 20), class_index=[0, 2], size=(24, 24), n=2)
    inc, full = both(GlobalBranch().eval(), images, target, window=6, stride=3)
    assert inc.extras["incremental"] is True
    assert "mean" in inc.extras["incremental_full_from"]
    assert rel_diff(inc.maps, full.maps) <= 1e-4


# ---------------------------------------------------------------- fall-backs
class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.detach().cpu().numpy().std())  # leaves torch: cannot be traced
        return self.conv(x) * scale


@pytest.mark.filterwarnings("ignore:overflow encountered|invalid value encountered")
def test_untraceable_model_falls_back() -> None:
    torch.manual_seed(0)
    net = Untraceable()
    images = torch.rand(1, 3, 16, 16)
    target = Target.whole_image(1, size=(16, 16))
    with pytest.warns(RuntimeWarning, match="could not be traced|does not reproduce"):
        forced = segxai.explain(net, images, target, incremental=True, window=4, **OCC)
    auto = segxai.explain(net, images, target, window=4, **OCC)
    assert forced.extras["incremental"] is False and auto.extras["incremental"] is False
    assert "could not be traced" in auto.extras["incremental_note"] \
        or "does not reproduce" in auto.extras["incremental_note"]
    torch.testing.assert_close(forced.maps, auto.maps)


class OneConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)


class PerImageLoop(OneConv):
    """A Python loop over the batch: the trace sees one image and unrolls the loop once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        scale = torch.stack([img.abs().mean() for img in y])
        return y * scale.view(-1, 1, 1, 1)


class FlatMean(OneConv):
    """``reshape(x.shape[0], -1)``: the traced batch size 1 is replaced by the window batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * y.reshape(x.shape[0], -1).mean(1).view(-1, 1, 1, 1)


def test_batch_size_baked_into_the_trace_falls_back_or_is_replaced() -> None:
    torch.manual_seed(0)
    images = torch.rand(1, 3, 12, 12)
    target = Target.whole_image(1, size=(12, 12))
    loop = PerImageLoop().eval()
    with pytest.warns(RuntimeWarning, match="incremental recomputation failed"):
        inc = segxai.explain(loop, images, target, incremental=True, window=4, stride=2,
                             batch_size=4, **OCC)
    full = segxai.explain(loop, images, target, incremental=False, window=4, stride=2,
                          batch_size=4, **OCC)
    assert inc.extras["incremental"] is False
    torch.testing.assert_close(inc.maps, full.maps, atol=1e-5, rtol=1e-4)
    flat = FlatMean().eval()
    inc, full = both(flat, images, target, window=4, stride=2, batch_size=4)
    assert inc.extras["incremental"] is True
    assert "needs whole maps" in inc.extras["incremental_full_from"]
    assert rel_diff(inc.maps, full.maps) <= 1e-4


def test_auto_turns_off_when_the_window_covers_the_image() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    images = torch.rand(1, 3, 8, 8)
    target = Target.whole_image(1, size=(8, 8))
    auto = segxai.explain(net, images, target, window=8, **OCC)
    assert auto.extras["incremental"] is False
    assert "footprints cover" in auto.extras["incremental_note"]
    off = segxai.explain(net, images, target, window=8, incremental=False, **OCC)
    assert off.extras["incremental_note"] == "off"
    torch.testing.assert_close(auto.maps, off.maps)


def test_user_model_untouched_and_bad_option() -> None:
    torch.manual_seed(0)
    net = calibrated(Zoo(), size=32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    inplace = [m.inplace for m in net.modules() if hasattr(m, "inplace")]
    segxai.explain(net, torch.rand(1, 3, 32, 32), Target.whole_image(1, size=(32, 32)),
                   incremental=True, window=8, **OCC)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert [m.inplace for m in net.modules() if hasattr(m, "inplace")] == inplace
    with pytest.raises(ValueError, match="incremental"):
        segxai.explain(net, torch.rand(1, 3, 32, 32), Target.whole_image(1, size=(32, 32)),
                       incremental="yes", **OCC)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_incremental_on_cuda_equals_cpu() -> None:
    from segxai.models import UNet, UNetConfig

    torch.manual_seed(0)
    net = calibrated(UNet(UNetConfig(depth=2, base_width=8)), size=32)
    images = torch.rand(1, 3, 32, 32)
    target = Target.from_box((4, 4, 28, 28), class_index=1, size=(32, 32))
    cpu = segxai.explain(net, images, target, incremental=False, window=8, stride=4, **OCC)
    gpu = segxai.explain(net.cuda(), images.cuda(), target, incremental=True, window=8,
                         stride=4, **OCC)
    assert gpu.extras["incremental"] is True
    assert rel_diff(gpu.maps.cpu(), cpu.maps) <= 1e-3  # TF32 / cuDNN algorithms
