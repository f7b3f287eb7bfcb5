"""Grid Saliency: finds the context cue a model relies on (context-bias data), keeps the
request region, is deterministic and batch independent, rejects bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segxai
from segxai import Target
from segxai.data import make_context_bias
from segxai.data.synthetic import CUE_COLOURS


class CueModel(nn.Module):
    """Hand-built context-biased segmenter for the ``context-bias`` data.

    The bias class's logit everywhere is ``-3 + 120·q`` where ``q`` is the fraction of pixels
    that are cue-yellow next to a cue-blue pixel (the checkerboard cue); the background logit
    is 0 and every other class -10. So the bias class is predicted only when the cue is in
    the image: its prediction depends on one known piece of context.
    """

    def __init__(self, bias_class: int, num_classes: int = 5) -> None:
        super().__init__()
        self.bias_class = bias_class
        self.num_classes = num_classes
        self.register_buffer("yellow", torch.tensor(CUE_COLOURS[0]).view(1, 3, 1, 1))
        self.register_buffer("blue", torch.tensor(CUE_COLOURS[1]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        yel = F.relu(1 - ((x - self.yellow) ** 2).sum(1, keepdim=True) / 0.15)
        blu = F.relu(1 - ((x - self.blue) ** 2).sum(1, keepdim=True) / 0.15)
        cue = yel * F.max_pool2d(blu, 3, stride=1, padding=1)
        q = cue.mean(dim=(1, 2, 3))
        n, _, h, w = x.shape
        logits = torch.full((n, self.num_classes, h, w), -10.0, dtype=x.dtype, device=x.device)
        logits[:, 0] = 0.0
        logits[:, self.bias_class] = (-3 + 120 * q).view(-1, 1, 1)
        return logits


@pytest.fixture(scope="module")
def data():
    biased = make_context_bias(24, size=64, seed=0, bias_prob=1.0)
    unbiased = make_context_bias(24, size=64, seed=1, unbiased=True)
    return biased, unbiased


def pick(ds, want_biased: bool, k: int = 3):
    has = (ds.masks == ds.bias_class).flatten(1).any(1)
    idx = torch.nonzero(has & (ds.is_biased == want_biased)).flatten()[:k]
    assert len(idx) == k
    return idx


def test_finds_the_cue_for_biased_samples_only(data) -> None:
    biased, unbiased = data
    c = biased.bias_class
    model = CueModel(c).eval()
    ib = pick(biased, True)
    xb = biased.images[ib]
    tb = Target.from_mask(biased.masks[ib] == c, c)
    # the model does rely on the cue: the class is predicted with it and not without
    probs = model(xb).softmax(1)[:, c]
    assert float(((probs * tb.roi).sum((1, 2)) / tb.roi.sum((1, 2))).min()) > 0.5
    eb = segxai.explain(model, xb, tb, method="grid-saliency", iterations=60, lr=0.1,
                        cell_size=4)
    cue = biased.cue_masks[ib].float()
    context = biased.context_masks[ib].float()
    mass = (eb.maps * context).flatten(1).sum(1)
    on_cue = (eb.maps * cue).flatten(1).sum(1) / mass
    assert bool((on_cue > 0.6).all()), on_cue
    # the salient context is a small part of the context (the rest was removed)
    assert bool(((eb.maps * context).flatten(1).mean(1) < 0.2).all())
    # the request region is always preserved and carries no saliency
    assert float((eb.maps * tb.roi).abs().max()) == 0.0

    iu = pick(unbiased, False)
    xu = unbiased.images[iu]
    tu = Target.from_mask(unbiased.masks[iu] == c, c)
    eu = segxai.explain(model, xu, tu, method="grid-saliency", iterations=60, lr=0.1,
                        cell_size=4)
    ctx_u = unbiased.context_masks[iu].float()
    assert bool(((eu.maps * ctx_u).flatten(1).sum(1) < 0.1 * mass).all())
    assert float(eu.maps.max()) < 0.2


def test_deterministic_and_batch_independent(data) -> None:
    biased, _ = data
    c = biased.bias_class
    model = CueModel(c).eval()
    ib = pick(biased, True, 2)
    x = biased.images[ib]
    t = Target.from_mask(biased.masks[ib] == c, c)
    kw = {"iterations": 15, "cell_size": 16}
    a = segxai.explain(model, x, t, method="grid-saliency", **kw)
    b = segxai.explain(model, x, t, method="grid-saliency", **kw)
    torch.testing.assert_close(a.maps, b.maps, rtol=0, atol=0)
    one = segxai.explain(model, x[1:2], t[1], method="grid-saliency", **kw)
    torch.testing.assert_close(one.maps[0], a.maps[1], atol=1e-5, rtol=1e-4)
    assert a.maps.shape == (2, 64, 64) and a.maps.dtype == torch.float32
    assert a.cost.backward_passes == 2 * 15
    assert a.extras["grid_mask"].shape == (2, 4, 4)


def test_baselines(data) -> None:
    biased, _ = data
    c = biased.bias_class
    model = CueModel(c).eval()
    ib = pick(biased, True, 1)
    x = biased.images[ib]
    t = Target.from_mask(biased.masks[ib] == c, c)
    auto = segxai.explain(model, x, t, method="grid-saliency", iterations=2)
    assert auto.extras["baseline"][0] in (0.0, 0.25, 0.5, 0.75, 1.0)
    blur = segxai.explain(model, x, t, method="grid-saliency", iterations=2, baseline="blur")
    assert blur.extras["baseline"] == ["blur"]
    grey = segxai.explain(model, x, t, method="grid-saliency", iterations=2, baseline="0.5")
    assert grey.params["baseline"] == 0.5


def test_bad_input() -> None:
    model = CueModel(3).eval()
    x = torch.rand(1, 3, 16, 16)
    t = Target.whole_image(3, size=(16, 16))
    for kw, name in [({"cell_size": 0}, "cell_size"), ({"lam": -1.0}, "lam"),
                     ({"iterations": 0}, "iterations"), ({"lr": 0.0}, "lr"),
                     ({"baseline": "purple"}, "baseline"), ({"baseline": 2.0}, "baseline"),
                     ({"init": 1.5}, "init")]:
        with pytest.raises(ValueError, match=name):
            segxai.explain(model, x, t, method="grid-saliency", **kw)
    with pytest.raises(ValueError, match="roi"):
        Target.from_mask(torch.zeros(1, 16, 16, dtype=torch.bool), 3)


class BrightnessModel(nn.Module):
    """Class-1 logit everywhere = 20·(mean pixel value − 0.5): brighter context helps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (20 * (x.mean(dim=(1, 2, 3)) - 0.5)).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(s), s], dim=1)


def test_auto_baseline_picks_the_lowest_loss_level() -> None:
    x = torch.full((2, 3, 16, 16), 0.8)
    t = Target.from_box((4, 4, 8, 8), 1, size=(16, 16), n=2)
    e = segxai.explain(BrightnessModel(), x, t, method="grid-saliency", iterations=3)
    # at M = 0 the context becomes the baseline: only white (1.0) keeps P_1 from dropping
    assert e.extras["baseline"] == [1.0, 1.0]
    t0 = Target.from_box((4, 4, 8, 8), 0, size=(16, 16), n=2)
    dark = torch.full((2, 3, 16, 16), 0.2)
    e0 = segxai.explain(BrightnessModel(), dark, t0, method="grid-saliency", iterations=3)
    assert e0.extras["baseline"] == [0.0, 0.0]  # class 0 prefers a dark context
