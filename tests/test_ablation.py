"""Seg-Ablation-CAM: weights equal a naive loop of full forwards (DeepLabV3, U-Net with skips),
head-only recompute and its fallback, localisation on a hand-built model, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segxai
from segxai import Target
from segxai.core.adapter import ModelAdapter

MODES = [("full", {}), ("partial-spatial", {"region": "foreground"}),
         ("partial-spatial", {"region": "background"}), ("partial-magnitude", {"ratio": 0.3})]


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model.eval()


def naive(model: nn.Module, layer_name: str, images: torch.Tensor, target: Target, mode: str,
          channels: list[int], region: str = "foreground", ratio: float = 0.5,
          value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A full forward of the whole model per (image, channel); returns (weights, maps)."""
    adapter = ModelAdapter(model)
    layer = dict(model.named_modules())[layer_name]
    weights, maps = [], []
    for i in range(images.shape[0]):
        x, t = images[i:i + 1], target[i]
        store = {}
        h = layer.register_forward_hook(
            lambda m, inp, out, store=store: store.__setitem__("a", out.clone()))
        with torch.no_grad():
            y = t.score_from_logits(adapter(x))[0]
        h.remove()
        act = store["a"]
        roi = (t.roi > 0).to(act.dtype).unsqueeze(1)
        down = F.interpolate(roi, size=act.shape[-2:], mode="nearest")[0, 0]
        d = down if region == "foreground" else 1 - down
        ws = []
        for k in channels:
            def hook(m, inp, out, k=k, d=d):
                out = out.clone()
                if mode == "full":
                    out[:, k] = value
                elif mode == "partial-spatial":
                    out[:, k] = out[:, k] * (1 - d)
                else:
                    out[:, k] = out[:, k] * (1 - ratio)
                return out
            h = layer.register_forward_hook(hook)
            with torch.no_grad():
                yk = t.score_from_logits(adapter(x))[0]
            h.remove()
            ws.append((y - yk) / y.abs())
        w = torch.stack(ws)
        cam = F.relu((w.view(1, -1, 1, 1) * act[:, channels]).sum(1, keepdim=True))
        maps.append(F.interpolate(cam, size=x.shape[-2:], mode="bilinear",
                                  align_corners=False)[0, 0])
        weights.append(w)
    return torch.stack(weights), torch.stack(maps)


@pytest.fixture(scope="module")
def deeplab() -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 48, 48))
    return model.eval().double()


