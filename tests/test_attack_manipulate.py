"""Model manipulation (Heo et al. 2019): the fooling loss falls, the original model is
untouched, the evaluation compares the two models, bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models_for_tests import calibrated
from segxai.attack.manipulate import (
    ManipulationConfig,
    _fooling_loss,
    evaluate_manipulation,
    frame_mask,
    keep_loss,
    manipulate_model,
    topk_mask,
)
from segxai.core.errors import SegxaiError
from segxai.models.unet import UNet, UNetConfig


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = calibrated(UNet(UNetConfig(depth=2, base_width=4, num_classes=3)), size=32)
    with torch.no_grad():  # logits that vary over the image, and some foreground
        net.head.weight.mul_(20.0)
        net.head.bias.copy_(torch.tensor([0.0, 0.02, -1.0]))
    return net


def test_masks() -> None:
    m = frame_mask(1, 14, 21)
    assert m[0, 0].all() and m[0, :, 0].all() and m[0, 2:12, 3:18].sum() == 0
    assert m[0, 1, 5] == 1 and m[0, 5, 2] == 1  # width ⌊14/7⌋ = 2 rows, ⌊21/7⌋ = 3 columns
    maps = torch.arange(20.0).view(1, 4, 5)
    top = topk_mask(maps, 0.1)
    assert int(top.sum()) == 2 and bool(top[0, 3, 4]) and bool(top[0, 3, 3])


def test_keep_loss_is_zero_at_the_clean_softmax_and_blind_to_a_per_pixel_shift() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    probs = logits.softmax(1)
    labels = logits.argmax(1)
    assert float(keep_loss("kl", logits, probs, labels)) == pytest.approx(0.0, abs=1e-6)
    # adding one number per pixel to every logit leaves the softmax, hence the KL, unchanged
    # (the freedom the fooling uses), while the CE to the arg-max still moves
    shifted = logits + 5.0 * torch.randn(2, 1, 6, 6, generator=g)
    assert float(keep_loss("kl", shifted, probs, labels)) == pytest.approx(0.0, abs=1e-5)
    other = logits + torch.randn(2, 4, 6, 6, generator=g)
    assert float(keep_loss("kl", other, probs, labels)) > 1e-3
    sharper = 3.0 * logits  # larger margins: the CE falls below its clean value, the KL rises
    assert float(keep_loss("ce", sharper, probs, labels)) < float(
        keep_loss("ce", logits, probs, labels))
    assert float(keep_loss("kl", sharper, probs, labels)) > 1e-3


def test_pearson_fooling_term_against_numpy() -> None:
    """The location term ``1 − r(ReLU(h), frame) + mean_frame ReLU(−h/max|h|)²`` against
    numpy's correlation coefficient on hand-made maps."""
    frame = frame_mask(1, 14, 14)
    clean = torch.zeros(1, 14, 14)
    exact = 3.0 * frame - 2.0 * (1 - frame)  # the frame after the ReLU, negative inside
    for form in ("pearson", "mse"):
        assert float(_fooling_loss("location", exact, clean, 0.1, form)[0]) == pytest.approx(
            0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 14, 14, generator=g)
    h[0] = 3.0 * frame[0]
    h[0, 0, 0] = 30.0  # a hot spot: the squared error barely sees it once it sets the scale
    frames = frame_mask(3, 14, 14)
    got = _fooling_loss("location", h, clean.expand(3, -1, -1), 0.1, "pearson")
    for i in range(3):
        relu = np.maximum(h[i].numpy().ravel(), 0.0)
        r = np.corrcoef(relu, frames[i].numpy().ravel())[0, 1]
        scaled = h[i].numpy() / np.abs(h[i].numpy()).max()
        cold = (np.maximum(-scaled, 0.0) ** 2 * frames[i].numpy()).sum() / frames[i].sum()
        assert float(got[i]) == pytest.approx(1.0 - r + float(cold), rel=1e-5)
    assert float(got[0]) > 0.1  # the hot spot costs correlation
    # a frame below 0 everywhere: the ReLU map is 0 (r = 0) and the push on the cold frame
    # pixels still passes a gradient to them
    cold_frame = (-frame - 0.5 * (1 - frame)).requires_grad_(True)
    loss = _fooling_loss("location", cold_frame, clean, 0.1, "pearson")
    assert float(loss[0].detach()) == pytest.approx(1.0 + 1.0, rel=1e-6)
    loss.sum().backward()
    assert cold_frame.grad is not None
    assert (cold_frame.grad[0][frame[0] > 0] < 0).all()  # raising a frame pixel lowers L


def test_cosine_schedule() -> None:
    cfg = ManipulationConfig(steps=11, lr=1e-3)
    assert cfg.learning_rate(0) == pytest.approx(1e-3)
    assert cfg.learning_rate(10) == pytest.approx(5e-5)
    assert cfg.learning_rate(5) == pytest.approx((1e-3 + 5e-5) / 2)
    assert ManipulationConfig(steps=11, lr_schedule="constant").learning_rate(10) == 1e-3


