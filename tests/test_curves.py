"""Deletion/insertion curves against a slow reference loop, AUC, and a perfect vs random map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from segxai import Target
from segxai.core.adapter import ModelAdapter
from segxai.evaluate import (
    auc,
    deletion_curve,
    deletion_insertion,
    gaussian_blur,
    insertion_curve,
    pixel_ranks,
    substrate_images,
)


def _tiny_model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 3, 3, padding=1))


def _reference(model: nn.Module, image: torch.Tensor, target: Target, maps: torch.Tensor,
               substrate: torch.Tensor, steps: int, kind: str, score: str,
               context_only: bool = False) -> np.ndarray:
    """One image, one pixel at a time, no batching, plain numpy ordering (maps w/o ties)."""
    h, w = maps.shape
    flat = maps.numpy().ravel()
    roi = target.roi[0].numpy().ravel() > 0
    order = [int(p) for p in np.argsort(-flat, kind="stable") if not (context_only and roi[p])]
    total = len(order)
    c = int(target.class_index[0])
    with torch.no_grad():
        clean_logits = model(image)
    clean_mask = clean_logits.argmax(1)[0] == c
    clean_sum = float((clean_logits[0, c] * target.roi[0]).sum())
    out = []
    for t in range(steps + 1):
        k = int(round(total * t / steps))
        x = image.clone() if kind == "deletion" else substrate.clone()
        if kind == "insertion" and context_only:
            for p in np.flatnonzero(roi):
                r, col = divmod(int(p), w)
                x[0, :, r, col] = image[0, :, r, col]
        src = substrate if kind == "deletion" else image
        for p in order[:k]:
            r, col = divmod(p, w)
            x[0, :, r, col] = src[0, :, r, col]
        with torch.no_grad():
            logits = model(x)
        if score == "prob_mean":
            prob = logits.softmax(1)[0, c]
            out.append(float((prob * target.roi[0]).sum() / target.roi[0].sum()))
        elif score == "logit_ratio":
            out.append(float((logits[0, c] * target.roi[0]).sum()) / abs(clean_sum))
        else:
            pred = logits.argmax(1)[0] == c
            union = int((pred | clean_mask).sum())
            out.append(int((pred & clean_mask).sum()) / union if union else 1.0)
    return np.asarray(out)


@pytest.mark.parametrize("score", ["prob_mean", "logit_ratio", "iou"])
@pytest.mark.parametrize("context_only", [False, True])
def test_curves_match_slow_reference(score: str, context_only: bool) -> None:
    model = _tiny_model()
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 8, 9, generator=gen)
    maps = torch.rand(1, 8, 9, generator=gen)
    roi = torch.zeros(1, 8, 9)
    roi[0, 2:5, 3:7] = 1
    target = Target.from_mask(roi, class_index=1)
    steps = 10
    dele, ins = deletion_insertion(model, image, target, maps, steps=steps, score=score,
                                   context_only=context_only, batch_size=4,
                                   deletion_substrate="mean", insertion_substrate="blur")
    adapter = ModelAdapter(model)
    sub_del = substrate_images(adapter, image, "mean")
    sub_ins = substrate_images(adapter, image, "blur")
    ref_d = _reference(model, image, target, maps[0], sub_del, steps, "deletion", score,
                       context_only)
    ref_i = _reference(model, image, target, maps[0], sub_ins, steps, "insertion", score,
                       context_only)
    np.testing.assert_allclose(dele.scores[0], ref_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ins.scores[0], ref_i, rtol=1e-5, atol=1e-6)
    # trapezoid AUC on [0, 1]
    np.testing.assert_allclose(dele.auc[0], np.trapezoid(ref_d, np.linspace(0, 1, steps + 1)),
                               rtol=1e-5)
    # the pair shares the clean forward: 2T + 1 images
    assert dele.forward_passes + ins.forward_passes == 2 * steps + 1


def test_single_curves_and_batch_size_invariance() -> None:
    model = _tiny_model()
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 8, 8, generator=gen)
    maps = torch.rand(2, 8, 8, generator=gen)
    target = Target.whole_image(2, size=(8, 8), n=2)
    a = deletion_curve(model, images, target, maps, steps=7, substrate="black", batch_size=1)
    b = deletion_curve(model, images, target, maps, steps=7, substrate="black", batch_size=64)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    assert a.forward_passes == 2 * 8
    ins = insertion_curve(model, images, target, maps, steps=7, substrate="noise", seed=4)
    assert ins.scores.shape == (2, 8)
    # last insertion step is the clean image, first deletion step too
    np.testing.assert_allclose(ins.scores[:, -1], a.scores[:, 0], rtol=1e-6)


def test_auc_of_constant_curve_is_the_constant() -> None:
    assert auc(np.full(101, 0.37)) == pytest.approx(0.37, abs=1e-12)
    np.testing.assert_allclose(auc(np.full((3, 11), 2.5)), 2.5)
    # a model that ignores the input gives a constant curve
    net = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.rand(1, 3, 6, 6)
    res = deletion_curve(net, x, Target.whole_image(1, size=(6, 6)), torch.rand(1, 6, 6),
                         steps=5)
    expected = float(torch.tensor([0.0, 1.0]).softmax(0)[1])
    np.testing.assert_allclose(res.auc, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="values"):
        auc([1.0])


class KeyModel(nn.Module):
    """Class 1 everywhere with logit 10 · mean(red over a few key pixels) − 5."""

    def __init__(self, key: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("key", key.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x[:, 0] * self.key).flatten(1).sum(1) / self.key.sum()
        l1 = (10 * v - 5).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(l1), l1], dim=1)


def test_perfect_explanation_beats_random_by_a_wide_margin() -> None:
    key = torch.zeros(16, 16)
    key[5:9, 6:10] = 1
    model = KeyModel(key)
    image = torch.ones(1, 3, 16, 16)
    target = Target.whole_image(1, size=(16, 16))
    perfect = key.unsqueeze(0)
    rand = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    kw = {"steps": 64, "deletion_substrate": "black", "insertion_substrate": "black"}
    pd, pi = deletion_insertion(model, image, target, perfect, **kw)
    rd, ri = deletion_insertion(model, image, target, rand, **kw)
    assert pd.auc[0] < 0.1 and pi.auc[0] > 0.9
    assert rd.auc[0] - pd.auc[0] > 0.3
    assert pi.auc[0] - ri.auc[0] > 0.3


def test_ties_are_broken_reproducibly() -> None:
    maps = torch.zeros(1, 6, 6)
    maps[0, :2] = 1.0  # 12 tied top pixels, 24 tied others
    r1 = pixel_ranks(maps, seed=7)
    r2 = pixel_ranks(maps, seed=7)
    r3 = pixel_ranks(maps, seed=8)
    assert torch.equal(r1, r2)
    assert not torch.equal(r1, r3)
    assert sorted(r1.flatten().tolist()) == list(range(36))
    assert int(r1[0, :2].max()) < 12 <= int(r1[0, 2:].min())
    excl = torch.zeros(1, 6, 6, dtype=torch.bool)
    excl[0, 0, 0] = True
    r4 = pixel_ranks(maps, exclude=excl, seed=7)
    assert int(r4[0, 0, 0]) == 36 and int(r4[0].flatten()[1:].max()) == 34


def test_context_only_never_touches_the_roi() -> None:
    # class-1 logit = 10 · mean red inside the ROI: context deletion cannot change the score
    key = torch.zeros(8, 8)
    key[2:5, 2:5] = 1
    model = KeyModel(key)
    image = torch.ones(1, 3, 8, 8)
    target = Target.from_mask(key.bool(), class_index=1)
    res = deletion_curve(model, image, target, torch.rand(1, 8, 8), steps=8, substrate="black",
                         context_only=True)
    np.testing.assert_allclose(res.scores, res.scores[:, :1].repeat(9, 1), rtol=1e-7)
    assert res.extras["perturbable_pixels"] == [64 - 9]


def test_substrates_in_pixel_space() -> None:
    adapter = ModelAdapter(nn.Conv2d(3, 2, 1), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = adapter.from_pixels(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    black = adapter.to_pixels(substrate_images(adapter, x, "black"))
    assert torch.allclose(black, torch.zeros_like(black), atol=1e-6)
    mean = adapter.to_pixels(substrate_images(adapter, x, "mean"))
    assert torch.allclose(mean[0, :, 3, 4], adapter.to_pixels(x).mean((2, 3))[0], atol=1e-6)
    fill = adapter.to_pixels(substrate_images(adapter, x, "mean", fill=(0.1, 0.2, 0.3)))
    assert torch.allclose(fill[0, :, 0, 0], torch.tensor([0.1, 0.2, 0.3]), atol=1e-6)
    noise = adapter.to_pixels(substrate_images(adapter, x, "noise", seed=1))
    assert float(noise.min()) >= -1e-6 and float(noise.max()) <= 1 + 1e-6
    blurred = gaussian_blur(adapter.to_pixels(x), kernel_size=11, sigma=5.0).numpy()
    ref = ndimage.gaussian_filter(adapter.to_pixels(x).numpy(), sigma=(0, 0, 5, 5),
                                  mode="mirror", truncate=1.0)
    np.testing.assert_allclose(blurred, ref, atol=1e-5)
    with pytest.raises(ValueError, match="substrate"):
        substrate_images(adapter, x, "sparkles")


def test_bad_inputs_raise() -> None:
    model = _tiny_model()
    x = torch.rand(1, 3, 8, 8)
    t = Target.whole_image(1, size=(8, 8))
    with pytest.raises(ValueError, match="maps"):
        deletion_curve(model, x, t, torch.rand(1, 7, 8))
    with pytest.raises(ValueError, match="steps"):
        deletion_curve(model, x, t, torch.rand(1, 8, 8), steps=0)
    with pytest.raises(ValueError, match="score"):
        deletion_curve(model, x, t, torch.rand(1, 8, 8), score="accuracy")
    with pytest.raises(ValueError, match="context-only"):
        deletion_curve(model, x, t, torch.rand(1, 8, 8), context_only=True)