@pytest.mark.parametrize("mode,kw", MODES)
def test_weights_equal_naive_loop_deeplab(deeplab: nn.Module, mode: str, kw: dict) -> None:
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    target = Target.from_box((8, 8, 30, 40), class_index=2, size=(48, 48))
    chans = [3, 100, 500, 959]
    e = segxai.explain(deeplab, x, target, method="seg-ablation-cam", layer="backbone.16",
                       mode=mode, channels=",".join(map(str, chans)), batch_size=4, **kw)
    w_ref, m_ref = naive(deeplab, "backbone.16", x, target, mode, chans, **kw)
    assert float(w_ref.abs().max()) > 0
    torch.testing.assert_close(e.extras["weights"].double(), w_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(e.maps, m_ref, rtol=1e-6, atol=1e-9)
    assert e.extras["split"] == ["head-only"]
    assert e.cost.forward_passes == 1
    assert e.cost.partial_forward_passes == len(chans) + 2  # + 2 for the split check


@pytest.fixture(scope="module")
def unet() -> nn.Module:
    from segxai.models import UNet, UNetConfig

    torch.manual_seed(0)
    return randomise_bn(UNet(UNetConfig(depth=2, base_width=4, num_classes=3))).double()


@pytest.mark.parametrize("layer", ["bottleneck", "encoder.1", "bottleneck.block.body.2"])
@pytest.mark.parametrize("mode,kw", MODES)
def test_weights_equal_naive_loop_unet(unet: nn.Module, layer: str, mode: str,
                                       kw: dict) -> None:
    x = torch.rand(2, 3, 18, 18, dtype=torch.float64)  # 18 is not a multiple of 4: padding
    target = Target.from_box((3, 2, 12, 14), class_index=[1, 2], size=(18, 18), n=2)
    e = segxai.explain(unet, x, target, method="seg-ablation-cam", layer=layer, mode=mode,
                       batch_size=3, **kw)
    num = e.extras["weights"].shape[1]
    w_ref, m_ref = naive(unet, layer, x, target, mode, list(range(num)), **kw)
    torch.testing.assert_close(e.extras["weights"].double(), w_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(e.maps, m_ref, rtol=1e-6, atol=1e-9)
    assert e.extras["split"] == ["head-only", "head-only"]
    assert e.cost.forward_passes == 2


def test_default_layer_and_float32_fast_path_close_to_plain(unet: nn.Module) -> None:
    model = randomise_bn(__import__("copy").deepcopy(unet).float())
    x = torch.rand(1, 3, 16, 16)
    target = Target.whole_image(1, size=(16, 16))
    fast = segxai.explain(model, x, target, method="seg-ablation-cam")
    plain = segxai.explain(model, x, target, method="seg-ablation-cam", fold_bn=False,
                           channels_last=False)
    assert fast.extras["layer"] == "decoder.1"  # the faithful default: feeds the head
    w_f, w_p = fast.extras["weights"], plain.extras["weights"]
    assert float((w_f - w_p).abs().max()) <= 1e-3 * float(w_p.abs().max())
    scale = float(plain.maps.max() - plain.maps.min())
    assert float((fast.maps - plain.maps).abs().max()) <= 1e-3 * scale


class PerSampleEncoder(nn.Module):
    """Runs its encoder once per sample: the number of module calls depends on the batch size,
    so the forward cannot be replayed from one recorded pass."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.mid = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([self.enc(x[i:i + 1]) for i in range(x.shape[0])])
        return self.head(self.mid(feats))


def test_fallback_to_full_forward_with_warning() -> None:
    torch.manual_seed(0)
    model = PerSampleEncoder().eval().double()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)
    target = Target.whole_image(1, size=(10, 10))
    with pytest.warns(RuntimeWarning, match="could not be split"):
        e = segxai.explain(model, x, target, method="seg-ablation-cam", layer="mid",
                           mode="full", batch_size=4)
    w_ref, m_ref = naive(model, "mid", x, target, "full", list(range(6)))
    torch.testing.assert_close(e.extras["weights"].double(), w_ref, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(e.maps, m_ref, rtol=1e-6, atol=1e-9)
    assert e.extras["split"] == ["full-forward"]
    assert e.cost.forward_passes == 1 + 6


class InPlaceAfterLayer(nn.Module):
    """Modifies a pre-layer output in place after the layer (exercises the copy path)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.layer = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU())
        self.b = nn.Conv2d(5, 4, 1)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.a(x)
        z = self.layer(skip)
        skip.mul_(0.5)  # in-place on the cached frontier output
        return self.head(self.b(z) + skip)


def test_in_place_frontier_is_handled() -> None:
    torch.manual_seed(1)
    model = InPlaceAfterLayer().eval().double()
    x = torch.rand(1, 3, 9, 9, dtype=torch.float64)
    target = Target.whole_image(2, size=(9, 9))
    e = segxai.explain(model, x, target, method="seg-ablation-cam", layer="layer",
                       fold_bn=False, channels_last=False)
    w_ref, _ = naive(model, "layer", x, target, "full", list(range(5)))
    torch.testing.assert_close(e.extras["weights"].double(), w_ref, rtol=1e-6, atol=1e-9)
    assert e.extras["split"] == ["head-only"]


class RegionFeature(nn.Module):
    """Channel 0 of ``feat`` is the red channel; the class-1 logit is its global sum. Channels
    1-3 see green/blue and are ignored by the head."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.ReLU())
        with torch.no_grad():
            self.feat[0].weight.zero_()
            self.feat[0].weight[0, 0] = 1.0
            self.feat[0].weight[1, 1] = 1.0
            self.feat[0].weight[2, 2] = 1.0
            self.feat[0].weight[3, 1] = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.feat(x)
        s = a[:, 0].sum(dim=(1, 2)).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(s), s], dim=1)


def test_seg_ablation_cam_peaks_on_the_region_the_model_uses() -> None:
    x = torch.zeros(1, 3, 16, 16)
    x[:, 0, 3:6, 9:13] = 1.0  # the red region the class depends on
    x[:, 1] = 0.7  # green everywhere, seen by channels 1 and 3, ignored by the head
    target = Target.whole_image(1, size=(16, 16))
    e = segxai.explain(RegionFeature().eval(), x, target, method="seg-ablation-cam",
                       layer="feat")
    w = e.extras["weights"][0]
    assert float(w[0]) == pytest.approx(1.0)
    assert float(w[1:].abs().max()) == 0.0
    r, c = divmod(int(e.maps[0].flatten().argmax()), 16)
    assert 3 <= r < 6 and 9 <= c < 13


def test_guards_and_nonpositive_score() -> None:
    model = RegionFeature().eval()
    x = torch.zeros(1, 3, 8, 8)
    x[:, 0, 2:4, 2:4] = 1.0
    target = Target.whole_image(0, size=(8, 8))  # class-0 logit is 0 everywhere: y = 0
    t1 = Target.whole_image(1, size=(8, 8))
    abs_w = segxai.explain(model, x, t1, method="seg-ablation-cam", layer="feat")
    drop = segxai.explain(model, x, t1, method="seg-ablation-cam", layer="feat", guard="drop")
    # every pixel's class-1 logit is 4 (four red pixels): y = 64·4; ablating channel 0 drops
    # it to 0, so the raw drop is 256 and the normalised weight 1
    assert float(drop.extras["weights"][0, 0]) == pytest.approx(256.0)
    assert float(abs_w.extras["weights"][0, 0]) == pytest.approx(1.0)
    zero = segxai.explain(model, x, target, method="seg-ablation-cam", layer="feat")
    assert zero.extras["y_nonpositive"] == [True]
    assert torch.isfinite(zero.maps).all()
    prob = segxai.explain(model, x, t1, method="seg-ablation-cam", layer="feat", guard="prob")
    assert prob.params["guard"] == "prob" and prob.extras["score"] == "prob_mean"
    assert float(prob.extras["weights"][0, 0]) > 0


def test_batch_independence_mode_and_hooks_restored(unet: nn.Module) -> None:
    model = randomise_bn(__import__("copy").deepcopy(unet).float())
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 3, 16, 16)
    target = Target.whole_image([0, 1, 2], size=(16, 16), n=3)
    all_maps = segxai.explain(model, x, target, method="seg-ablation-cam").maps
    one = segxai.explain(model, x[1:2], target[1], method="seg-ablation-cam").maps
    torch.testing.assert_close(one[0], all_maps[1], atol=1e-5, rtol=1e-4)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for m in model.modules():
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks


class FlatLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.pool(x)
        return self.conv(x) + v.sum(1).view(-1, 1, 1, 1)


def test_bad_input() -> None:
    x = torch.rand(1, 3, 8, 8)
    target = Target.whole_image(1, size=(8, 8))
    model = FlatLayer().eval()
    with pytest.raises(ValueError, match="layer"):
        segxai.explain(model, x, target, method="seg-ablation-cam", layer="pool")
    with pytest.raises(ValueError, match="layer"):
        segxai.explain(model, x, target, method="seg-ablation-cam", layer="nope")
    with pytest.raises(ValueError, match="layer"):
        segxai.explain(lambda t: model(t), x, target, method="seg-ablation-cam", layer="conv")
    with pytest.raises(ValueError, match="channels"):
        segxai.explain(model, x, target, method="seg-ablation-cam", layer="conv", channels=5)
    with pytest.raises(ValueError, match="channels"):
        segxai.explain(model, x, target, method="seg-ablation-cam", layer="conv",
                       channels=[0, 7])
    with pytest.raises(ValueError, match="mode"):
        segxai.explain(model, x, target, method="seg-ablation-cam", mode="half")
    with pytest.raises(ValueError, match="ratio"):
        segxai.explain(model, x, target, method="seg-ablation-cam", ratio=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        segxai.explain(model, x, target, method="seg-ablation-cam", batch_size=0)
    with pytest.raises(ValueError, match="guard"):
        segxai.explain(model, x, target, method="seg-ablation-cam", guard="sign")