@pytest.mark.parametrize(("kind", "lr", "keep", "form"), [("location", 5e-3, "kl", "pearson"),
                                                          ("location", 5e-3, "kl", "mse"),
                                                          ("location", 5e-3, "ce", "pearson"),
                                                          ("topk", 5e-4, "kl", "pearson")])
def test_fooling_loss_falls_and_the_original_is_untouched(kind: str, lr: float,
                                                          keep: str, form: str) -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = manipulate_model(net, x, kind=kind, steps=40, lr=lr, lam=1.0, batch_size=4,
                           keep_loss=keep, fooling_loss=form)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert res.model is not net and not any(p.requires_grad for p in res.model.parameters())
    fool = res.history["fooling"]
    assert len(fool) == 40 and min(fool[-5:]) < 0.8 * fool[0], fool
    ev = evaluate_manipulation(net, res.model, x, res.config,
                               explainers=("seg-grad-cam", "gradient"),
                               labels=torch.zeros(4, 32, 32, dtype=torch.long))
    assert ev["images"] == 4 and len(ev["pixel_agreement"]) == 4
    assert all(0.0 <= a <= 1.0 for a in ev["pixel_agreement"])
    assert set(ev["explainers"]) == {"seg-grad-cam", "gradient"}
    assert {"miou_gt_clean", "miou_gt_fooled"} <= set(ev)
    # the original against itself: nothing moved, every pixel agrees
    same = evaluate_manipulation(net, net, x, res.config, explainers=("seg-grad-cam",))
    assert same["pixel_agreement"] == [1.0] * 4
    e = same["explainers"]["seg-grad-cam"]
    assert e["clean"] == pytest.approx(e["fooled"])


def test_bad_settings_are_refused() -> None:
    net = _net()
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(SegxaiError, match="explainer: 'occlusion'"):
        manipulate_model(net, x, explainer="occlusion", steps=1)
    with pytest.raises(SegxaiError, match="kind"):
        manipulate_model(net, x, kind="spiral", steps=1)
    with pytest.raises(SegxaiError, match="lam"):
        ManipulationConfig(lam=0).validate()
    with pytest.raises(SegxaiError, match="steps"):
        ManipulationConfig(steps=0).validate()
    with pytest.raises(SegxaiError, match="keep_loss"):
        ManipulationConfig(keep_loss="mse").validate()  # type: ignore[arg-type]
    with pytest.raises(SegxaiError, match="fooling_loss"):
        ManipulationConfig(fooling_loss="l1").validate()  # type: ignore[arg-type]
    with pytest.raises(SegxaiError, match="lr_schedule"):
        ManipulationConfig(lr_schedule="step").validate()  # type: ignore[arg-type]


def test_warmup_keep_only_steps_and_temperature() -> None:
    cfg = ManipulationConfig(steps=11, lr=1e-3, warmup_steps=4, keep_only_steps=3)
    assert cfg.learning_rate(0) == pytest.approx(1e-3 / 4)
    assert cfg.learning_rate(3) == pytest.approx(ManipulationConfig(steps=11).learning_rate(3))
    assert cfg.learning_rate(11) == pytest.approx(5e-5)  # keep-only: the schedule's last rate
    assert ManipulationConfig(steps=11, keep_only_lr=2e-4).learning_rate(12) == 2e-4
    # the tempered KL is 0 at the clean softmax of the same temperature, blind to a shift
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, generator=g)
    hot = (logits / 2.0).softmax(1)
    shifted = logits + 5.0 * torch.randn(2, 1, 6, 6, generator=g)
    assert float(keep_loss("kl", shifted, hot, logits.argmax(1), 2.0)) == pytest.approx(
        0.0, abs=1e-5)
    assert float(keep_loss("kl", logits, logits.softmax(1), logits.argmax(1), 2.0)) > 1e-3
    # the keep-only steps run after the fooling steps, with the keep term alone
    net = _net()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen: list[int] = []
    res = manipulate_model(net, x, steps=5, keep_only_steps=3, lam=1.0, batch_size=4,
                           on_step=lambda step, model: seen.append(step))
    assert seen == list(range(8))
    h = res.history
    assert len(h["keep"]) == len(h["loss"]) == 8 and len(h["fooling"]) == 5
    assert h["loss"][5:] == h["keep"][5:]
    for bad in ({"keep_only_steps": -1}, {"warmup_steps": 1.5}, {"temperature": 0},
                {"keep_only_lr": 0.0}):
        with pytest.raises(SegxaiError, match=next(iter(bad))):
            ManipulationConfig(**bad).validate()  # type: ignore[arg-type]
